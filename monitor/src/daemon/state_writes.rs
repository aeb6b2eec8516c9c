//! The daemon's writes to its state store: ledger rows (what a policy advanced) and evidence
//! records (full comparisons). Detection never depends on them. A write that fails (a full
//! filesystem, another process holding the database's write lock, a store opened read-only)
//! is queued in bounded memory and retried from the daemon's loop, each attempt waiting at
//! most [`DAEMON_BUSY_TIMEOUT`] for a lock, so the loop never stalls on the store.
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::baseline::seal::Key;
use crate::baseline::store::{LedgerRow, Store, StoreError};
use crate::config::Settings;
use crate::telemetry::Metrics;

/// At most this many ledger rows wait (one per path: a later row for a path replaces the
/// queued one, as it would replace the stored one). A row is a few hundred bytes (an entry and
/// a SHA-256 midstate), so the queue holds at most about 30 MB. A row that finds the queue
/// full is dropped and counted; losing one only means the next start verifies that file whole
/// again, or reports a rotation once more.
pub const MAX_QUEUED_LEDGER_ROWS: usize = 65_536;
/// At most this many evidence records wait (one per full comparison: with the default weekly
/// schedule, about 20 years); past it the oldest is dropped and counted.
pub const MAX_QUEUED_EVIDENCE: usize = 1_024;
/// How long one of the daemon's writes waits for another process's lock (SQLite's busy
/// timeout). Short: the loop retries instead of waiting.
pub const DAEMON_BUSY_TIMEOUT: Duration = Duration::from_millis(50);
/// After a failed write, how long before the queue is tried again (from the loop's tick).
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What the caller reports after a write or a retry.
#[derive(Debug, PartialEq, Eq)]
pub enum Episode {
    /// Nothing new: writes land, or keep failing in an episode already reported.
    Quiet,
    /// Writes started failing, for this reason: alert once.
    Failing(String),
    /// Writes land again; this many queued ones just landed.
    Recovered(usize),
}

/// The daemon's state store writer and its queue.
pub struct StateWrites {
    state_dir: PathBuf,
    key_path: Option<PathBuf>,
    /// Open for writing; `None` while the store could not be opened read-write (reopened on
    /// the next attempt).
    store: Option<Store>,
    key: Key,
    ledger: BTreeMap<Vec<u8>, LedgerRow>,
    evidence: VecDeque<Value>,
    /// The reason of the failure episode under way.
    failing: Option<String>,
    next_try: Instant,
    metrics: Arc<Metrics>,
}

impl StateWrites {
    /// Takes over the store the baseline was read from. One opened read-only (a full or
    /// read-only filesystem) is closed at once, releasing its lock: writes open their own.
    pub fn new(store: Store, key: Key, settings: &Settings, metrics: Arc<Metrics>) -> StateWrites {
        let store = (!store.is_read_only()).then_some(store);
        if let Some(s) = &store
            && let Err(e) = s.set_busy_timeout(DAEMON_BUSY_TIMEOUT)
        {
            eprintln!("fimd run: {e}");
        }
        let w = StateWrites {
            state_dir: settings.state_dir.clone(),
            key_path: settings.hmac_key.clone(),
            store,
            key,
            ledger: BTreeMap::new(),
            evidence: VecDeque::new(),
            failing: None,
            next_try: Instant::now(),
            metrics,
        };
        w.metrics.state_queue_length.set(0);
        w
    }

    /// Writes queued but not yet stored.
    /// The baseline's key (HMAC of ledger rows and alert tokens).
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The store open for writing, when it could be opened; reads of it (the stored seal, the
    /// alerted differences) wait while it cannot.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    pub fn queued(&self) -> usize {
        self.ledger.len() + self.evidence.len()
    }

    /// Queues ledger rows and tries to store everything queued.
    pub fn ledger(&mut self, rows: Vec<LedgerRow>) -> Episode {
        for row in rows {
            if self.ledger.len() >= MAX_QUEUED_LEDGER_ROWS && !self.ledger.contains_key(&row.path) {
                self.metrics.state_writes_dropped.inc();
                continue;
            }
            self.ledger.insert(row.path.clone(), row);
        }
        self.flush(false)
    }

    /// Queues an evidence record and tries to store everything queued.
    pub fn evidence(&mut self, record: Value) -> Episode {
        if self.evidence.len() >= MAX_QUEUED_EVIDENCE {
            self.evidence.pop_front();
            self.metrics.state_writes_dropped.inc();
        }
        self.evidence.push_back(record);
        self.flush(false)
    }

    /// Stores what is queued, unless the last attempt failed less than [`RETRY_EVERY`] ago
    /// (`force` tries anyway: at shutdown).
    pub fn flush(&mut self, force: bool) -> Episode {
        let out = self.try_flush(force);
        self.metrics.state_queue_length.set(self.queued() as i64);
        out
    }

    fn try_flush(&mut self, force: bool) -> Episode {
        if self.queued() == 0 {
            return Episode::Quiet;
        }
        let now = Instant::now();
        if self.failing.is_some() && now < self.next_try && !force {
            return Episode::Quiet;
        }
        let before = self.queued();
        match self.write_all() {
            Ok(()) => match self.failing.take() {
                Some(_) => Episode::Recovered(before),
                None => Episode::Quiet,
            },
            Err(e) => {
                self.metrics.state_write_failures.inc();
                self.next_try = now + RETRY_EVERY;
                if self.failing.is_some() {
                    return Episode::Quiet;
                }
                let reason = e.to_string();
                self.failing = Some(reason.clone());
                Episode::Failing(reason)
            }
        }
    }

    fn write_all(&mut self) -> Result<(), StoreError> {
        if self.store.is_none() {
            let s = Store::open(&self.state_dir, self.key_path.as_deref(), false)?;
            s.set_busy_timeout(DAEMON_BUSY_TIMEOUT)?;
            self.store = Some(s);
        }
        let store = self.store.as_ref().expect("opened above");
        if !self.ledger.is_empty() {
            let rows: Vec<LedgerRow> = self.ledger.values().cloned().collect();
            store.ledger_put(&self.key, &rows)?;
            self.ledger.clear();
        }
        // In order: each record's MAC chains to the one before.
        while let Some(record) = self.evidence.front() {
            store.evidence_append(&self.key, record)?;
            self.evidence.pop_front();
        }
        Ok(())
    }
}
