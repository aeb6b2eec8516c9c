//! The parallel tree walk: every watched path becomes an `Entry`, every failure a `Problem`.
//!
//! Directories are opened relative to their parent with O_NOFOLLOW, so a symlink is recorded as
//! a symlink and never followed out of a watch; special files are stat'ed, never opened; a mount
//! point is recorded but not descended into unless the watch allows crossing filesystems.
pub mod deadline;
pub mod flags;
pub mod guarded;
pub use crate::fstype;
pub mod hash;
pub mod identity;
mod item;
mod links;
pub mod long_paths;
pub mod mounts;
pub mod names;
pub mod pool;
mod walk;
pub mod xattr;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};

use crate::config::Settings;

pub use crate::paths::join;
pub use item::{Problem, Progress, ScanItem};

/// A scan under way; items arrive through `next_item`, in no particular order.
pub struct Scan {
    items: Option<Receiver<Vec<ScanItem>>>,
    pending: std::vec::IntoIter<ScanItem>,
    pub progress: Arc<Progress>,
    worker: Option<std::thread::JoinHandle<()>>,
    abort: Arc<AtomicBool>,
}

impl Scan {
    /// The next item, or `None` once the walk is over. A walk that ended early (its thread
    /// panicked) ends with a whole-tree problem, so nothing unseen is taken for deleted.
    pub fn next_item(&mut self) -> Option<ScanItem> {
        loop {
            if let Some(item) = self.pending.next() {
                return Some(item);
            }
            match self.items.as_ref()?.recv() {
                Ok(batch) => self.pending = batch.into_iter(),
                Err(_) => break,
            }
        }
        let worker = self.worker.take()?;
        match worker.join() {
            Ok(()) => None,
            Err(_) => Some(ScanItem::Problem(Problem {
                path: b"/".to_vec(),
                message: "the scan stopped early (internal error); nothing unseen is reported deleted".into(),
                subtree: true,
            })),
        }
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        // Closing the channel makes every pending send fail, which stops the workers.
        self.abort.store(true, Ordering::Relaxed);
        drop(self.items.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Starts walking every watch of `settings`, reading the tree mounted at `root`.
pub fn start(settings: &Settings, root: &Path) -> Scan {
    let targets = settings
        .watches
        .iter()
        .map(|w| (w.path.clone(), u32::MAX))
        .collect();
    start_targets(settings, root, targets)
}

/// Starts scanning chosen paths of the host, each to a depth: 0 records the path alone, 1 also
/// its entries (a directory that changed), `u32::MAX` its whole subtree (a new directory).
/// Paths outside every watch, or excluded, are skipped.
pub fn start_at(settings: &Settings, targets: Vec<(std::path::PathBuf, u32)>) -> Scan {
    start_at_known(settings, targets, HashMap::new())
}

/// As `start_at`, with the content of some files known (by path): a file found with the status
/// recorded there is not read again (`hash::hash_file_known`).
pub fn start_at_known(
    settings: &Settings,
    targets: Vec<(std::path::PathBuf, u32)>,
    known: HashMap<Vec<u8>, hash::KnownContent>,
) -> Scan {
    let targets = targets.into_iter().filter(|(p, _)| settings.covers(p)).collect();
    start_targets_known(settings, Path::new("/"), targets, known)
}

fn start_targets(settings: &Settings, root: &Path, targets: Vec<(std::path::PathBuf, u32)>) -> Scan {
    start_targets_known(settings, root, targets, HashMap::new())
}

fn start_targets_known(
    settings: &Settings,
    root: &Path,
    targets: Vec<(std::path::PathBuf, u32)>,
    known: HashMap<Vec<u8>, hash::KnownContent>,
) -> Scan {
    // Bounded: at most 16 batches wait for the consumer.
    let (tx, rx) = sync_channel(16);
    let progress = Arc::new(Progress::default());
    let abort = Arc::new(AtomicBool::new(false));
    let settings = settings.clone();
    let root = root.to_owned();
    let (p, a) = (progress.clone(), abort.clone());
    let worker = std::thread::Builder::new()
        .name("fimd-scan".into())
        .spawn(move || {
            walk::run(&settings, &root, &targets, tx, p, a, known);
        })
        .expect("spawning the scan thread");
    Scan {
        items: Some(rx),
        pending: Vec::new().into_iter(),
        progress,
        worker: Some(worker),
        abort,
    }
}
