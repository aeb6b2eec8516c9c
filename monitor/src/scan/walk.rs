//! The walk itself: directories read relative to their parent fd on one thread pool, regular
//! files hashed in jobs of `FILES_PER_JOB`, items sent in batches of `BATCH`.
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;

use rustix::fs::{AtFlags, Mode, OFlags, openat, statat};

use crate::baseline::entry::FileKind;
use crate::config::{Settings, Watch};

use super::item::{Problem, Progress, ScanItem};
use super::{flags, guarded, hash, identity, mounts, xattr};
use crate::fstype;
use crate::paths::join;

mod files;
mod hung;
mod later;
mod reach;

/// Items travel in batches: one channel operation (and at most one wake-up) per batch.
const BATCH: usize = 256;
/// Regular files hashed by one job: few enough to spread a big directory over the cores,
/// many enough that scheduling costs little next to the hashing.
const FILES_PER_JOB: usize = 32;

thread_local! {
    /// Each hashing thread's unsent items.
    static OUTBOX: std::cell::RefCell<Vec<ScanItem>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Walks `targets` (paths under `root`, each with a depth) on `settings.threads` threads,
/// sending what it records to `tx`; returns when the walk is over and every item is sent.
pub(super) fn run(
    settings: &Settings,
    root: &Path,
    targets: &[(std::path::PathBuf, u32)],
    tx: SyncSender<Vec<ScanItem>>,
    progress: Arc<Progress>,
    abort: Arc<AtomicBool>,
    known: HashMap<Vec<u8>, hash::KnownContent>,
) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads_for(settings.threads, targets))
        .thread_name(|i| format!("fimd-hash-{i}"))
        .build();
    let walker = Walker {
        settings,
        tx,
        progress,
        abort,
        known,
        links: hash::Links::default(),
        later: later::Later::default(),
        mounts: mounts::mount_points(),
        hangable: guarded::hangable_mounts(),
    };
    match pool {
        Ok(pool) => {
            pool.scope(|s| walker.walk_all(s, root, targets));
            walker.hash_later(&pool);
            pool.broadcast(|_| walker.flush());
        }
        Err(e) => walker.subtree_problem(b"/".to_vec(), format!("cannot start hashing threads: {e}")),
    }
    walker.flush();
}

/// Hashing threads for `targets`: `configured` (`scan.threads`), but no more than the paths
/// when each is looked at alone (depth 0, as a kernel record's rescan asks): a record naming
/// two files does not start and stop eight threads (four per core).
fn threads_for(configured: usize, targets: &[(std::path::PathBuf, u32)]) -> usize {
    if targets.iter().all(|(_, depth)| *depth == 0) {
        configured.min(targets.len()).max(1)
    } else {
        configured
    }
}

struct Walker<'a> {
    settings: &'a Settings,
    tx: SyncSender<Vec<ScanItem>>,
    progress: Arc<Progress>,
    abort: Arc<AtomicBool>,
    /// Files whose content is known while their status is unchanged, by path.
    known: HashMap<Vec<u8>, hash::KnownContent>,
    /// Contents of files with several names, hashed in this scan.
    links: hash::Links,
    /// Large files set aside until the walk is over.
    later: later::Later,
    /// Mount points (`mounts`): stat'ed only with a deadline.
    mounts: std::collections::HashSet<Vec<u8>>,
    /// Mount points of filesystems that can hang (`guarded`): everything below one is asked
    /// with a deadline (`walk/hung.rs`).
    hangable: Arc<Vec<Vec<u8>>>,
}

/// A directory the walk holds open, shared by the jobs that read its children.
type DirFd = Arc<OwnedFd>;

/// A directory being listed: what each of its names is read with.
struct Listed<'s, 'a> {
    watch: &'s Watch,
    dir: &'a DirFd,
    logical: &'a [u8],
    root_dev: u64,
    /// Levels below each name still to read.
    depth: u32,
}

/// One directory entry to record, and how many levels below it to read.
struct Node<'s> {
    watch: &'s Watch,
    parent: DirFd,
    name: CString,
    /// Its host path.
    logical: Vec<u8>,
    /// The watch root's device, once known: the walk stays on it unless told otherwise.
    watch_dev: Option<u64>,
    depth: u32,
}

impl<'a> Walker<'a> {
    fn send(&self, item: ScanItem) {
        let full = OUTBOX.with_borrow_mut(|out| {
            out.push(item);
            out.len() >= BATCH
        });
        if full {
            self.flush();
        }
    }

    /// Sends this thread's unsent items.
    fn flush(&self) {
        let batch = OUTBOX.with_borrow_mut(std::mem::take);
        if !batch.is_empty() && self.tx.send(batch).is_err() {
            self.abort.store(true, Ordering::Relaxed);
        }
    }

    fn problem(&self, path: Vec<u8>, message: String) {
        self.send(ScanItem::Problem(Problem {
            path,
            message,
            subtree: false,
        }));
    }

    /// A problem that kept a whole subtree from being read.
    fn subtree_problem(&self, path: Vec<u8>, message: String) {
        self.send(ScanItem::Problem(Problem {
            path,
            message,
            subtree: true,
        }));
    }

    fn walk_all<'s>(&'s self, s: &rayon::Scope<'s>, root: &Path, targets: &[(std::path::PathBuf, u32)]) {
        let root_fd = match rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                return self.subtree_problem(b"/".to_vec(), format!("cannot open {}: {e}", root.display()));
            }
        };
        for (path, depth) in targets {
            if let Some(watch) = self.settings.watch_for(path) {
                self.walk_watch(s, &root_fd, watch, path, *depth);
            }
        }
    }

    /// Resolves the path's parent component by component, refusing symlinks.
    fn walk_watch<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        root_fd: &OwnedFd,
        watch: &'s Watch,
        path: &Path,
        depth: u32,
    ) {
        let logical = path.as_os_str().as_bytes().to_vec();
        let comps: Vec<Vec<u8>> = logical
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let Some((last, parents)) = comps.split_last() else {
            // Watching "/" itself.
            if let Some(fs) = fstype::pseudo_fs_of(root_fd) {
                return self.pseudo_watch(logical, fs);
            }
            let fd = match rustix::io::dup(root_fd) {
                Ok(fd) => fd,
                Err(e) => return self.subtree_problem(logical, format!("cannot open: {e}")),
            };
            let node = Node {
                watch,
                parent: Arc::new(fd),
                name: c".".to_owned(),
                logical,
                watch_dev: None,
                depth,
            };
            return self.visit(s, node);
        };
        let start = match rustix::io::dup(root_fd) {
            Ok(fd) => fd,
            Err(e) => return self.subtree_problem(logical, format!("cannot open: {e}")),
        };
        let (parents, last) = (parents.to_vec(), last.clone());
        // Below a mount that can hang, the lookups of the path's components are asked with a
        // deadline too.
        let resolved = match guarded::call(&self.hangable, &logical, move || {
            reach::resolve(start, &parents, last)
        }) {
            Ok(r) => r,
            Err(e) => return self.subtree_problem(logical, e.to_string()),
        };
        match resolved {
            Err(why) => self.subtree_problem(logical, why),
            Ok((_, _, Some(fs))) => self.pseudo_watch(logical, fs),
            Ok((cur, name, None)) => self.visit(
                s,
                Node {
                    watch,
                    parent: Arc::new(cur),
                    name,
                    logical,
                    watch_dev: None,
                    depth,
                },
            ),
        }
    }

    /// A watch on a pseudo-filesystem: nothing below it is read.
    fn pseudo_watch(&self, logical: Vec<u8>, fs: &str) {
        self.subtree_problem(
            logical,
            format!(
                "the watch is on a {fs} pseudo-filesystem (kernel state, not files on disk): not read; \
                 remove this [[watch]]"
            ),
        );
    }

    /// Records one directory entry; descends into directories.
    fn visit<'s>(&'s self, s: &rayon::Scope<'s>, node: Node<'s>) {
        if self.abort.load(Ordering::Relaxed) {
            return;
        }
        // A mount point is asked with a deadline: a hung mount is not entered (issue 12 §2).
        let st = if self.mounts.contains(&node.logical) {
            if guarded::mount_of(&self.hangable, &node.logical).is_some_and(guarded::is_hung) {
                return self.not_answering(node.logical);
            }
            match mounts::stat_with_deadline(node.parent.clone(), node.name.clone()) {
                Ok(st) => Ok(st),
                Err(Some(e)) => Err(e),
                Err(None) => {
                    return self.subtree_problem(node.logical, mounts::not_answering());
                }
            }
        } else if self.guarded(&node.logical) {
            return self.visit_guarded(s, node);
        } else {
            statat(
                node.parent.as_fd(),
                node.name.as_c_str(),
                AtFlags::SYMLINK_NOFOLLOW,
            )
        };
        let st = match st {
            Ok(st) => st,
            Err(rustix::io::Errno::TIMEDOUT) if self.mounts.contains(&node.logical) => return,
            // Gone (or a watch root that does not exist): not there now, so not recorded; a
            // missing watch root shows as its baseline entries being deleted.
            Err(rustix::io::Errno::NOENT) => return,
            Err(e) => return self.subtree_problem(node.logical, format!("cannot stat: {e}")),
        };
        let kind = FileKind::from_mode(st.st_mode as u32);
        match kind {
            FileKind::Regular => {
                return s.spawn(move |_| self.hash_job(node.parent, node.name, node.logical, true));
            }
            // Opened inside the job, so a directory with a million subdirectories holds
            // pending jobs, not a million descriptors.
            FileKind::Directory => return s.spawn(move |s| self.dir_job(s, node)),
            _ => {}
        }
        let Node {
            parent,
            name,
            logical,
            ..
        } = node;
        let target = match kind {
            FileKind::Symlink => match rustix::fs::readlinkat(parent.as_fd(), name.as_c_str(), Vec::new()) {
                Ok(t) => Some(t.into_bytes()),
                Err(e) => {
                    self.problem(logical.clone(), format!("cannot read link: {e}"));
                    None
                }
            },
            _ => None,
        };
        let xattrs = self.xattrs_at(&parent, &name, &logical);
        let birth = identity::birth_at(parent.as_fd(), name.as_c_str());
        self.send(ScanItem::Entry(self.entry_from(
            &st,
            logical,
            None,
            target,
            xattrs,
            None,
            (birth, None),
        )));
    }

    fn xattrs_at(&self, parent: &DirFd, name: &CStr, logical: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        xattr::read_at(parent.as_fd(), name.to_bytes()).unwrap_or_else(|e| {
            self.problem(logical.to_vec(), format!("cannot read extended attributes: {e}"));
            Vec::new()
        })
    }

    fn dir_job<'s>(&'s self, s: &rayon::Scope<'s>, node: Node<'s>) {
        if self.abort.load(Ordering::Relaxed) {
            return;
        }
        // A mount point answers a stat in time before it is opened (see `visit`).
        if self.mounts.contains(&node.logical)
            && let Err(None) = mounts::stat_with_deadline(node.parent.clone(), node.name.clone())
        {
            return self.subtree_problem(node.logical, mounts::not_answering());
        }
        if self.guarded(&node.logical) {
            return self.dir_job_guarded(s, node);
        }
        let Node {
            watch,
            parent,
            name,
            logical,
            watch_dev,
            depth,
        } = node;
        let opened = open_dir(parent.as_fd(), name.as_c_str());
        // What is recorded is what was opened, not what a stat saw a moment before.
        let (dir, st) = match opened.and_then(|fd| rustix::fs::fstat(&fd).map(|st| (fd, st))) {
            Ok(pair) => pair,
            Err(rustix::io::Errno::NOENT) => return,
            Err(e) => {
                if let Ok(st) = statat(parent.as_fd(), name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    let birth = identity::birth_at(parent.as_fd(), name.as_c_str());
                    self.send(ScanItem::Entry(self.entry_from(
                        &st,
                        logical.clone(),
                        None,
                        None,
                        Vec::new(),
                        None,
                        (birth, None),
                    )));
                }
                return self.subtree_problem(logical, format!("cannot open directory: {e}"));
            }
        };
        // A pseudo-filesystem mounted below the watch (/proc under a watch of /): neither its
        // root (whose link count follows the number of processes) nor anything in it.
        #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
        if watch_dev.is_some_and(|d| d != st.st_dev as u64) && fstype::pseudo_fs_of(&dir).is_some() {
            return;
        }
        let xattrs = xattr::read_fd(&dir).unwrap_or_else(|e| {
            self.problem(logical.clone(), format!("cannot read extended attributes: {e}"));
            Vec::new()
        });
        let flags = self.flags_of(&dir, &logical);
        let ids = (identity::birth_fd(&dir), identity::generation_fd(&dir));
        let entry = self.entry_from(&st, logical.clone(), None, None, xattrs, flags, ids);
        let dev = entry.dev;
        self.send(ScanItem::Entry(entry));
        let root_dev = watch_dev.unwrap_or(dev);
        if depth == 0 || (watch.one_filesystem && dev != root_dev) {
            return;
        }
        self.read_dir(s, watch, Arc::new(dir), logical, root_dev, depth - 1);
    }

    /// Lists a directory; its subdirectories are read `depth` levels further.
    fn read_dir<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        watch: &'s Watch,
        dir: DirFd,
        logical: Vec<u8>,
        root_dev: u64,
        depth: u32,
    ) {
        let entries = match rustix::fs::Dir::read_from(dir.as_fd()) {
            Ok(d) => d,
            Err(e) => return self.subtree_problem(logical, format!("cannot list directory: {e}")),
        };
        let mut files: Vec<(CString, Vec<u8>)> = Vec::new();
        for ent in entries {
            if self.abort.load(Ordering::Relaxed) {
                return;
            }
            let ent = match ent {
                Ok(e) => e,
                Err(e) => return self.subtree_problem(logical, format!("cannot list directory: {e}")),
            };
            let at = Listed {
                watch,
                dir: &dir,
                logical: &logical,
                root_dev,
                depth,
            };
            self.listed(s, &at, ent.file_name(), ent.file_type(), &mut files);
        }
        if !files.is_empty() {
            self.hash_files(dir, files);
        }
    }

    /// One name of `at`'s listing: regular files gathered into hashing jobs of
    /// `FILES_PER_JOB` in `files`, directories read in jobs of their own, the rest visited.
    fn listed<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        at: &Listed<'s, '_>,
        name: &CStr,
        file_type: rustix::fs::FileType,
        files: &mut Vec<(CString, Vec<u8>)>,
    ) {
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            return;
        }
        let child = join(at.logical, bytes);
        if at.watch.exclude.is_excluded(&child, bytes) || self.is_other_watch_root(at.watch, &child) {
            return;
        }
        // The listing's type saves a stat; the open descriptor is checked again anyway.
        match file_type {
            rustix::fs::FileType::RegularFile => {
                files.push((name.to_owned(), child));
                if files.len() == FILES_PER_JOB {
                    let batch = std::mem::take(files);
                    let dir = at.dir.clone();
                    s.spawn(move |_| self.hash_files(dir, batch));
                }
            }
            file_type => {
                let node = Node {
                    watch: at.watch,
                    parent: at.dir.clone(),
                    name: name.to_owned(),
                    logical: child,
                    watch_dev: Some(at.root_dev),
                    depth: at.depth,
                };
                if file_type == rustix::fs::FileType::Directory {
                    s.spawn(move |s| self.dir_job(s, node));
                } else {
                    self.visit(s, node);
                }
            }
        }
    }

    /// A nested watch (same policy, validated) walks its own subtree with its own excludes.
    fn is_other_watch_root(&self, watch: &Watch, path: &[u8]) -> bool {
        self.settings
            .watches
            .iter()
            .any(|w| w.path != watch.path && w.path.as_os_str().as_bytes() == path)
    }

    /// The inode flags of an open regular file or directory; a failure other than "not
    /// supported here" is a problem, and the flags are then not recorded.
    fn flags_of(&self, fd: impl AsFd, logical: &[u8]) -> Option<u32> {
        flags::read_fd(fd).unwrap_or_else(|e| {
            self.problem(logical.to_vec(), format!("cannot read inode flags: {e}"));
            None
        })
    }
}

/// Opens directory `name` in `parent` for listing: never through a symlink, with O_NOATIME
/// where the kernel allows it (it needs ownership or CAP_FOWNER: EPERM otherwise).
pub(super) fn open_dir(parent: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, rustix::io::Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match openat(parent, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => openat(parent, name, flags, Mode::empty()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn paths_looked_at_alone_get_no_more_threads_than_paths() {
        let t = |d: &[u32]| d.iter().map(|&d| (PathBuf::from("/w/a"), d)).collect::<Vec<_>>();
        assert_eq!(super::threads_for(8, &t(&[0, 0])), 2);
        assert_eq!(super::threads_for(8, &t(&[])), 1);
        assert_eq!(super::threads_for(1, &t(&[0, 0, 0])), 1);
        // A directory listed, or a subtree: as configured.
        assert_eq!(super::threads_for(8, &t(&[0, 1])), 8);
        assert_eq!(super::threads_for(8, &t(&[u32::MAX])), 8);
    }
}
