//! What the daemon does with the sensor's records: re-arms each inode, verifies appends to
//! logs from their checkpoint, rescans what changed (and what was moved, created or deleted
//! with it), plans later looks at memory-mapped and just-truncated files, and rescans a watch
//! root whose identity changed.
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use monitor_common::{ChangeRecord, RECORD_MMAP_WRITABLE};
use serde_json::json;

use super::appends::{Judged, Verified};
use super::modifier::Modifier;
use super::rescan::{self, WHOLE};
use super::settle::{Departed, MOVE_WINDOW, SETTLE};
use super::state::Daemon;
use super::watch_index::key_of;
use super::watch_roots;
use crate::append::verdict::{Content, Verdict};
use crate::baseline::entry::{Entry, FileKind};
use crate::compare::{self, Action, Change, is_under};
use crate::config::Policy;
use crate::problems::report_problems;
use crate::scan::names::Names;
use crate::scan::{self, ScanItem};

/// A path to rescan, with the depth to read it to (0: the path itself, 1: a directory's
/// entries, `WHOLE`: the subtree).
type Target = (PathBuf, u32);

fn target(path: &[u8], depth: u32) -> Target {
    (PathBuf::from(std::ffi::OsStr::from_bytes(path)), depth)
}

impl Daemon {
    /// Handles one batch of kernel records.
    pub fn handle(&mut self, records: &[ChangeRecord]) -> anyhow::Result<()> {
        let mut targets = Vec::new();
        let mut who: HashMap<Vec<u8>, Modifier> = HashMap::new();
        let mut appends = Vec::new();
        let mut root_who: HashMap<Vec<u8>, Modifier> = HashMap::new();
        let mut roots_touched = false;
        for r in records {
            // A change in a directory holding a watch root: the root may have been moved,
            // deleted, recreated or replaced.
            if let Some(roots) = self.watch.roots_in(&r.key).cloned() {
                // Any process may have changed that directory: fimd itself (its alert file may
                // be there) is never the one that moved a root.
                if r.tgid != std::process::id() {
                    let m = Modifier::from_record(r);
                    for root in roots {
                        root_who.insert(root, m.clone());
                    }
                }
                roots_touched = true;
                self.watch.sensor_mut().rearm(r.key)?;
            }
            // A record still in the ring for an inode no longer watched: nothing to re-arm.
            let Some(paths) = self.watch.paths_of(&r.key) else {
                continue;
            };
            // Re-arm first: a change from now on reports again (docs/sensor-design.md §5).
            self.watch.sensor_mut().rearm(r.key)?;
            let modifier = Modifier::from_record(r);
            let mut violations = None;
            let mapped = r.flags & RECORD_MMAP_WRITABLE != 0;
            for p in paths {
                let is_dir = self
                    .watch
                    .seen()
                    .get(&p)
                    .is_some_and(|e| e.kind == FileKind::Directory);
                barrier(&p, mapped);
                if self.append_verifiable(&p) {
                    let v =
                        *violations.get_or_insert_with(|| self.watch.sensor_mut().take_violations(&r.key));
                    let v = if mapped {
                        v | monitor_common::VIOLATION_MMAP
                    } else {
                        v
                    };
                    appends.push((p, v, modifier.clone()));
                    continue;
                }
                // A later look already planned now stands for this writer's change too.
                self.rechecks.restand(&p, &modifier);
                if mapped {
                    self.rechecks.mapped(&p, modifier.clone(), Instant::now());
                }
                who.insert(p.clone(), modifier.clone());
                targets.push(target(&p, u32::from(is_dir)));
            }
        }
        for (path, violations, m) in appends {
            if let Some(t) = self.verify_append(&path, violations, &m)? {
                who.insert(path, m);
                targets.push(t);
            }
        }
        self.send_alerts();
        if roots_touched {
            self.check_roots(Some(&root_who))?;
        }
        if targets.is_empty() {
            return Ok(());
        }
        self.rescan(targets, Some(&who))?;
        // A file found empty was most likely just truncated (`>`, O_TRUNC) with its write
        // still to land; on an empty file the barrier takes no lock, so look once more.
        let now = Instant::now();
        for (path, m) in who {
            let empty = self
                .watch
                .seen()
                .get(&path)
                .is_some_and(|e| e.kind == FileKind::Regular && e.size == 0);
            if empty {
                self.rechecks.found_empty(path, m, now);
            }
        }
        Ok(())
    }

    /// Rehashes the files whose next planned look is due.
    pub fn recheck_due(&mut self) -> anyhow::Result<()> {
        let due = self.rechecks.take_due(Instant::now());
        if due.is_empty() {
            return Ok(());
        }
        let mut who = HashMap::new();
        let mut targets = Vec::new();
        for r in due {
            // A ctime newer than what was seen means a newer change, and the re-armed inode
            // reported it: its own record rescans it and names its writer, not this look.
            #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
            let ctime = crate::scan::long_paths::lstat(&r.path)
                .map(|st| st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64);
            if ctime.is_ok_and(|c| self.watch.seen().get(&r.path).is_some_and(|e| e.ctime_ns != c)) {
                continue;
            }
            targets.push(target(&r.path, 0));
            who.insert(r.path, r.who);
        }
        self.rescan(targets, Some(&who))
    }

    /// Rescans, whole, every watch root whose identity changed since the last look (moved
    /// away, deleted, recreated, replaced by a symlink): alerts on the root itself and on what
    /// is under it, then learns and arms what is there now. `who`: the writers the kernel named
    /// in the root's parent directory.
    pub fn check_roots(&mut self, who: Option<&HashMap<Vec<u8>, Modifier>>) -> anyhow::Result<()> {
        let changed = self.watch.roots_changed();
        if changed.is_empty() {
            return Ok(());
        }
        for root in &changed {
            eprintln!(
                "fimd run: watch root {} is no longer what was watched; rescanning it",
                crate::paths::path_text(root).0
            );
        }
        self.metrics.count_rescan("root");
        for root in &changed {
            // Perhaps another filesystem mounted there now.
            if watch_roots::identity(root).is_some()
                && let Err(e) = self
                    .watch
                    .sensor_mut()
                    .watch_filesystem(Path::new(std::ffi::OsStr::from_bytes(root)))
            {
                self.alerts.cannot_watch(&self.rules.settings, root, &e);
            }
        }
        let targets = changed.iter().map(|p| target(p, WHOLE)).collect();
        self.rescan(targets, who)
    }

    /// Rescans every watch whole (after a loss of kernel records).
    pub fn rescan_all(&mut self) -> anyhow::Result<()> {
        let targets = self
            .rules
            .settings
            .watches
            .iter()
            .map(|w| (w.path.clone(), WHOLE))
            .collect();
        self.rescan(targets, None)
    }

    /// Scans `targets` and alerts on every difference from what was last seen. A path first
    /// armed by this scan was looked at before it was armed: a change in between made no
    /// record, so what changed since its look (ctime or size) is looked at again, now armed
    /// (at most `ARM_LOOKS` times; after that its own records take over).
    fn rescan(
        &mut self,
        targets: Vec<Target>,
        who: Option<&HashMap<Vec<u8>, Modifier>>,
    ) -> anyhow::Result<()> {
        /// Looks at a path that keeps changing while being armed: bounded, never a loop.
        const ARM_LOOKS: usize = 3;
        let mut targets = targets;
        for look in 0..ARM_LOOKS {
            // A change found by a second look made no record: no writer is known for it, and
            // the one named for the first look must not be blamed.
            let who = if look == 0 { who } else { None };
            let armed = self.rescan_once(targets, who)?;
            targets = self.changed_since_look(&armed);
            if targets.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Of the paths armed by a scan, those whose ctime or size is no longer what was seen:
    /// files to look at again, directories to list again.
    fn changed_since_look(&self, armed: &[Vec<u8>]) -> Vec<Target> {
        armed
            .iter()
            .filter_map(|p| {
                let e = self.watch.seen().get(p)?;
                let st = crate::scan::long_paths::lstat(p).ok()?;
                #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
                let ctime = st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64;
                let changed =
                    ctime != e.ctime_ns || (e.kind == FileKind::Regular && st.st_size as u64 != e.size);
                changed.then(|| target(p, u32::from(e.kind == FileKind::Directory)))
            })
            .collect()
    }

    /// One rescan of `targets` (see `rescan`); returns the paths it armed for the first time.
    fn rescan_once(
        &mut self,
        targets: Vec<Target>,
        who: Option<&HashMap<Vec<u8>, Modifier>>,
    ) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut armed: Vec<Vec<u8>> = Vec::new();
        // Where absence means deletion: the entries of listed directories, and everything
        // below a subtree scanned whole.
        let listed: Vec<(Vec<u8>, u32)> = targets
            .iter()
            .filter(|(_, d)| *d > 0)
            .map(|(p, d)| (p.as_os_str().as_bytes().to_vec(), *d))
            .collect();
        let target_paths: Vec<Vec<u8>> = targets
            .iter()
            .map(|(p, _)| p.as_os_str().as_bytes().to_vec())
            .collect();
        let started = Instant::now();
        let (targets, listings) = self.read_listings(targets);
        let mut scan = scan::start_at(&self.rules.settings, targets);
        let progress = scan.progress.clone();
        let mut found: HashMap<Vec<u8>, Entry> = HashMap::new();
        let mut problems = Vec::new();
        while let Some(item) = scan.next_item() {
            match item {
                ScanItem::Entry(e) | ScanItem::Unstable(e) | ScanItem::MetadataOnly(e) => {
                    found.insert(e.path.clone(), e);
                }
                ScanItem::Problem(p) => problems.push(p),
            }
        }
        drop(scan);
        self.metrics.observe_hash_batch(
            progress.bytes.load(std::sync::atomic::Ordering::Relaxed),
            started.elapsed(),
        );
        // A target stat'ed while being removed (its own record raced its parent's) was seen by
        // the stat but not by the parent's listing, which waits for the removal to finish:
        // what no longer exists now was not found.
        let vanished: Vec<&Vec<u8>> = target_paths
            .iter()
            .filter(|p| found.contains_key(*p))
            // Relative to the parent: a path of PATH_MAX bytes or more is still there.
            .filter(|p| crate::scan::long_paths::lstat(p).is_err())
            .collect();
        found.retain(|p, _| !vanished.iter().any(|v| is_under(p, v)));
        // A new directory may already hold files (a directory moved in, or renamed): its whole
        // subtree is read now.
        let new_dirs = rescan::new_dirs(self.watch.seen(), &found, &listed);
        if !new_dirs.is_empty() {
            let mut scan = scan::start_at(
                &self.rules.settings,
                new_dirs.into_iter().map(|p| (p, WHOLE)).collect(),
            );
            while let Some(item) = scan.next_item() {
                match item {
                    ScanItem::Entry(e) | ScanItem::Unstable(e) | ScanItem::MetadataOnly(e) => {
                        found.entry(e.path.clone()).or_insert(e);
                    }
                    ScanItem::Problem(p) => problems.push(p),
                }
            }
        }
        // A watch root is in no watched directory's listing: its own absence is its deletion.
        let missing_roots: Vec<&[u8]> = target_paths
            .iter()
            .filter(|p| self.watch.roots().is_root(p))
            .filter(|p| !found.contains_key(*p))
            .filter(|p| crate::scan::long_paths::lstat(p).is_err())
            .map(Vec::as_slice)
            .collect();
        report_problems(&problems);
        let is_root = |p: &[u8]| {
            self.rules
                .settings
                .watches
                .iter()
                .any(|w| w.path.as_os_str().as_bytes() == p)
        };
        let mut gone = rescan::gone(
            self.watch.seen(),
            &found,
            &listings,
            &listed,
            &missing_roots,
            is_root,
        );
        let found = rescan::classify(self.watch.seen(), found, self.rules.mode);
        let mut changes: Vec<(Change, Option<Modifier>)> = Vec::new();
        for e in found.changed {
            let path = e.path.clone();
            if self
                .watch
                .seen()
                .get(&path)
                .is_some_and(|old| key_of(old) != key_of(&e))
            {
                armed.push(path.clone());
            }
            let change = self.change_against_baseline(&e, self.watch.seen().get(&path));
            self.learn(e);
            match change {
                Some(c) => changes.push((c, rescan::modifier_for(who, &path))),
                None => self.alerts.resolved(&path),
            }
        }
        let created = found.created;
        // A new path of an inode known under another name that no longer holds it: moved here
        // (its old directory's record may come later, or never for a watch root's parent).
        for c in &created {
            for p in self.watch.paths_of(&key_of(c)).unwrap_or_default() {
                let left = std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(&p))
                    .map_or(true, |md| std::os::unix::fs::MetadataExt::ino(&md) != c.ino);
                if left && !gone.contains(&p) && self.watch.seen().contains_key(&p) {
                    gone.push(p);
                }
            }
        }
        let now = Instant::now();
        let mut due: HashMap<Vec<u8>, (Instant, Option<Modifier>)> = HashMap::new();
        let mut gone: Vec<Entry> = gone
            .into_iter()
            .map(|p| {
                let old = self.watch.seen().get(&p).cloned().expect("listed from seen");
                self.watch.forget(&p);
                due.insert(p.clone(), (now + MOVE_WINDOW, rescan::modifier_for(who, &p)));
                old
            })
            .collect();
        for d in self.departures.take_all() {
            due.insert(d.entry.path.clone(), (d.at, d.who));
            gone.push(d.entry);
        }
        // The same decision as a full comparison's (`fimd check`): see `crate::moves`.
        let pairing = crate::moves::pair(gone, created);
        for (old, new) in pairing.moved {
            let who = due.remove(&old.path).and_then(|(_, m)| m);
            // Against the baseline where it has the old path, as `fimd check` reports it.
            let before = self.baseline.get(&old.path).cloned().unwrap_or(old);
            armed.push(new.path.clone());
            self.learn(new.clone());
            let policy = self.rules.policy(&new.path);
            changes.push((compare::moved(before, new, self.rules.mode, policy), who));
        }
        for entry in pairing.deleted {
            let (at, who) = due.remove(&entry.path).unwrap_or((now, None));
            self.departures.push(Departed { entry, at, who });
        }
        for c in pairing.created {
            let path = c.path.clone();
            let change = self.change_against_baseline(&c, None);
            armed.push(path.clone());
            self.learn(c);
            if let Some(change) = change {
                changes.push((change, rescan::modifier_for(who, &path)));
            }
        }
        self.judge(changes, Some(SETTLE))?;
        self.departed_due()?;
        self.send_alerts();
        Ok(armed)
    }

    /// A directory that changed costs what changed: its names and inode numbers are read
    /// (no `stat`) and only the directory, its new names and the names now of another inode
    /// are looked at (`rescan::to_look_at`); the listing tells `gone` what is still there.
    /// A directory that cannot be read so is listed by the scan as before.
    fn read_listings(&self, targets: Vec<Target>) -> (Vec<Target>, HashMap<Vec<u8>, Names>) {
        let mut out = Vec::with_capacity(targets.len());
        let mut listings = HashMap::new();
        for (path, depth) in targets {
            let dir = path.as_os_str().as_bytes();
            if depth == 1
                && let Ok(names) = scan::names::read(dir)
            {
                out.extend(
                    rescan::to_look_at(self.watch.seen(), dir, &names)
                        .iter()
                        .map(|p| target(p, 0)),
                );
                listings.insert(dir.to_vec(), names);
                out.push((path, 0));
            } else {
                out.push((path, depth));
            }
        }
        (out, listings)
    }

    /// Judges a change of an append-only file from what was verified (`AppendTracker::verify`,
    /// `append::verdict`). Returns a rescan target when the path is no longer the same regular
    /// file.
    fn verify_append(
        &mut self,
        path: &[u8],
        violations: u32,
        who: &Modifier,
    ) -> anyhow::Result<Option<Target>> {
        let rescan = Some(target(path, 0));
        let Some(base) = self.baseline.get(path).cloned() else {
            return Ok(rescan);
        };
        let verified = self.appends.verify(
            path,
            &base,
            violations,
            self.watch.sensor_mut(),
            self.rules.mode,
            &self.metrics,
        )?;
        let Verified::Judged(judged) = verified else {
            return Ok(rescan);
        };
        let Judged {
            current: cur,
            verdict,
            content,
            state,
            read,
        } = *judged;
        let alert = |action, changes| {
            Change::alert(
                action,
                Policy::AppendOnly,
                Some(base.clone()),
                Some(cur.clone()),
                changes,
            )
        };
        let mut out = None;
        match verdict {
            Verdict::AttributesModified(meta) => out = Some(alert(Action::AttributesModified, meta)),
            // Perhaps copytruncate: judged with the rest of the rotation.
            Verdict::Truncated if content == Content::Shorter && self.rules.rotates(path) => {
                self.settler.defer(path, Some(who.clone()), Instant::now());
            }
            Verdict::Truncated => out = Some(alert(Action::Truncated, vec!["size", "content"])),
            Verdict::Appended {
                verified_bytes,
                appended_bytes,
            } => {
                let c = alert(Action::Appended, vec!["size", "content"]).into_event(
                    Action::Appended,
                    vec![(
                        "append",
                        json!({
                            "verified_bytes": verified_bytes,
                            "appended_bytes": appended_bytes,
                            "read_bytes": read,
                        }),
                    )],
                );
                // The event goes out before the ledger write it does not depend on.
                self.alert(&c, Some(who));
                self.send_alerts();
                self.metrics.append_verified_bytes.inc_by(appended_bytes);
                self.advance(&cur, state)?;
            }
            Verdict::Intact => {}
            Verdict::ContentChanged => out = Some(alert(Action::Updated, vec!["content"])),
            // Not read as it is now: the general path judges it.
            Verdict::Unsettled => return Ok(rescan),
        }
        self.learn(cur);
        if let Some(c) = out {
            self.alert(&c, Some(who));
        }
        Ok(None)
    }
}

/// Waits for a write in progress: its timestamp changed before its data landed, and the
/// filesystems take the inode lock here (docs/sensor-design.md §5, measured). A file mapped
/// shared and writable is written back first: that write-protects its pages, so a store after
/// this point faults and reports again, and one before it is in what is hashed.
fn barrier(path: &[u8], mmap_writable: bool) {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    // O_PATH first: no symlink anywhere on the way, and nothing but a regular file is opened
    // for reading (a device swapped in must not be opened).
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let Ok(fd) = crate::scan::long_paths::openat2(path, OFlags::PATH | OFlags::CLOEXEC, resolve) else {
        return;
    };
    let regular = rustix::fs::fstat(&fd)
        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile);
    if !regular {
        return;
    }
    // Reopened through /proc: the same inode, read-only, never re-resolved.
    let Ok(f) = rustix::fs::open(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    if mmap_writable {
        let _ = rustix::fs::fdatasync(&f);
    }
    let _ = rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(0));
    let _ = rustix::io::pread(&f, &mut [0u8; 1], 0);
}
