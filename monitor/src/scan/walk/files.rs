//! Regular files: hashed (hash.rs) and recorded, large ones after the rest of the walk
//! (later.rs). Below a mount that can hang, `hung.rs` does the same with deadlines.
use std::ffi::CString;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use rustix::fs::{AtFlags, statat};

use super::{DirFd, Walker, later};
use crate::scan::item::ScanItem;
use crate::scan::{hash, identity, xattr};

impl Walker<'_> {
    pub(super) fn hash_files(&self, dir: DirFd, files: Vec<(CString, Vec<u8>)>) {
        for (name, logical) in files {
            self.hash_job(dir.clone(), name, logical, true);
        }
    }

    /// Hashes and records one regular file; a large one is set aside (`later`) unless
    /// `may_wait` is false.
    pub(super) fn hash_job(&self, parent: DirFd, name: CString, logical: Vec<u8>, may_wait: bool) {
        if self.abort.load(Ordering::Relaxed) {
            return;
        }
        if self.guarded(&logical) {
            return self.hash_job_guarded(parent, name, logical);
        }
        let ask = hash::Ask {
            known: self.known.get(&logical),
            links: Some(&self.links),
            later_from: if may_wait { self.later.from() } else { None },
            ..hash::Ask::new(self.settings.max_file_size, &self.abort)
        };
        match hash::hash_file_with(parent.as_fd(), name.as_c_str(), &ask) {
            Ok(h) => {
                let xattrs = xattr::read_fd(&h.fd).unwrap_or_else(|e| {
                    self.problem(logical.clone(), format!("cannot read extended attributes: {e}"));
                    Vec::new()
                });
                let flags = self.flags_of(&h.fd, &logical);
                let ids = (identity::birth_fd(&h.fd), identity::generation_fd(&h.fd));
                self.send_hashed(&h, logical, xattrs, flags, ids);
            }
            Err(hash::HashError::Open(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(hash::HashError::Aborted) => {}
            Err(hash::HashError::Later { size, dev, ino }) => self.later.push(later::LaterFile {
                size,
                id: (dev, ino),
                parent,
                name,
                logical,
            }),
            Err(e) => {
                // Record what stat says so the file is not reported deleted; content is unknown.
                if let Ok(st) = statat(parent.as_fd(), name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    let xattrs = self.xattrs_at(&parent, &name, &logical);
                    let birth = identity::birth_at(parent.as_fd(), name.as_c_str());
                    self.send(ScanItem::Entry(self.entry_from(
                        &st,
                        logical.clone(),
                        None,
                        None,
                        xattrs,
                        None,
                        (birth, None),
                    )));
                }
                self.problem(logical, e.to_string());
            }
        }
    }

    /// Records a hashed file: without a digest (over the size cap), as unstable (changed
    /// during every read), or plainly; and counts the bytes it read. The guarded path
    /// (`hung.rs`) records the same way.
    pub(super) fn send_hashed(
        &self,
        h: &hash::Hashed,
        logical: Vec<u8>,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
        flags: Option<u32>,
        ids: (Option<i64>, Option<u32>),
    ) {
        // What was read, not the size: a file over the cap was not hashed at all.
        self.progress.bytes.fetch_add(h.hashed_bytes, Ordering::Relaxed);
        let entry = self.entry_from(&h.stat, logical, h.sha256, None, xattrs, flags, ids);
        self.send(if h.sha256.is_none() {
            ScanItem::MetadataOnly(entry)
        } else if h.unstable {
            ScanItem::Unstable(entry)
        } else {
            ScanItem::Entry(entry)
        });
    }

    /// Reads the large files set aside during the walk, largest first, on every thread of
    /// `pool`; the names of one file in turn, so the first read serves the others.
    pub(super) fn hash_later(&self, pool: &rayon::ThreadPool) {
        let queue = std::sync::Mutex::new(self.later.take_groups());
        let next = || queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
        pool.scope(|s| {
            for _ in 0..pool.current_num_threads() {
                s.spawn(|_| {
                    while let Some(group) = next() {
                        for f in group {
                            self.hash_job(f.parent, f.name, f.logical, false);
                        }
                    }
                });
            }
        });
    }
}
