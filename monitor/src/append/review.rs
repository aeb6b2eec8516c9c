//! Judging the changes under append-only watches, as `check` and the daemon find them: growth
//! with the verified bytes intact is an `appended` event; a rotation within the configured
//! names, whose rotated file holds the verified content, is a `rotated` event; anything else
//! stays an alert. What an event lets the baseline advance to is returned as ledger rows.
use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde_json::json;

use super::content::{digest_file, judge_file, open_regular};
use super::state::{self, AppendState, Extended};
use super::verdict::{Content, Look, Verdict, other_attributes, verdict};
use crate::baseline::entry::{Entry, FileKind};
use crate::baseline::sorted::EntriesByPath;
use crate::baseline::store::LedgerRow;
use crate::compare::{Action, Attribute, Change, Mode};
use crate::config::{Policy, Settings, Watch};
use crate::paths::parent_of;
use crate::paths::{name_of, path_text};

/// What the judge knows besides the changes.
pub struct Context<'a> {
    pub settings: &'a Settings,
    /// Where the host's `/` is: `/`, or a mounted image.
    pub root: &'a Path,
    pub mode: Mode,
    /// Baseline entries under append-only watches (the ledger applied), by path.
    pub base: &'a dyn EntriesByPath,
    /// Log paths whose entry a rotation retired: a new file there starts a new log.
    pub retired: &'a HashSet<Vec<u8>>,
    /// Recent verified (length, SHA-256) of each log, oldest first, beyond the baseline's own:
    /// a copy taken between two verifications is judged against the last one it covers.
    pub checkpoints: &'a HashMap<Vec<u8>, Vec<(u64, [u8; 32])>>,
}

#[derive(Default)]
pub struct Reviewed {
    pub changes: Vec<Change>,
    pub ledger: Vec<LedgerRow>,
}

struct Judge<'a, 'c> {
    ctx: &'a Context<'c>,
    out: Reviewed,
    /// Logs whose verified content a rotated file holds, with that file's length.
    covered: HashMap<Vec<u8>, (u64, u64)>,
    /// Logs a file under a rotated name appeared for in this set (whatever it holds): such a
    /// log did not rotate keeping nothing.
    claimed: HashSet<Vec<u8>>,
}

impl Judge<'_, '_> {
    fn watch(&self, path: &[u8]) -> Option<&Watch> {
        self.ctx
            .settings
            .watch_for(Path::new(std::ffi::OsStr::from_bytes(path)))
    }

    fn is_rotated_name(&self, path: &[u8]) -> bool {
        self.watch(path).is_some_and(|w| w.rotate.matches(name_of(path)))
    }

    /// The log a rotated name belongs to: the baseline file in the same directory with the
    /// longest name that the rotated name starts with.
    fn log_for(&self, path: &[u8]) -> Option<&Entry> {
        let (dir, name) = (parent_of(path).unwrap_or_default(), name_of(path));
        self.ctx
            .base
            .children(dir)
            .filter(|e| e.kind == FileKind::Regular)
            .filter(|e| !self.is_rotated_name(&e.path))
            .filter(|e| name.starts_with(name_of(&e.path)) && name.len() > name_of(&e.path).len())
            .max_by_key(|e| name_of(&e.path).len())
    }

    fn checkpoints(&self, log: &Entry) -> Vec<(u64, [u8; 32])> {
        let mut cps: Vec<(u64, [u8; 32])> = self.ctx.checkpoints.get(&log.path).cloned().unwrap_or_default();
        if let Some(sha) = log.sha256 {
            cps.push((log.size, sha));
        }
        cps.retain(|(len, _)| *len > 0);
        cps.sort();
        cps.dedup();
        cps
    }

    fn event(&mut self, action: Action, c: &Change, extra: Vec<(&'static str, serde_json::Value)>) {
        self.out.changes.push(c.clone().into_event(action, extra));
    }

    fn advance(&mut self, entry: &Entry, append: Option<AppendState>) {
        self.out.ledger.push(LedgerRow {
            path: entry.path.clone(),
            entry: Some(entry.clone()),
            append,
        });
    }

    fn retire(&mut self, path: &[u8]) {
        self.out.ledger.push(LedgerRow {
            path: path.to_vec(),
            entry: None,
            append: None,
        });
    }

    /// The full hash state of a file's current content, for its ledger row.
    fn full_state(&self, e: &Entry) -> Option<AppendState> {
        let fd = open_regular(self.ctx.root, &e.path)?;
        match state::full(&fd, e.size, None) {
            Ok(Extended::Intact { state, .. }) if Some(state.sha256) == e.sha256 => Some(state),
            _ => None,
        }
    }

    /// A rotated file (a moved log, a copy, a compressed one): whether it holds its log's
    /// verified content. `Some(extra)` when it does.
    fn judge_rotated(&mut self, cur: &Entry, log: &Entry) -> Option<serde_json::Value> {
        let cps = self.checkpoints(log);
        let fd = open_regular(self.ctx.root, &cur.path)?;
        let cap = self.ctx.settings.max_file_size.unwrap_or(u64::MAX);
        let (j, compressed) = judge_file(fd, &cps, cap).ok()?;
        let latest = cps.last().map_or(0, |c| c.0);
        if j.mismatch || (latest > 0 && j.verified == 0) {
            return None;
        }
        self.covered.insert(log.path.clone(), (j.verified, j.total));
        Some(json!({
            "from": path_text(&log.path).0,
            "compressed": compressed,
            "verified_bytes": j.verified,
            "unverified_bytes": j.total - j.verified,
            "lost_bytes": latest.saturating_sub(j.total),
        }))
    }

    /// A rotated file of the baseline, in `cur`'s directory, whose whole content `cur` holds
    /// (decompressed, when it is gzip): its path, and what the event says.
    fn same_as_rotated(&self, cur: &Entry) -> Option<(Vec<u8>, serde_json::Value)> {
        let dir = parent_of(&cur.path).unwrap_or_default();
        let candidates: Vec<&Entry> = self
            .ctx
            .base
            .children(dir)
            .filter(|e| e.kind == FileKind::Regular && e.path != cur.path)
            .filter(|e| e.sha256.is_some() && self.is_rotated_name(&e.path))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let fd = open_regular(self.ctx.root, &cur.path)?;
        let cap = self.ctx.settings.max_file_size.unwrap_or(u64::MAX);
        let (len, sha, compressed) = digest_file(fd, cap).ok()?;
        let src = candidates
            .into_iter()
            .filter(|e| e.size == len && e.sha256 == Some(sha))
            .min_by(|a, b| a.path.cmp(&b.path))?;
        Some((
            src.path.clone(),
            json!({
                "from": path_text(&src.path).0,
                "compressed": compressed,
                "verified_bytes": len,
                "unverified_bytes": 0,
                "lost_bytes": 0,
            }),
        ))
    }

    fn run(mut self, changes: Vec<Change>) -> Reviewed {
        let (mine, others): (Vec<Change>, Vec<Change>) =
            changes.into_iter().partition(|c| c.policy == Policy::AppendOnly);
        self.out.changes = others;
        let mine = self.unchain(mine);
        let mut deleted_used: HashSet<Vec<u8>> = HashSet::new();
        let mut pending = Vec::new();
        // 1: rotated files appearing (moved or created under a rotated name).
        for c in mine {
            let Some(cur) = c.current.clone() else {
                pending.push(c);
                continue;
            };
            let rotated_name = self.is_rotated_name(&cur.path);
            // A new rotated file, or the log moved to a rotated name (not one rotated file
            // moving on to the next name): its log kept something.
            if rotated_name {
                let claim = match (&c.action, &c.previous) {
                    (Action::Created, _) => self.log_for(&cur.path).map(|l| l.path.clone()),
                    (Action::Moved, Some(p)) if !self.is_rotated_name(&p.path) => Some(p.path.clone()),
                    _ => None,
                };
                self.claimed.extend(claim);
            }
            match c.action {
                Action::Moved if rotated_name => {
                    let prev = c.previous.clone().expect("a move has a previous state");
                    if self.is_rotated_name(&prev.path) {
                        // app.log.1 -> app.log.2: the same content under the next name.
                        if c.changes
                            .iter()
                            .all(|k| matches!(k, Attribute::Path | Attribute::Ctime))
                        {
                            self.event(
                                Action::Rotated,
                                &c,
                                vec![("rotation", json!({ "from": path_text(&prev.path).0 }))],
                            );
                            self.advance(&cur, None);
                            self.retire(&prev.path);
                        } else {
                            self.out.changes.push(c);
                        }
                    } else if let Some(extra) = self.judge_rotated(&cur, &prev) {
                        self.event(Action::Rotated, &c, vec![("rotation", extra)]);
                        self.advance(&cur, None);
                        self.retire(&prev.path);
                    } else {
                        let mut c = c;
                        c.changes.push(Attribute::Content);
                        self.out.changes.push(c);
                    }
                }
                Action::Created if rotated_name && cur.kind == FileKind::Regular => {
                    // A compressed rotation replaces a rotated file deleted in the same set.
                    let source = cur.path.strip_suffix(b".gz").map(<[u8]>::to_vec);
                    // Compressing a rotated file (delaycompress): the whole of it, exactly.
                    let rotated_source = source
                        .as_ref()
                        .and_then(|s| self.ctx.base.get(s))
                        .filter(|s| self.is_rotated_name(&s.path))
                        .cloned();
                    let from_source = rotated_source.as_ref().and_then(|src| {
                        let extra = self.judge_rotated(&cur, src).filter(|x| {
                            x["verified_bytes"] == json!(src.size) && x["unverified_bytes"] == json!(0)
                        })?;
                        Some((src.path.clone(), extra))
                    });
                    // Or a rotated file compressed after it moved on (delaycompress, between
                    // two looks): the whole of one, whatever its name was. Or the log itself.
                    let verdict = match from_source.or_else(|| self.same_as_rotated(&cur)) {
                        Some((src, extra)) => {
                            deleted_used.insert(src);
                            Some(extra)
                        }
                        None => match self.log_for(&cur.path).cloned() {
                            Some(log) => self.judge_rotated(&cur, &log),
                            None => None,
                        },
                    };
                    match verdict {
                        Some(extra) => {
                            self.event(Action::Rotated, &c, vec![("rotation", extra)]);
                            self.advance(&cur, None);
                        }
                        None => self.out.changes.push(c),
                    }
                }
                _ => pending.push(c),
            }
        }
        // 2: the logs themselves, and what else was created or deleted.
        for c in pending {
            match (&c.action, &c.previous, &c.current) {
                (Action::Deleted, Some(prev), None) => {
                    if deleted_used.contains(&prev.path) {
                        // Compressed: the rotated event stands for both.
                        self.retire(&prev.path);
                    } else if self.is_rotated_name(&prev.path) {
                        // Retention: logrotate removing its oldest file.
                        self.event(
                            Action::Deleted,
                            &c,
                            vec![("rotation", json!({ "expired": true }))],
                        );
                        self.retire(&prev.path);
                    } else if self.covered.contains_key(&prev.path) {
                        self.retire(&prev.path);
                    } else {
                        self.out.changes.push(c);
                    }
                }
                (Action::Created, None, Some(cur)) => {
                    let new_log =
                        self.ctx.retired.contains(&cur.path) || self.covered.contains_key(&cur.path);
                    if new_log && cur.kind == FileKind::Regular {
                        self.new_log(&c, cur);
                    } else {
                        self.out.changes.push(c);
                    }
                }
                (Action::Updated | Action::AttributesModified, Some(prev), Some(cur)) => {
                    self.log_change(c.clone(), prev, cur)
                }
                _ => self.out.changes.push(c),
            }
        }
        self.out.changes.sort_by(|a, b| a.path().cmp(b.path()));
        // A chain shift retires a name and fills it again (app.log.1 moves on, app.log takes
        // its place): the rows are applied in order, last one wins, so retirements go first.
        self.out.ledger.sort_by_key(|r| r.entry.is_some());
        self.out
    }

    /// A chain shift between two looks (`app.log.1` -> `app.log.2`, `app.log` -> `app.log.1`,
    /// a new `app.log`) leaves no path gone: the comparison sees each name replaced by another
    /// inode. Here a replaced name is split into the inode that left it and the one that came,
    /// and both are paired again with the paths that disappeared and appeared, by the same rule
    /// as any move (`crate::moves`). A replacement neither half of which moved stays as it was.
    fn unchain(&self, mine: Vec<Change>) -> Vec<Change> {
        let replaced = |c: &Change| {
            matches!(c.action, Action::Updated | Action::AttributesModified)
                && c.previous.is_some()
                && c.current.is_some()
                && c.changes.contains(&Attribute::Inode)
        };
        if self.ctx.mode != Mode::Full || !mine.iter().any(replaced) {
            return mine;
        }
        let mut keep = Vec::new();
        let mut gone = Vec::new();
        let mut new = Vec::new();
        let mut split: Vec<Change> = Vec::new();
        for c in mine {
            match (&c.action, &c.previous, &c.current) {
                (Action::Deleted, Some(p), None) => gone.push(p.clone()),
                (Action::Created, None, Some(n)) => new.push(n.clone()),
                (_, Some(p), Some(n)) if replaced(&c) => {
                    gone.push(p.clone());
                    new.push(n.clone());
                    split.push(c);
                }
                _ => keep.push(c),
            }
        }
        let pairing = crate::moves::pair(gone, new);
        let moved_from: HashSet<Vec<u8>> = pairing.moved.iter().map(|(o, _)| o.path.clone()).collect();
        let moved_to: HashSet<Vec<u8>> = pairing.moved.iter().map(|(_, n)| n.path.clone()).collect();
        // A replacement whose two halves both stayed unpaired is reported as before.
        let whole: Vec<Change> = split
            .into_iter()
            .filter(|c| !moved_from.contains(c.path()) && !moved_to.contains(c.path()))
            .collect();
        let whole_paths: HashSet<Vec<u8>> = whole.iter().map(|c| c.path().to_vec()).collect();
        keep.extend(whole);
        for (old, new) in pairing.moved {
            keep.push(crate::compare::moved(old, new, self.ctx.mode, Policy::AppendOnly));
        }
        let deleted = pairing
            .deleted
            .into_iter()
            .filter(|e| !whole_paths.contains(&e.path))
            .collect();
        let created = pairing
            .created
            .into_iter()
            .filter(|e| !whole_paths.contains(&e.path))
            .collect();
        let mut out = self.rebuild(keep, deleted, created);
        out.sort_by(|a, b| a.path().cmp(b.path()));
        out
    }

    fn rebuild(&self, mut keep: Vec<Change>, deleted: Vec<Entry>, created: Vec<Entry>) -> Vec<Change> {
        keep.extend(
            deleted
                .into_iter()
                .map(|e| Change::deleted(e, Policy::AppendOnly)),
        );
        keep.extend(
            created
                .into_iter()
                .map(|e| Change::created(e, Policy::AppendOnly)),
        );
        keep
    }

    /// The log copied to a rotated name (that holds its verified content), then truncated in
    /// place: a rotation; what it holds now starts the next generation.
    fn copytruncated(&mut self, c: &Change, prev: &Entry, cur: &Entry) {
        let copy_len = self.covered.get(&prev.path).map_or(0, |&(_, len)| len);
        let extra = json!({ "copytruncate": true, "lost_bytes": prev.size.saturating_sub(copy_len) });
        self.event(Action::Rotated, c, vec![("rotation", extra)]);
        let st = self.full_state(cur);
        self.advance(cur, st);
    }

    /// Whether the watch says its rotations keep no copy (`rotate_keeps_none`, logrotate
    /// `rotate 0`) and this change of a live log looks like one: it restarts empty or shorter
    /// than verified, and no file under a rotated name appeared for it. Anything else (longer,
    /// a forged rotated file, other attributes) is judged as without the setting: an alert.
    fn kept_none_allowed(&self, prev: &Entry, cur: &Entry) -> bool {
        self.watch(&cur.path).is_some_and(|w| w.rotate_keeps_none)
            && (cur.size == 0 || cur.size < prev.size)
            && !self.claimed.contains(&prev.path)
    }

    /// A rotation that kept no copy: the verified content is gone, by configuration. Reported
    /// as a `rotated` event naming what was lost (`fim.rotation.kept_none`, `lost_bytes`); what
    /// the log holds now starts the next generation.
    fn rotated_keeping_none(&mut self, c: &Change, prev: &Entry, cur: &Entry, copytruncate: bool) {
        let extra = json!({
            "kept_none": true,
            "copytruncate": copytruncate,
            "verified_bytes": 0,
            "lost_bytes": prev.size,
        });
        self.event(Action::Rotated, c, vec![("rotation", extra)]);
        let st = self.full_state(cur);
        self.advance(cur, st);
    }

    /// A new file where a rotated log was: the next generation of that log, an event.
    fn new_log(&mut self, c: &Change, cur: &Entry) {
        self.event(Action::Created, c, vec![("rotation", json!({ "new_log": true }))]);
        let st = self.full_state(cur);
        self.advance(cur, st);
    }

    /// A log (same path) that changed: appended, truncated (copytruncate?), replaced
    /// (rotated?), or otherwise changed.
    fn log_change(&mut self, c: Change, prev: &Entry, cur: &Entry) {
        let replaced = self.ctx.mode == Mode::Full && prev.ino != cur.ino;
        // A rotated log is finished: it may move, be compressed or expire, never change.
        if prev.kind != FileKind::Regular || cur.kind != FileKind::Regular || self.is_rotated_name(&cur.path)
        {
            return self.out.changes.push(c);
        }
        if replaced {
            if self.covered.contains_key(&prev.path) {
                self.new_log(&c, cur);
            } else if self.kept_none_allowed(prev, cur) {
                self.rotated_keeping_none(&c, prev, cur, false);
            } else {
                self.out.changes.push(c);
            }
            return;
        }
        let mut intact = None;
        // Read only when what was read decides: other attributes changed, or a length below
        // the verified one, decide first (`verdict`).
        let content = if cur.size < prev.size || !other_attributes(&c.changes).is_empty() {
            Content::Unsettled
        } else {
            match (prev.sha256, open_regular(self.ctx.root, &cur.path)) {
                (Some(sha), Some(fd)) => match state::full(&fd, cur.size, Some((prev.size, sha))) {
                    Ok(Extended::Intact { state, .. }) if Some(state.sha256) == cur.sha256 => {
                        intact = Some(state);
                        Content::Intact
                    }
                    Ok(Extended::Shorter) => Content::Shorter,
                    Ok(Extended::Changed) => Content::Changed,
                    // Changed again while read (the next look judges it), or unreadable.
                    _ => Content::Unsettled,
                },
                _ => Content::Unsettled,
            }
        };
        let look = Look {
            verified_len: prev.size,
            len: cur.size,
            differ: &c.changes,
            content,
            kernel_saw_shrink: false,
        };
        let covered = self.covered.contains_key(&prev.path);
        match verdict(&look) {
            Verdict::AttributesModified(_) => {
                let mut c = c;
                c.action = Action::AttributesModified;
                self.out.changes.push(c);
            }
            // A copy holds the verified content and this is still the same inode: copytruncate,
            // then new lines, whatever their length (the verified prefix is in the copy).
            Verdict::Truncated | Verdict::ContentChanged if covered => self.copytruncated(&c, prev, cur),
            Verdict::Truncated if self.kept_none_allowed(prev, cur) => {
                self.rotated_keeping_none(&c, prev, cur, true)
            }
            Verdict::Truncated => {
                let mut c = c;
                c.action = Action::Truncated;
                self.out.changes.push(c);
            }
            Verdict::Appended {
                verified_bytes,
                appended_bytes,
            } => {
                let extra = json!({ "verified_bytes": verified_bytes, "appended_bytes": appended_bytes });
                self.event(Action::Appended, &c, vec![("append", extra)]);
                self.advance(cur, intact);
            }
            Verdict::Intact => self.advance(cur, intact),
            Verdict::ContentChanged | Verdict::Unsettled => self.out.changes.push(c),
        }
    }
}

/// Judges `changes` (from a comparison) under the append-only policy.
pub fn review(ctx: &Context<'_>, changes: Vec<Change>) -> Reviewed {
    if !changes.iter().any(|c| c.policy == Policy::AppendOnly) {
        return Reviewed {
            changes,
            ledger: Vec::new(),
        };
    }
    Judge {
        ctx,
        out: Reviewed::default(),
        covered: HashMap::new(),
        claimed: HashSet::new(),
    }
    .run(changes)
}

#[cfg(test)]
mod tests;
