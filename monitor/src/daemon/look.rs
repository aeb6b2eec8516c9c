//! A look at paths: the rescan that reads what records (or a check) named, judges what it
//! found against what was last seen, and alerts. A directory that changed costs what changed
//! (`read_listings`); the writers of what a look finds are those of the records drained after
//! it (`writers_after_look`); large files go to the rehash pool (`known_large`).
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use super::handle::{Target, target};
use super::modifier::Modifier;
use super::rescan::{self, DirDiff, WHOLE};
use super::settle::{Departed, MOVE_WINDOW, SETTLE};
use super::state::Daemon;
use super::watch_index::key_of;
use crate::baseline::entry::{Entry, FileKind};
use crate::compare::{self, Change, is_under};
use crate::config::Policy;
use crate::problems::report_problems;
use crate::scan::{self, ScanItem};

impl Daemon {
    /// The large files directly in the directories of `listed` (depth 1), except those in
    /// `targets` or planned for a later look (mapped, truncated): each unchanged one with its
    /// content as last seen, so the listing does not reread it; each changed one handed to the
    /// rehash pool, with its current status (so the listing does not read it either) and
    /// returned in the second list: the listing's entry for it is replaced by the last seen.
    /// Of a directory whose names were read (`listings`), only the names to look at: the
    /// others are not read by the scan at all.
    #[allow(clippy::type_complexity, clippy::unnecessary_cast)] // stat field widths differ between architectures
    fn known_large(
        &mut self,
        listed: &[(Vec<u8>, u32)],
        listings: &HashMap<Vec<u8>, DirDiff>,
        targets: &[Vec<u8>],
        who: Option<&HashMap<Vec<u8>, Modifier>>,
    ) -> (HashMap<Vec<u8>, crate::scan::hash::KnownContent>, Vec<Vec<u8>>) {
        let dirs: Vec<&[u8]> = listed
            .iter()
            .filter(|(_, d)| *d == 1)
            .map(|(p, _)| p.as_slice())
            .collect();
        if dirs.is_empty() {
            return (HashMap::new(), Vec::new());
        }
        // A file whose writer is stuck (its barrier deferred) may block a read too: it stands
        // as last seen until its barrier passes and `blocking_due` rescans it.
        let (mut known, mut pooled) = (HashMap::new(), Vec::new());
        // O(names looked at) in a directory whose names were read, O(names) in one the scan
        // lists; never a pass over every seen path.
        let children: Vec<Vec<u8>> = dirs
            .iter()
            .flat_map(|d| match listings.get(*d) {
                Some(diff) => diff.look.clone(),
                None => self.watch.seen().children_of(d),
            })
            .collect();
        let in_dirs = || children.iter().filter_map(|p| self.watch.seen().get(p));
        for e in in_dirs() {
            let stuck = e.kind == FileKind::Regular
                && self.blocking.is_deferred(&e.path)
                && super::rules::parent_of(&e.path).is_some_and(|p| dirs.contains(&p));
            if !stuck {
                continue;
            }
            if let (Some(sha256), Ok(st)) = (e.sha256, crate::scan::guarded::lstat(&e.path)) {
                known.insert(e.path.clone(), crate::scan::hash::KnownContent::of(&st, sha256));
                pooled.push(e.path.clone());
            }
        }
        let large: Vec<Entry> = in_dirs()
            .filter(|e| !self.blocking.is_deferred(&e.path))
            .filter(|e| {
                e.kind == FileKind::Regular && e.size >= super::blocking::LARGE_FILE && e.sha256.is_some()
            })
            .filter(|e| super::rules::parent_of(&e.path).is_some_and(|p| dirs.contains(&p)))
            .filter(|e| !targets.contains(&e.path) && !self.rechecks.contains(&e.path))
            .filter(|e| self.rules.policy(&e.path) != Policy::AppendOnly)
            .cloned()
            .collect();
        for e in large {
            let Some(sha256) = e.sha256 else { continue };
            let Ok(st) = crate::scan::guarded::lstat(&e.path) else {
                continue;
            };
            let now = crate::scan::hash::KnownContent::of(&st, sha256);
            let same = now.dev == e.dev
                && now.ino == e.ino
                && now.size == e.size
                && now.mtime_ns == e.mtime_ns
                && now.ctime_ns == e.ctime_ns;
            if !same {
                let m = rescan::modifier_for(who, &e.path);
                if !self
                    .blocking
                    .rehash_later(&self.rules.settings, &e.path, now.size, m)
                {
                    continue;
                }
                pooled.push(e.path.clone());
            }
            known.insert(e.path, now);
        }
        (known, pooled)
    }

    /// Scans `targets` and alerts on every difference from what was last seen. A path first
    /// armed by this scan was looked at before it was armed: a change in between made no
    /// record, so what changed since its look (ctime or size) is looked at again, now armed
    /// (at most `ARM_LOOKS` times; after that its own records take over).
    pub(super) fn rescan(
        &mut self,
        mut targets: Vec<Target>,
        who: Option<&HashMap<Vec<u8>, Modifier>>,
    ) -> anyhow::Result<()> {
        // --- faults: a large regular file is rehashed in the pool, off the loop, so it never
        // delays the other targets' alerts; `blocking_due` judges what the pool found.
        targets.retain(|(p, depth)| {
            let path = p.as_os_str().as_bytes();
            let large = self.watch.seen().get(path).filter(|e| {
                *depth == 0
                    && e.kind == FileKind::Regular
                    && e.size >= super::blocking::LARGE_FILE
                    && self.rules.policy(path) != Policy::AppendOnly
            });
            match large {
                Some(e) => {
                    let (size, m) = (e.size, rescan::modifier_for(who, path));
                    !self.blocking.rehash_later(&self.rules.settings, path, size, m)
                }
                None => true,
            }
        });
        if targets.is_empty() {
            return Ok(());
        }
        /// Looks at a path that keeps changing while being armed: bounded, never a loop.
        const ARM_LOOKS: usize = 3;
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
                let st = crate::scan::guarded::lstat(p).ok()?;
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
        // --- faults: a directory listed again (a name changed in it) does not reread its large
        // unchanged files; a file itself named by a record, or mapped, is always rehashed.
        let (targets, listings) = self.read_listings(targets);
        let (known, pooled) = self.known_large(&listed, &listings, &target_paths, who);
        let mut scan = scan::start_at_known(&self.rules.settings, targets, known);
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
        // Looked, now drained: a change found is named by a record committed since.
        let late = self.writers_after_look(who);
        let who = late.as_ref().or(who);
        self.metrics.observe_hash_batch(
            progress.bytes.load(std::sync::atomic::Ordering::Relaxed),
            started.elapsed(),
        );
        // A large file the pool rehashes stands as last seen here; the pool's result judges it.
        for p in pooled {
            if let (Some(f), Some(seen)) = (found.get_mut(&p), self.watch.seen().get(&p)) {
                *f = seen.clone();
            }
        }
        self.judge_found(listed, &listings, target_paths, found, problems, who)
    }

    /// Judges what a rescan of `target_paths` found (`listed`: the directories whose listing
    /// was read, with their depth) against what was last seen, and alerts.
    /// `listings`: the names read of the directories that changed (`read_listings`). Returns
    /// the paths this judgement armed for the first time (see `rescan`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn judge_found(
        &mut self,
        listed: Vec<(Vec<u8>, u32)>,
        listings: &HashMap<Vec<u8>, DirDiff>,
        target_paths: Vec<Vec<u8>>,
        mut found: HashMap<Vec<u8>, Entry>,
        mut problems: Vec<crate::scan::Problem>,
        who: Option<&HashMap<Vec<u8>, Modifier>>,
    ) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut armed: Vec<Vec<u8>> = Vec::new();
        // A target stat'ed while being removed (its own record raced its parent's) was seen by
        // the stat but not by the parent's listing, which waits for the removal to finish:
        // what no longer exists now was not found.
        let vanished: Vec<&Vec<u8>> = target_paths
            .iter()
            .filter(|p| found.contains_key(*p))
            // Relative to the parent: a path of PATH_MAX bytes or more is still there.
            .filter(|p| crate::scan::guarded::gone(p))
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
            .filter(|p| crate::scan::guarded::gone(p))
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
            listings,
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
                // Not answering (a hung mount): not taken for moved.
                #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
                let left = match crate::scan::guarded::lstat(&p) {
                    Ok(st) => st.st_ino as u64 != c.ino,
                    Err(e) => e != rustix::io::Errno::TIMEDOUT,
                };
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
            let before = self.baseline().get(&old.path).cloned().unwrap_or(old);
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
    /// (no `stat`) and diffed against the index by name (`rescan::diff_listing`); only the
    /// directory, its new names and the names now of another inode are looked at, and the
    /// names it misses are all `gone` considers in it. A directory that cannot be read so is
    /// listed by the scan as before.
    fn read_listings(&mut self, targets: Vec<Target>) -> (Vec<Target>, HashMap<Vec<u8>, DirDiff>) {
        let mut out = Vec::with_capacity(targets.len());
        let mut listings = HashMap::new();
        for (path, depth) in targets {
            let dir = path.as_os_str().as_bytes();
            let started = Instant::now();
            if depth == 1
                && let Ok(names) = scan::guarded::read_names(dir)
            {
                let diff = rescan::diff_listing(self.watch.seen(), dir, &names);
                // Its cost paces its next listing for a record (`pace`).
                self.paced.listed(dir, started.elapsed(), Instant::now());
                out.extend(diff.look.iter().map(|p| target(p, 0)));
                listings.insert(dir.to_vec(), diff);
                out.push((path, 0));
            } else {
                out.push((path, depth));
            }
        }
        (out, listings)
    }

    /// The writers of the changes a look just made may have found, for the look's judgement:
    /// `who` (the writers the caller knew) with those of the records drained now, after the
    /// look. A change found by a look (a batch's rescan after its re-arms, the root check, a
    /// recheck, a settle) may be a newer writer's than the caller knew: the eBPF hooks commit
    /// the record before the change, and fanotify queues it within the changing system call,
    /// so that record is in the sensor by now. A record for a file its path still names is
    /// that file's newest writer; one for a directory, a watch root's parent or a path gone
    /// names only what has no writer yet (the first such record drained wins). The records are handled with the next batch (`InFlight`).
    /// `None` when nothing was drained.
    fn writers_after_look(
        &mut self,
        who: Option<&HashMap<Vec<u8>, Modifier>>,
    ) -> Option<HashMap<Vec<u8>, Modifier>> {
        let start = self.in_flight.records.len();
        self.watch.sensor_mut().drain(&mut self.in_flight.records);
        let drained = &self.in_flight.records[start..];
        if drained.is_empty() {
            return None;
        }
        self.metrics.kernel_events.inc_by(drained.len() as u64);
        let mut out = who.cloned().unwrap_or_default();
        let mut fill = Vec::new();
        for r in drained {
            let m = Modifier::from_record(r);
            // fimd itself (its alert file may sit beside a root) never moved a root.
            if r.tgid != std::process::id()
                && let Some(roots) = self.watch.roots_in(&r.key)
            {
                fill.extend(roots.iter().map(|root| (root.clone(), m.clone())));
            }
            for p in self.watch.paths_of(&r.key).into_iter().flatten() {
                let is_dir = self
                    .watch
                    .seen()
                    .get(&p)
                    .is_some_and(|e| e.kind == FileKind::Directory);
                // Only while the path still names that inode: a number freed by a deletion
                // may already be another file's, whose writer did not delete this one.
                // With a deadline: a path on a mount that does not answer is not known to be it.
                #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
                let still = crate::scan::guarded::lstat(&p).is_ok_and(|st| {
                    crate::sensor::ebpf::kernel_dev(st.st_dev as u64) == r.key.dev
                        && st.st_ino as u64 == r.key.ino
                });
                if is_dir || !still {
                    fill.push((p, m.clone()));
                } else {
                    out.insert(p, m.clone());
                }
            }
        }
        for (p, m) in fill {
            out.entry(p).or_insert(m);
        }
        Some(out)
    }
}
