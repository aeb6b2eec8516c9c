//! Judging the changes under append-only watches, as `check` and the daemon find them: growth
//! with the verified bytes intact is an `appended` event; a rotation within the configured
//! names, whose rotated file holds the verified content, is a `rotated` event; anything else
//! stays an alert. What an event lets the baseline advance to is returned as ledger rows.
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::state::{self, AppendState, Extended};
use super::verdict::{Content, Look, Verdict, verdict};
use crate::baseline::entry::{Entry, FileKind};
use crate::baseline::store::LedgerRow;
use crate::compare::{Action, Change, Mode};
use crate::config::{Policy, Settings, Watch};
use crate::output::path::path_text;

/// What the judge knows besides the changes.
pub struct Context<'a> {
    pub settings: &'a Settings,
    /// Where the host's `/` is: `/`, or a mounted image.
    pub root: &'a Path,
    pub mode: Mode,
    /// Baseline entries under append-only watches (the ledger applied), by path.
    pub base: &'a HashMap<Vec<u8>, Entry>,
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

fn name_of(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

fn dir_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/",
        Some(i) => &path[..i],
        None => b"",
    }
}

/// Opens a regular file of the tree at `root` for reading: no symlink followed, nothing but a
/// regular file opened, never blocking.
pub fn open_regular(root: &Path, path: &[u8]) -> Option<OwnedFd> {
    use rustix::fs::{Mode as FMode, OFlags, ResolveFlags};
    let rel = path.strip_prefix(b"/").unwrap_or(path);
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        FMode::empty(),
    )
    .ok()?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::IN_ROOT;
    let fd = if rel.len() > crate::scan::long_paths::PATH_MAX_BYTES {
        // Too long to give whole: its directory relative to `root` one component at a time
        // (no symlink followed), then the file relative to that.
        let (parent, last) = crate::scan::long_paths::parent_at(dir, rel).ok()?;
        rustix::fs::openat2(
            &parent,
            std::ffi::OsStr::from_bytes(last),
            flags,
            FMode::empty(),
            resolve,
        )
    } else {
        rustix::fs::openat2(
            &dir,
            std::ffi::OsStr::from_bytes(rel),
            flags,
            FMode::empty(),
            resolve,
        )
    }
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile).then_some(fd)
}

/// How a file's content stands against a log's verified checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// Bytes read (decompressed, for a compressed file).
    pub total: u64,
    /// The longest checkpoint it starts with (0: none).
    pub verified: u64,
    /// It disagrees with a checkpoint it is long enough to hold.
    pub mismatch: bool,
}

/// Streams `r` against ascending `checkpoints`, reading at most `cap` bytes.
fn judge_stream(mut r: impl Read, checkpoints: &[(u64, [u8; 32])], cap: u64) -> std::io::Result<Judged> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    let mut next = 0;
    let mut out = Judged {
        total: 0,
        verified: 0,
        mismatch: false,
    };
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            // Stop exactly at the next checkpoint to compare the digest there.
            let take = match checkpoints.get(next) {
                Some(&(len, _)) if len >= total && len - total < chunk.len() as u64 => (len - total) as usize,
                _ => chunk.len(),
            };
            h.update(&chunk[..take]);
            total += take as u64;
            chunk = &chunk[take..];
            while let Some(&(len, sha)) = checkpoints.get(next) {
                if len != total {
                    break;
                }
                let d: [u8; 32] = h.clone().finalize().into();
                if d == sha {
                    out.verified = len;
                } else {
                    out.mismatch = true;
                }
                next += 1;
            }
        }
        if total > cap {
            break;
        }
    }
    // An empty checkpoint list entry at 0 never arises; a zero-length log verifies trivially.
    out.total = total;
    Ok(out)
}

fn is_compressed(fd: &OwnedFd) -> bool {
    let mut magic = [0u8; 2];
    matches!(rustix::io::pread(fd, &mut magic, 0), Ok(2)) && magic == [0x1f, 0x8b]
}

/// Judges a rotated file (plain or gzip) against a log's checkpoints.
pub fn judge_file(fd: OwnedFd, checkpoints: &[(u64, [u8; 32])], cap: u64) -> std::io::Result<(Judged, bool)> {
    let compressed = is_compressed(&fd);
    let file = std::fs::File::from(fd);
    let j = if compressed {
        judge_stream(
            flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)),
            checkpoints,
            cap,
        )?
    } else {
        judge_stream(file, checkpoints, cap)?
    };
    Ok((j, compressed))
}

/// The length and SHA-256 of a file's content (decompressed, when it is gzip), reading at most
/// `cap` bytes of it; whether it was compressed.
fn digest_file(fd: OwnedFd, cap: u64) -> std::io::Result<(u64, [u8; 32], bool)> {
    let compressed = is_compressed(&fd);
    let file = std::fs::File::from(fd);
    let mut r: Box<dyn Read> = if compressed {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(file)
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
        if total > cap {
            return Err(std::io::Error::other("larger than max_file_size"));
        }
    }
    Ok((total, h.finalize().into(), compressed))
}

struct Judge<'a, 'c> {
    ctx: &'a Context<'c>,
    out: Reviewed,
    /// Logs whose verified content a rotated file holds, with that file's length.
    covered: HashMap<Vec<u8>, (u64, u64)>,
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
        let (dir, name) = (dir_of(path), name_of(path));
        self.ctx
            .base
            .values()
            .filter(|e| e.kind == FileKind::Regular && dir_of(&e.path) == dir)
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
        let dir = dir_of(&cur.path);
        let candidates: Vec<&Entry> = self
            .ctx
            .base
            .values()
            .filter(|e| e.kind == FileKind::Regular && e.path != cur.path && dir_of(&e.path) == dir)
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
            match c.action {
                Action::Moved if rotated_name => {
                    let prev = c.previous.clone().expect("a move has a previous state");
                    if self.is_rotated_name(&prev.path) {
                        // app.log.1 -> app.log.2: the same content under the next name.
                        if c.changes.iter().all(|k| ["path", "ctime"].contains(k)) {
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
                        c.changes.push("content");
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
                && c.changes.contains(&"inode")
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
            } else {
                self.out.changes.push(c);
            }
            return;
        }
        let mut intact = None;
        // Hashed only when its length leaves the verified bytes in it.
        let content = if cur.size < prev.size {
            Content::Shorter
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
    }
    .run(changes)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn judges_streams_against_checkpoints() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
        let cp = |n: usize| (n as u64, <[u8; 32]>::from(Sha256::digest(&data[..n])));
        let cps = vec![cp(100), cp(4096), cp(30_000)];
        // A copy taken between the second and third checkpoint.
        let j = judge_stream(&data[..20_000], &cps, u64::MAX).unwrap();
        assert_eq!((j.total, j.verified, j.mismatch), (20_000, 4096, false));
        let j = judge_stream(&data[..], &cps, u64::MAX).unwrap();
        assert_eq!((j.verified, j.mismatch), (30_000, false));
        let mut bad = data.clone();
        bad[5000] ^= 1;
        let j = judge_stream(&bad[..], &cps, u64::MAX).unwrap();
        assert!(j.mismatch && j.verified == 4096);
        // Compressed: the same answer through gzip.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let j = judge_stream(flate2::read::MultiGzDecoder::new(&gz[..]), &cps, u64::MAX).unwrap();
        assert_eq!((j.total, j.verified, j.mismatch), (50_000, 30_000, false));
    }

    /// A directory of logs watched append-only with `rotate = ["app.log.*"]`, and what the
    /// baseline says of it.
    struct Logs {
        dir: tempfile::TempDir,
        settings: Settings,
        base: HashMap<Vec<u8>, Entry>,
    }

    fn entry_of(path: &Path) -> Entry {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).unwrap();
        Entry {
            path: path.as_os_str().as_bytes().to_vec(),
            kind: FileKind::Regular,
            size: m.len(),
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            ino: m.ino(),
            dev: m.dev(),
            nlink: m.nlink(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            sha256: Some(Sha256::digest(std::fs::read(path).unwrap()).into()),
            link_target: None,
            xattrs: Default::default(),
            flags: None,
            birth_ns: None,
            generation: None,
        }
    }

    impl Logs {
        fn new(log: &str) -> Logs {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("app.log"), log).unwrap();
            let text = format!(
                "state_dir = \"/nonexistent\"\n[[watch]]\npath = {:?}\npolicy = \"append-only\"\n\
                 rotate = [\"app.log.*\"]\n",
                dir.path().display().to_string()
            );
            let settings = Settings::parse(Path::new("fimd.toml"), &text).unwrap();
            let mut logs = Logs {
                dir,
                settings,
                base: HashMap::new(),
            };
            logs.base = logs.now();
            logs
        }

        fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.path().join(name)
        }

        fn now(&self) -> HashMap<Vec<u8>, Entry> {
            std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| entry_of(&e.unwrap().path()))
                .map(|e| (e.path.clone(), e))
                .collect()
        }

        /// What a comparison finds (path by path, then moves paired), judged; the ledger
        /// applied to the baseline as the store does (row by row, the last one wins).
        fn look(&mut self) -> Vec<Change> {
            let now = self.now();
            let mut changes = Vec::new();
            let (mut gone, mut new) = (Vec::new(), Vec::new());
            for (p, b) in &self.base {
                match now.get(p) {
                    Some(n) => {
                        let d = crate::compare::diff(b, n, Mode::Full);
                        if !d.is_empty() {
                            let content = d.iter().any(|k| ["content", "size"].contains(k));
                            let action = if content {
                                Action::Updated
                            } else {
                                Action::AttributesModified
                            };
                            changes.push(Change::alert(
                                action,
                                Policy::AppendOnly,
                                Some(b.clone()),
                                Some(n.clone()),
                                d,
                            ));
                        }
                    }
                    None => gone.push(b.clone()),
                }
            }
            new.extend(now.values().filter(|n| !self.base.contains_key(&n.path)).cloned());
            let pairing = crate::moves::pair(gone, new);
            for (o, n) in pairing.moved {
                changes.push(crate::compare::moved(o, n, Mode::Full, Policy::AppendOnly));
            }
            changes.extend(
                pairing
                    .deleted
                    .into_iter()
                    .map(|e| Change::deleted(e, Policy::AppendOnly)),
            );
            changes.extend(
                pairing
                    .created
                    .into_iter()
                    .map(|e| Change::created(e, Policy::AppendOnly)),
            );
            changes.sort_by(|a, b| a.path().cmp(b.path()));
            let retired = HashSet::new();
            let checkpoints = HashMap::new();
            let ctx = Context {
                settings: &self.settings,
                root: Path::new("/"),
                mode: Mode::Full,
                base: &self.base,
                retired: &retired,
                checkpoints: &checkpoints,
            };
            let out = review(&ctx, changes);
            for row in out.ledger {
                match row.entry {
                    Some(e) => self.base.insert(row.path, e),
                    None => self.base.remove(&row.path),
                };
            }
            out.changes
        }

        fn mv(&self, from: &str, to: &str) {
            std::fs::rename(self.path(from), self.path(to)).unwrap();
        }
    }

    fn alerts(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .filter(|c| c.kind == crate::compare::Kind::Alert)
            .map(|c| format!("{} {}", c.action.as_str(), String::from_utf8_lossy(c.path())))
            .collect()
    }

    #[test]
    fn a_chain_shifted_between_two_looks_is_one_rotation() {
        let mut l = Logs::new("a\n");
        l.mv("app.log", "app.log.1");
        std::fs::write(l.path("app.log"), "b\n").unwrap();
        assert_eq!(alerts(&l.look()), Vec::<String>::new(), "first generation");
        // Every name is replaced by another inode; none is gone.
        l.mv("app.log.1", "app.log.2");
        l.mv("app.log", "app.log.1");
        std::fs::write(l.path("app.log"), "c\n").unwrap();
        let seen = l.look();
        assert_eq!(alerts(&seen), Vec::<String>::new(), "second generation");
        assert_eq!(
            seen.iter().filter(|c| c.action == Action::Rotated).count(),
            2,
            "app.log -> .1 and .1 -> .2"
        );
        assert!(l.look().is_empty(), "the baseline took the chain");
        // Delaycompress after the shift: .1 -> .2, then .2 compressed, all between two looks.
        l.mv("app.log.2", "app.log.3");
        l.mv("app.log.1", "app.log.2");
        l.mv("app.log", "app.log.1");
        std::fs::write(l.path("app.log"), "d\n").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&std::fs::read(l.path("app.log.2")).unwrap())
            .unwrap();
        std::fs::write(l.path("app.log.2.gz"), gz.finish().unwrap()).unwrap();
        std::fs::remove_file(l.path("app.log.2")).unwrap();
        assert_eq!(
            alerts(&l.look()),
            Vec::<String>::new(),
            "compressed after the shift"
        );
        assert!(l.look().is_empty());
        // A rotated file whose content changed at its new name is still an alert.
        l.mv("app.log.3", "app.log.4");
        std::fs::write(l.path("app.log.4"), "A\n").unwrap();
        let seen = alerts(&l.look());
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].ends_with("app.log.4"), "{seen:?}");
    }

    #[test]
    fn copytruncate_seen_late_is_a_rotation_whatever_the_new_length() {
        for line in ["x\n", "a line at least as long as the verified length\n"] {
            let mut l = Logs::new("first\nsecond\n");
            std::fs::copy(l.path("app.log"), l.path("app.log.1")).unwrap();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(l.path("app.log"))
                .unwrap();
            f.set_len(0).unwrap();
            (&f).write_all(line.as_bytes()).unwrap();
            let seen = l.look();
            assert_eq!(alerts(&seen), Vec::<String>::new(), "{line:?}");
            let log = seen
                .iter()
                .find(|c| c.path() == l.path("app.log").as_os_str().as_bytes());
            assert_eq!(log.map(|c| c.action), Some(Action::Rotated), "{line:?}");
            assert!(l.look().is_empty(), "{line:?}");
            // No copy this time: the same rewrite is an alert.
            std::fs::write(l.path("app.log"), "y".repeat(line.len() + 10)).unwrap();
            assert_eq!(alerts(&l.look()).len(), 1, "{line:?}");
        }
    }
}
