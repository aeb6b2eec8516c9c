//! The daemon's parts, held together, and the steps that need several of them: learning a path
//! (watch index, baseline, policy), judging changes (append review, settler, alert writer),
//! applying what policy advanced (baseline, tracker, sensor, state store), and the full
//! comparison. Each part owns its state; these steps pass each the little it needs.
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::alerts::AlertWriter;
use super::appends::AppendTracker;
use super::follow;
use super::modifier::Modifier;
use super::recheck::RecheckQueue;
use super::rules::Rules;
use super::settle::{Departures, SETTLE, Settler};
use super::state_writes::{Episode, StateWrites};
use super::watch_index::{Arm, WatchIndex, key_of};
use crate::append::review;
use crate::append::state::AppendState;
use crate::baseline::entry::{Entry, FileKind};
use crate::baseline::sorted::SortedEntries;
use crate::baseline::store::{Baseline, LedgerRow};
use crate::compare::{self, Change, diff};
use crate::config::Policy;
use crate::output::alert::BaselineRef;
use crate::problems::report_problems;
use crate::scan;
use crate::telemetry::{Health, Metrics};

/// The daemon's parts, each owning its state; the loop (`serve`) drives them.
pub struct Daemon {
    pub rules: Rules,
    pub watch: WatchIndex,
    pub appends: AppendTracker,
    pub settler: Settler,
    pub departures: Departures,
    pub rechecks: RecheckQueue,
    /// Records drained by a rescan, waiting for the next batch (`InFlight`).
    pub in_flight: super::modifier::InFlight,
    pub alerts: AlertWriter,
    /// Ledger and evidence writes, queued while the state store fails.
    pub writes: StateWrites,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The stored seal last taken over (or refused): another one means an `init` or `accept`.
    pub followed_seal: String,
    /// Calls that can block on a file or mount, off the loop (barriers, large rehashes).
    pub blocking: super::blocking::Blocking,
    /// Busy directories' listings, paced by their cost (`pace`).
    pub paced: super::pace::Pacer,
}

impl Daemon {
    /// The sealed baseline, sorted by path: what alerts compare against. Held under the seen
    /// states (`SeenPaths`), which are an overlay on it.
    pub fn baseline(&self) -> &SortedEntries {
        self.watch.baseline()
    }

    /// Records a path's current state and arms its inode (an append-only log with its
    /// verified length).
    pub fn learn(&mut self, e: Entry) {
        let arm = if e.kind == FileKind::Regular && self.rules.policy(&e.path) == Policy::AppendOnly {
            Arm::Append {
                verified_len: self.verified_len(&e),
            }
        } else {
            Arm::Change
        };
        self.watch.learn(e, arm, &self.rules.settings, &mut self.alerts);
    }

    /// The length up to which an append-only file's content is verified.
    fn verified_len(&self, e: &Entry) -> u64 {
        match self.baseline().get(&e.path) {
            Some(b) if b.ino == e.ino && b.dev == e.dev => b.size,
            // Not the baseline's inode: nothing of it is vouched for yet.
            Some(_) => 0,
            None => e.size,
        }
    }

    /// Whether a change of `path` can be judged as an append: an append-only regular file with
    /// a known content to verify against. A file created since the baseline, or a rotated log
    /// (which must not change at all), is judged by the general path.
    pub fn append_verifiable(&self, path: &[u8]) -> bool {
        self.rules.is_live_log(path)
            && self
                .watch
                .seen()
                .get(path)
                .is_some_and(|e| e.kind == FileKind::Regular)
            && self
                .baseline()
                .get(path)
                .is_some_and(|b| b.kind == FileKind::Regular && b.sha256.is_some())
    }

    pub fn alert(&mut self, c: &Change, who: Option<&Modifier>) {
        self.alerts.alert(c, who, self.writes.key());
    }

    pub fn send_alerts(&mut self) {
        self.alerts.send(self.writes.store());
    }

    /// Alerts on each mount inside a watch that stopped answering since the last call
    /// (`scan::guarded`): once per episode, sent at once.
    pub fn report_hung_mounts(&mut self) {
        let hung = self.blocking.newly_hung();
        for m in &hung {
            self.alerts.mount_not_answering(m);
        }
        if !hung.is_empty() {
            self.send_alerts();
        }
    }

    /// Says so when the state store starts failing or recovers.
    pub fn report_state(&mut self, episode: Episode) {
        let db = self
            .rules
            .settings
            .state_dir
            .join("baseline.db")
            .display()
            .to_string();
        self.alerts.state_episode(episode, &db, self.writes.queued());
    }

    /// The baseline advances to `cur`, verified: in memory, in the kernel and in the ledger.
    pub fn advance(&mut self, cur: &Entry, state: Option<AppendState>) -> anyhow::Result<()> {
        let prev = self
            .baseline()
            .get(&cur.path)
            .or(self.watch.seen().get(&cur.path));
        if let Some(cp) = prev.and_then(|p| p.sha256.map(|s| (p.size, s))) {
            self.appends.checkpoint(&cur.path, cp);
        }
        let row = LedgerRow {
            path: cur.path.clone(),
            entry: Some(cur.clone()),
            append: state,
        };
        self.apply_ledger(vec![row])
    }

    /// Persists what policy advanced and takes it as the baseline.
    fn apply_ledger(&mut self, rows: Vec<LedgerRow>) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let episode = self.writes.ledger(rows.clone());
        self.report_state(episode);
        for row in rows {
            let new_inode = match row.entry {
                Some(e) => {
                    let new = self.baseline().get(&row.path).is_none_or(|b| b.ino != e.ino);
                    // What the kernel recorded for this inode number before now belongs to
                    // bytes this row was judged by whole, or to another file that had the
                    // number (a rotated file deleted, its number given to the new log).
                    if new && e.kind == FileKind::Regular {
                        self.watch.sensor_mut().take_violations(&key_of(&e));
                    }
                    if e.kind == FileKind::Regular && self.rules.policy(&e.path) == Policy::AppendOnly {
                        self.watch.sensor_mut().watch_append(key_of(&e), e.size)?;
                    }
                    self.watch.set_baseline(&row.path, Some(e));
                    Some(new)
                }
                None => {
                    self.watch.set_baseline(&row.path, None);
                    None
                }
            };
            self.appends.applied(&row.path, new_inode, row.append);
        }
        Ok(())
    }

    /// Alerts on changes, after the append-only policy judged them. Under a rotating watch they
    /// wait (`settle`) for the rotation to finish, unless told to judge now.
    pub fn judge(
        &mut self,
        changes: Vec<(Change, Option<Modifier>)>,
        settle: Option<Duration>,
    ) -> anyhow::Result<()> {
        let mut now = Vec::new();
        let at = Instant::now();
        for (c, m) in changes {
            if settle.is_some() && c.policy == Policy::AppendOnly && self.rules.rotates(c.path()) {
                if let Some(prev) = &c.previous {
                    self.settler.defer(&prev.path.clone(), m.clone(), at);
                }
                self.settler.defer(c.path(), m, at);
            } else {
                now.push((c, m));
            }
        }
        if now.is_empty() {
            return Ok(());
        }
        let who: HashMap<Vec<u8>, Modifier> = now
            .iter()
            .filter_map(|(c, m)| Some((c.path().to_vec(), m.clone()?)))
            .collect();
        let reviewed = review::review(
            &review::Context {
                settings: &self.rules.settings,
                root: Path::new("/"),
                mode: self.rules.mode,
                base: self.watch.baseline(),
                retired: self.appends.retired(),
                checkpoints: self.appends.checkpoints(),
            },
            now.into_iter().map(|(c, _)| c).collect(),
        );
        self.apply_ledger(reviewed.ledger)?;
        for c in &reviewed.changes {
            let m = who
                .get(c.path())
                .or_else(|| c.previous.as_ref().and_then(|p| who.get(&p.path)));
            self.alert(c, m);
        }
        Ok(())
    }

    /// Judges the rotating directories that have been quiet long enough: the baseline's entries
    /// there against what is there now, as one comparison.
    pub fn settle_due(&mut self) -> anyhow::Result<()> {
        for (dir, s) in self.settler.take_due(Instant::now()) {
            // In path order, as the baseline holds them.
            let mut base: Vec<Entry> = self.baseline().get(&dir).into_iter().cloned().collect();
            base.extend(self.baseline().children(&dir).cloned());
            let target = PathBuf::from(std::ffi::OsStr::from_bytes(&dir));
            let mut scan = scan::start_at(&self.rules.settings, vec![(target, 1)]);
            let mut found = Vec::new();
            let cmp = compare::compare(&self.rules.settings, &base, &mut scan, self.rules.mode, |e| {
                found.push(e.clone())
            });
            drop(scan);
            for e in found {
                self.learn(e);
            }
            report_problems(&cmp.problems);
            // Only what this settling was about: older differences were reported already.
            let ours: Vec<(Change, Option<Modifier>)> = cmp
                .changes
                .into_iter()
                .filter(|c| s.concerns(c))
                .map(|c| {
                    let m = s.who.get(c.path()).cloned();
                    (c, m)
                })
                .collect();
            self.judge(ours, None)?;
        }
        self.send_alerts();
        Ok(())
    }

    /// Reports the paths found gone whose move window passed without a new path: deleted.
    pub fn departed_due(&mut self) -> anyhow::Result<()> {
        let due = self.departures.take_due(Instant::now());
        if due.is_empty() {
            return Ok(());
        }
        let mut changes = Vec::new();
        for d in due {
            let path = d.entry.path.clone();
            // Back at its path meanwhile: judged there (against the baseline) when found.
            if self.watch.seen().contains_key(&path) {
                continue;
            }
            let previous = self.baseline().get(&path).cloned().unwrap_or(d.entry);
            changes.push((Change::deleted(previous, self.rules.policy(&path)), d.who));
        }
        self.judge(changes, Some(SETTLE))?;
        self.send_alerts();
        Ok(())
    }

    /// The alert for `e` against the baseline (static policy: every difference stays reported
    /// until `fimd accept`), or for a path the baseline lacks, against its last seen state;
    /// `None` when it matches again.
    pub fn change_against_baseline(&self, e: &Entry, seen: Option<&Entry>) -> Option<Change> {
        let policy = self.rules.policy(&e.path);
        match self.baseline().get(&e.path).or(seen) {
            None => Some(Change::created(e.clone(), policy)),
            Some(b) => {
                let changes = diff(b, e, self.rules.mode);
                (!changes.is_empty()).then(|| Change::differs(b.clone(), e.clone(), changes, policy))
            }
        }
    }

    /// Takes over the stored baseline if another process resealed it (`follow`): replaces the
    /// baseline, the append states and the alerted differences in memory, and drops the
    /// outstanding differences the new baseline accepted.
    pub fn follow_baseline(&mut self) -> anyhow::Result<()> {
        let Some(baseline) = follow::stored_if_new(&self.writes, &mut self.followed_seal, &self.health)?
        else {
            return Ok(());
        };
        let Baseline {
            entries,
            appends,
            retired,
            generation,
            seal,
            ..
        } = baseline;
        self.metrics.baseline_generation.set(generation as i64);
        self.metrics.baseline_files.set(entries.len() as i64);
        self.watch.replace_baseline(SortedEntries::new(entries));
        self.appends.take_over(appends, retired);
        let sent = match self.writes.store() {
            Some(store) => Some(store.alerted()?),
            None => None,
        };
        let (base, seen, mode) = (self.watch.baseline(), self.watch.seen(), self.rules.mode);
        self.alerts
            .take_over(BaselineRef { generation, seal }, sent, |p| {
                follow::still_differs(base.get(p), seen.get(p), mode)
            });
        eprintln!("fimd run: baseline generation {generation} taken over (changed by another fimd)");
        Ok(())
    }
}

/// Gives the memory a full comparison freed back to the kernel. The walk's threads allocate
/// and drop an entry per file in malloc arenas of their own, which glibc keeps mapped after the
/// threads are done: without this the daemon's resident set stays at the walk's high water
/// mark (`fimd run` on /usr, release build: 101 MB resident at ready, 90 MB after).
pub(super) fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim(3) only returns free pages of the allocator's own arenas; it takes
    // the arena locks like any allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
