//! The walk below a mount of a filesystem that can hang (`guarded`): every call that asks the
//! filesystem (a stat, a directory's opening and listing, a file's opening and reading) runs
//! with a deadline, so a server that stops answering costs the walk one deadline, not the walk:
//! what it did not answer is a subtree problem ("not compared: ... not answering"), never
//! taken for deleted, and compared again once it answers.
use std::ffi::CString;
use std::os::fd::AsFd;
use std::sync::Arc;

use rustix::fs::{AtFlags, statat};
use rustix::io::Errno;

use super::{DirFd, Listed, Node, Walker};
use crate::baseline::entry::{FileKind, Xattrs};
use crate::scan::item::ScanItem;
use crate::scan::{flags, guarded, hash, identity, xattr};

/// A directory opened below a mount that can hang, with what is recorded of it.
struct Opened {
    dir: std::os::fd::OwnedFd,
    st: rustix::fs::Stat,
    xattrs: std::io::Result<Xattrs>,
    flags: std::io::Result<Option<u32>>,
    ids: (Option<i64>, Option<u32>),
}

impl<'a> Walker<'a> {
    /// Whether `logical` lies on a mount that can hang.
    pub(super) fn guarded(&self, logical: &[u8]) -> bool {
        guarded::mount_of(&self.hangable, logical).is_some()
    }

    /// A mount point already known not to answer: nothing below it is asked.
    pub(super) fn not_answering(&self, logical: Vec<u8>) {
        let mount = logical.clone();
        self.subtree_problem(logical, guarded::NotAnswering { mount }.to_string());
    }

    /// `visit` below a mount that can hang.
    pub(super) fn visit_guarded<'s>(&'s self, s: &rayon::Scope<'s>, node: Node<'s>) {
        let (parent, name) = (node.parent.clone(), node.name.clone());
        let st = match guarded::call(&self.hangable, &node.logical, move || {
            statat(&*parent, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
        }) {
            Err(e) => return self.subtree_problem(node.logical, e.to_string()),
            Ok(Err(Errno::NOENT)) => return,
            Ok(Err(e)) => return self.subtree_problem(node.logical, format!("cannot stat: {e}")),
            Ok(Ok(st)) => st,
        };
        #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
        let kind = FileKind::from_mode(st.st_mode as u32);
        match kind {
            FileKind::Regular => s.spawn(move |_| self.hash_job(node.parent, node.name, node.logical, true)),
            FileKind::Directory => s.spawn(move |s| self.dir_job(s, node)),
            _ => {
                let (parent, name) = (node.parent.clone(), node.name.clone());
                let read = guarded::call(&self.hangable, &node.logical, move || {
                    let target = (kind == FileKind::Symlink).then(|| {
                        rustix::fs::readlinkat(&*parent, name.as_c_str(), Vec::new()).map(|t| t.into_bytes())
                    });
                    let xattrs = xattr::read_at(&*parent, name.to_bytes());
                    let birth = identity::birth_at(&*parent, name.as_c_str());
                    (target, xattrs, birth)
                });
                let logical = node.logical;
                let (target, xattrs, birth) = match read {
                    Ok(r) => r,
                    Err(e) => return self.subtree_problem(logical, e.to_string()),
                };
                let target = match target {
                    Some(Ok(t)) => Some(t),
                    Some(Err(e)) => {
                        self.problem(logical.clone(), format!("cannot read link: {e}"));
                        None
                    }
                    None => None,
                };
                let xattrs = self.xattrs_or_problem(xattrs, &logical);
                let entry = self.entry_from(&st, logical, None, target, xattrs, None, (birth, None));
                self.send(ScanItem::Entry(entry));
            }
        }
    }

    fn xattrs_or_problem(&self, xattrs: std::io::Result<Xattrs>, logical: &[u8]) -> Xattrs {
        xattrs.unwrap_or_else(|e| {
            self.problem(logical.to_vec(), format!("cannot read extended attributes: {e}"));
            Vec::new()
        })
    }

    fn flags_or_problem(&self, flags: std::io::Result<Option<u32>>, logical: &[u8]) -> Option<u32> {
        flags.unwrap_or_else(|e| {
            self.problem(logical.to_vec(), format!("cannot read inode flags: {e}"));
            None
        })
    }

    /// `dir_job` below a mount that can hang: the opening (with what is recorded of the
    /// directory) is one call, the listing another.
    pub(super) fn dir_job_guarded<'s>(&'s self, s: &rayon::Scope<'s>, node: Node<'s>) {
        let Node {
            watch,
            parent,
            name,
            logical,
            watch_dev,
            depth,
        } = node;
        let opened = guarded::call(&self.hangable, &logical, move || -> Result<Opened, Errno> {
            let dir = super::open_dir(parent.as_fd(), name.as_c_str())?;
            let st = rustix::fs::fstat(&dir)?;
            Ok(Opened {
                xattrs: xattr::read_fd(&dir),
                flags: flags::read_fd(&dir),
                ids: (identity::birth_fd(&dir), identity::generation_fd(&dir)),
                dir,
                st,
            })
        });
        let o = match opened {
            Err(e) => return self.subtree_problem(logical, e.to_string()),
            Ok(Err(Errno::NOENT)) => return,
            Ok(Err(e)) => return self.subtree_problem(logical, format!("cannot open directory: {e}")),
            Ok(Ok(o)) => o,
        };
        let xattrs = self.xattrs_or_problem(o.xattrs, &logical);
        let flags = self.flags_or_problem(o.flags, &logical);
        let entry = self.entry_from(&o.st, logical.clone(), None, None, xattrs, flags, o.ids);
        let dev = entry.dev;
        self.send(ScanItem::Entry(entry));
        let root_dev = watch_dev.unwrap_or(dev);
        if depth == 0 || (watch.one_filesystem && dev != root_dev) {
            return;
        }
        let dir: DirFd = Arc::new(o.dir);
        let listed_dir = dir.clone();
        let listing = guarded::call(&self.hangable, &logical, move || {
            let mut names = Vec::new();
            for ent in rustix::fs::Dir::read_from(listed_dir.as_fd())? {
                let ent = ent?;
                names.push((ent.file_name().to_owned(), ent.file_type()));
            }
            Ok::<_, Errno>(names)
        });
        let names = match listing {
            Err(e) => return self.subtree_problem(logical, e.to_string()),
            Ok(Err(e)) => return self.subtree_problem(logical, format!("cannot list directory: {e}")),
            Ok(Ok(names)) => names,
        };
        let at = Listed {
            watch,
            dir: &dir,
            logical: &logical,
            root_dev,
            depth: depth - 1,
        };
        let mut files = Vec::new();
        for (name, file_type) in names {
            if self.abort.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            self.listed(s, &at, &name, file_type, &mut files);
        }
        if !files.is_empty() {
            self.hash_files(dir, files);
        }
    }

    /// `hash_job` below a mount that can hang: a stat (for the size the read's deadline
    /// grows with), then the opening and reading as one call.
    #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
    pub(super) fn hash_job_guarded(&self, parent: DirFd, name: CString, logical: Vec<u8>) {
        let (p, n) = (parent.clone(), name.clone());
        let size = match guarded::call(&self.hangable, &logical, move || {
            statat(&*p, n.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
        }) {
            Err(e) => return self.subtree_problem(logical, e.to_string()),
            Ok(Err(Errno::NOENT)) => return,
            // The read reports it.
            Ok(Err(_)) => 0,
            Ok(Ok(st)) => st.st_size.max(0) as u64,
        };
        let max = self.settings.max_file_size;
        let abort = self.abort.clone();
        let known = self.known.get(&logical).copied();
        let bytes = size.min(max.unwrap_or(u64::MAX));
        let read = guarded::call_reading(&self.hangable, &logical, bytes, move || {
            let ask = hash::Ask {
                known: known.as_ref(),
                ..hash::Ask::new(max, &abort)
            };
            let h = hash::hash_file_with(&*parent, name.as_c_str(), &ask)?;
            let xattrs = xattr::read_fd(&h.fd);
            let flags = flags::read_fd(&h.fd);
            let ids = (identity::birth_fd(&h.fd), identity::generation_fd(&h.fd));
            Ok::<_, hash::HashError>((h, xattrs, flags, ids))
        });
        match read {
            Err(e) => self.subtree_problem(logical, e.to_string()),
            Ok(Ok((h, xattrs, flags, ids))) => {
                let xattrs = self.xattrs_or_problem(xattrs, &logical);
                let flags = self.flags_or_problem(flags, &logical);
                self.send_hashed(&h, logical, xattrs, flags, ids);
            }
            Ok(Err(hash::HashError::Open(e))) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(Err(hash::HashError::Aborted)) => {}
            // Not recorded, so not taken for deleted either: compared again next time.
            Ok(Err(e)) => self.subtree_problem(logical, e.to_string()),
        }
    }
}
