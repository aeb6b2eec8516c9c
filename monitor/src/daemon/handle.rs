//! What the daemon does with the sensor's records: re-arms each inode, verifies appends to
//! logs from their checkpoint, rescans what changed (and what was moved, created or deleted
//! with it), plans later looks at memory-mapped and just-truncated files, and rescans a watch
//! root whose identity changed. A busy directory's records wait for its pace (`pace`).
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use monitor_common::{ChangeRecord, RECORD_MMAP_WRITABLE};
use serde_json::json;

use super::appends::{Judged, Verified};
use super::modifier::Modifier;
use super::rescan::WHOLE;
use super::state::Daemon;
use super::watch_roots;
use crate::append::verdict::{Content, Verdict};
use crate::baseline::entry::FileKind;
use crate::compare::{Action, Attribute, Change};
use crate::config::Policy;

/// A path to rescan, with the depth to read it to (0: the path itself, 1: a directory's
/// entries, `WHOLE`: the subtree).
pub(super) type Target = (PathBuf, u32);

pub(super) fn target(path: &[u8], depth: u32) -> Target {
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
        // Records an earlier rescan drained after its look come first: they are older.
        let late = self.in_flight.take();
        // Busy directories whose pace has passed: listed once for every record they had since.
        let now = Instant::now();
        for (dir, m) in self.paced.due(now) {
            if self.is_seen_dir(&dir) {
                targets.push(target(&dir, 1));
                who.insert(dir, m);
            }
        }
        for r in late.iter().chain(records) {
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
                // --- faults: the barrier runs off the loop with a deadline; a path whose writer
                // is stuck is handed back by `blocking_due` once its write ends.
                if !self.blocking.barrier(&p, mapped, &modifier) {
                    continue;
                }
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
                // A directory listed within its pace waits for `paced.due` (see `pace`).
                if is_dir && !self.paced.admit(&p, &modifier, now) {
                    continue;
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
        // A record kept from an earlier rescan and a new one may name the same inode.
        let mut once = std::collections::HashSet::new();
        targets.retain(|t| once.insert(t.clone()));
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

    /// Lists every directory still within its pace with records waiting (at shutdown and
    /// before a reload): what they had is judged now, not dropped.
    pub fn flush_paced(&mut self) -> anyhow::Result<()> {
        let mut who = HashMap::new();
        let mut targets = Vec::new();
        for (dir, m) in self.paced.take_all() {
            if self.is_seen_dir(&dir) {
                targets.push(target(&dir, 1));
                who.insert(dir, m);
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        self.rescan(targets, Some(&who))?;
        self.send_alerts();
        Ok(())
    }

    /// Whether `path` was last seen a directory.
    fn is_seen_dir(&self, path: &[u8]) -> bool {
        self.watch
            .seen()
            .get(path)
            .is_some_and(|e| e.kind == FileKind::Directory)
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
            let ctime = crate::scan::guarded::lstat(&r.path)
                .map(|st| st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64);
            if ctime.is_ok_and(|c| self.watch.seen().get(&r.path).is_some_and(|e| e.ctime_ns != c)) {
                continue;
            }
            targets.push(target(&r.path, 0));
            who.insert(r.path, r.who);
        }
        self.rescan(targets, Some(&who))
    }

    /// --- faults: the paths whose deferred barrier passed, handled as a record of their last
    /// writer would be, and the large files the pool rehashed, judged. Never blocks.
    pub fn blocking_due(&mut self) -> anyhow::Result<()> {
        let mut targets = Vec::new();
        let mut who = HashMap::new();
        for (path, m) in self.blocking.barriers_due(Instant::now()) {
            if self.append_verifiable(&path) {
                let key = self.watch.seen().get(&path).map(super::watch_index::key_of);
                let v = key.map_or(0, |k| self.watch.sensor_mut().take_violations(&k));
                if let Some(t) = self.verify_append(&path, v, &m)? {
                    who.insert(path, m);
                    targets.push(t);
                }
                continue;
            }
            let is_dir = self
                .watch
                .seen()
                .get(&path)
                .is_some_and(|e| e.kind == FileKind::Directory);
            targets.push(target(&path, u32::from(is_dir)));
            who.insert(path, m);
        }
        self.send_alerts();
        if !targets.is_empty() {
            self.rescan(targets, Some(&who))?;
        }
        for (path, r, m) in self.blocking.rehashed() {
            let who: HashMap<Vec<u8>, Modifier> = m.map(|m| (path.clone(), m)).into_iter().collect();
            self.judge_found(
                Vec::new(),
                &HashMap::new(),
                vec![path],
                r.found,
                r.problems,
                Some(&who),
            )?;
        }
        let maps = self.watch.sensor().maps_blocked();
        self.blocking.export(maps);
        self.metrics
            .hash_queue_length
            .set((self.rechecks.len() + self.blocking.rehashing()) as i64);
        Ok(())
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
        self.metrics
            .count_rescan(crate::telemetry::metrics::RescanReason::Root);
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
        let Some(base) = self.baseline().get(path).cloned() else {
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
            Verdict::Truncated => {
                out = Some(alert(
                    Action::Truncated,
                    vec![Attribute::Size, Attribute::Content],
                ))
            }
            Verdict::Appended {
                verified_bytes,
                appended_bytes,
            } => {
                let c = alert(Action::Appended, vec![Attribute::Size, Attribute::Content]).into_event(
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
            Verdict::ContentChanged => out = Some(alert(Action::Updated, vec![Attribute::Content])),
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
