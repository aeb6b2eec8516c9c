//! The append tracker: what is verified of each append-only log. It owns the hash state at each
//! log's verified length (so an append is verified by reading only the new bytes), recent
//! verified checkpoints (a copy taken by copytruncate is judged against the last one it holds),
//! the log paths a rotation retired, and the logs to verify whole for a while after the kernel
//! saw a write below the verified length. The decision itself is `append::verdict`.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use monitor_common::{VIOLATION_SHRINK, VIOLATION_WRITE_BELOW};

use super::watch_index::key_of;
use crate::append::content::open_regular;
use crate::append::state::{self as append_state, AppendState, Extended};
use crate::append::verdict::{Content, Look, Verdict, verdict};
use crate::baseline::entry::{Entry, FileKind};
use crate::compare::{Mode, diff};
use crate::sensor::Sensor;
use crate::telemetry::Metrics;

/// Recent verified states kept per append-only file.
pub const CHECKPOINTS: usize = 16;
/// After a write below the verified length was reported: how long to keep verifying whole.
pub const FULL_AFTER_VIOLATION: Duration = Duration::from_secs(2);

/// A verified (length in bytes, SHA-256) of a log.
pub type Checkpoint = (u64, [u8; 32]);

/// What verifying a change of a log found.
#[derive(Debug)]
pub enum Verified {
    /// The path is no longer the baseline's regular file, or could not be read: judge it by
    /// the general path (a rescan).
    Rescan,
    /// Judged as an append.
    Judged(Box<Judged>),
}

#[derive(Debug)]
/// A change of a log judged from its verified state.
pub struct Judged {
    /// The file as it is now.
    pub current: Entry,
    pub verdict: Verdict,
    pub content: Content,
    /// The hash state of the whole file now, when its verified bytes are intact.
    pub state: Option<AppendState>,
    /// Bytes read to verify it.
    pub read: u64,
}

/// What is verified of each append-only log (see the module doc).
#[derive(Debug, Default)]
pub struct AppendTracker {
    /// The hash state at each log's verified length, by path.
    states: HashMap<Vec<u8>, AppendState>,
    /// Recent verified states of each log, oldest first, at most `CHECKPOINTS`.
    checkpoints: HashMap<Vec<u8>, Vec<Checkpoint>>,
    /// Log paths a rotation retired.
    retired: HashSet<Vec<u8>>,
    /// Logs to verify whole (not from their state) until then.
    full_until: HashMap<Vec<u8>, Instant>,
}

impl AppendTracker {
    pub fn new(states: HashMap<Vec<u8>, AppendState>, retired: HashSet<Vec<u8>>) -> AppendTracker {
        AppendTracker {
            states,
            retired,
            ..AppendTracker::default()
        }
    }

    /// Another baseline was taken over: its states and retired logs replace these.
    pub fn take_over(&mut self, states: HashMap<Vec<u8>, AppendState>, retired: HashSet<Vec<u8>>) {
        self.states = states;
        self.retired = retired;
    }

    pub fn retired(&self) -> &HashSet<Vec<u8>> {
        &self.retired
    }

    pub fn checkpoints(&self) -> &HashMap<Vec<u8>, Vec<Checkpoint>> {
        &self.checkpoints
    }

    /// `path` was verified at `cp` before advancing: kept, the oldest dropped past
    /// `CHECKPOINTS`.
    pub fn checkpoint(&mut self, path: &[u8], cp: Checkpoint) {
        let cps = self.checkpoints.entry(path.to_vec()).or_default();
        cps.push(cp);
        if cps.len() > CHECKPOINTS {
            cps.remove(0);
        }
    }

    /// A ledger row for `path` was applied. `new_inode`: `Some(true)` when the row's entry is
    /// another inode than the baseline had there (a new log: the old one's checkpoints describe
    /// other bytes), `Some(false)` for the same inode, `None` when the row retired the path.
    pub fn applied(&mut self, path: &[u8], new_inode: Option<bool>, state: Option<AppendState>) {
        match new_inode {
            Some(new) => {
                self.retired.remove(path);
                if new {
                    self.checkpoints.remove(path);
                }
            }
            None => {
                self.checkpoints.remove(path);
                self.retired.insert(path.to_vec());
            }
        }
        match state {
            Some(a) => self.states.insert(path.to_vec(), a),
            None => self.states.remove(path),
        };
    }

    /// The state to extend from when `path` changed, or `None` to read it whole: whole when
    /// the kernel reported any violation, when no state matches the baseline's verified
    /// length and hash, or while a recent write below the verified length may still land.
    pub fn resume_from(
        &self,
        path: &[u8],
        base: &Entry,
        violations: u32,
        now: Instant,
    ) -> Option<&AppendState> {
        let st = self
            .states
            .get(path)
            .filter(|a| a.len == base.size && Some(a.sha256) == base.sha256)?;
        let whole = violations != 0 || self.full_until.get(path).is_some_and(|t| *t > now);
        (!whole).then_some(st)
    }

    /// Judges a change of the log `base` (its verified state) at `path`: reads only the bytes
    /// past its state unless it must be read whole (`resume_from`). From here on the kernel
    /// records a write below what is read (`sensor`). Errors: the sensor's map or `fstat`.
    pub fn verify(
        &mut self,
        path: &[u8],
        base: &Entry,
        violations: u32,
        sensor: &mut dyn Sensor,
        mode: Mode,
        metrics: &Metrics,
    ) -> anyhow::Result<Verified> {
        let Some(fd) = open_regular(Path::new("/"), path) else {
            return Ok(Verified::Rescan);
        };
        let st = rustix::fs::fstat(&fd)?;
        #[allow(clippy::unnecessary_cast)] // stat field widths differ between architectures
        let (dev, ino, size) = (st.st_dev as u64, st.st_ino as u64, st.st_size.max(0) as u64);
        if (dev, ino) != (base.dev, base.ino) {
            return Ok(Verified::Rescan);
        }
        sensor.watch_append(key_of(base), size.max(base.size))?;
        let now = Instant::now();
        let sha = base.sha256.expect("verifiable entries have a hash");
        let started = Instant::now();
        let outcome = match self.resume_from(path, base, violations, now) {
            Some(a) => append_state::extend(&fd, a, size),
            None => append_state::full(&fd, size, Some((base.size, sha))),
        };
        if let Ok(Extended::Intact { read, .. }) = &outcome {
            metrics.observe_hash_batch(*read, started.elapsed());
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                eprintln!("fimd run: {}: {e}", crate::output::path::path_text(path).0);
                return Ok(Verified::Rescan);
            }
        };
        let current_sha = match &outcome {
            Extended::Intact { state, .. } => Some(state.sha256),
            _ => match append_state::full(&fd, size, None) {
                Ok(Extended::Intact { state, .. }) => Some(state.sha256),
                _ => None,
            },
        };
        #[allow(clippy::unnecessary_cast)]
        let current = Entry {
            path: path.to_vec(),
            kind: FileKind::Regular,
            size,
            mode: st.st_mode as u32 & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            ino,
            dev,
            nlink: st.st_nlink as u64,
            mtime_ns: st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64,
            sha256: current_sha,
            link_target: None,
            xattrs: crate::scan::xattr::read_fd(&fd).unwrap_or_default(),
            flags: crate::scan::flags::read_fd(&fd).unwrap_or_default(),
            birth_ns: crate::scan::identity::birth_fd(&fd),
            generation: crate::scan::identity::generation_fd(&fd),
        };
        let (content, state, read) = match outcome {
            Extended::Intact { state, read } => (Content::Intact, Some(state), read),
            Extended::Shorter => (Content::Shorter, None, 0),
            Extended::Changed => (Content::Changed, None, 0),
        };
        let differ = diff(base, &current, mode);
        let verdict = verdict(&Look {
            verified_len: base.size,
            len: size,
            differ: &differ,
            content,
            kernel_saw_shrink: violations & VIOLATION_SHRINK != 0,
        });
        // Intact, yet the kernel saw a write below: it may not have landed yet.
        if matches!(verdict, Verdict::Appended { .. } | Verdict::Intact)
            && violations & VIOLATION_WRITE_BELOW != 0
        {
            self.full_until.insert(path.to_vec(), now + FULL_AFTER_VIOLATION);
        }
        Ok(Verified::Judged(Box::new(Judged {
            current,
            verdict,
            content,
            state,
            read,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(size: u64, sha: u8) -> Entry {
        Entry {
            path: b"/l/app.log".to_vec(),
            kind: FileKind::Regular,
            size,
            mode: 0o640,
            uid: 0,
            gid: 0,
            ino: 5,
            dev: 1,
            nlink: 1,
            mtime_ns: 0,
            ctime_ns: 0,
            sha256: Some([sha; 32]),
            link_target: None,
            xattrs: Vec::new(),
            flags: Some(0),
            birth_ns: None,
            generation: None,
        }
    }

    fn state(len: u64, sha: u8) -> AppendState {
        AppendState {
            len,
            sha256: [sha; 32],
            at: 0,
            state: Vec::new(),
        }
    }

    #[test]
    fn extends_only_from_a_state_that_matches_and_no_violation() {
        let p = &b"/l/app.log"[..];
        let now = Instant::now();
        let t = AppendTracker::new([(p.to_vec(), state(10, 1))].into(), HashSet::new());
        assert!(t.resume_from(p, &log(10, 1), 0, now).is_some());
        // Any violation, another verified length or hash, or no state: whole.
        assert!(
            t.resume_from(p, &log(10, 1), VIOLATION_WRITE_BELOW, now)
                .is_none()
        );
        assert!(
            t.resume_from(p, &log(10, 1), monitor_common::VIOLATION_MMAP, now)
                .is_none()
        );
        assert!(t.resume_from(p, &log(11, 1), 0, now).is_none());
        assert!(t.resume_from(p, &log(10, 2), 0, now).is_none());
        assert!(t.resume_from(b"/l/other.log", &log(10, 1), 0, now).is_none());
    }

    #[test]
    fn reads_whole_for_a_while_after_a_write_below() {
        let p = &b"/l/app.log"[..];
        let now = Instant::now();
        let mut t = AppendTracker::new([(p.to_vec(), state(10, 1))].into(), HashSet::new());
        t.full_until.insert(p.to_vec(), now + FULL_AFTER_VIOLATION);
        assert!(t.resume_from(p, &log(10, 1), 0, now).is_none());
        assert!(
            t.resume_from(p, &log(10, 1), 0, now + FULL_AFTER_VIOLATION)
                .is_some()
        );
    }

    #[test]
    fn checkpoints_are_bounded_and_reset_by_a_new_log() {
        let p = &b"/l/app.log"[..];
        let mut t = AppendTracker::default();
        for i in 0..(CHECKPOINTS as u64 + 5) {
            t.checkpoint(p, (i, [0; 32]));
        }
        let cps = &t.checkpoints()[p];
        assert_eq!(cps.len(), CHECKPOINTS);
        assert_eq!(cps[0].0, 5, "the oldest dropped first");
        // The same inode advancing keeps them; a new inode drops them.
        t.applied(p, Some(false), Some(state(30, 3)));
        assert_eq!(t.checkpoints()[p].len(), CHECKPOINTS);
        t.applied(p, Some(true), None);
        assert!(!t.checkpoints().contains_key(p));
        assert!(
            t.resume_from(p, &log(30, 3), 0, Instant::now()).is_none(),
            "its state went with it"
        );
    }

    #[test]
    fn retiring_a_log_and_starting_it_again() {
        let p = &b"/l/app.log"[..];
        let mut t = AppendTracker::default();
        t.checkpoint(p, (4, [1; 32]));
        t.applied(p, None, None);
        assert!(t.retired().contains(p) && !t.checkpoints().contains_key(p));
        t.applied(p, Some(true), Some(state(0, 0)));
        assert!(!t.retired().contains(p));
        assert!(t.resume_from(p, &log(0, 0), 0, Instant::now()).is_some());
    }
}
