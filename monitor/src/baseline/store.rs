//! The baseline database: SQLite in WAL mode, one transaction per change so a crash at any
//! moment leaves the previous or the new baseline, sealed with an HMAC over its whole content.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::entry::Entry;
use super::files;
use super::ledger::AppendState;
use super::replace::SEAL_ARENA_CAP;
use super::rows::{GENERATION, insert_entry, insert_history, set_meta, stored_generation};
use super::schema::{SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_VERSION};
use super::seal::Key;
use super::sealed::{read_sealed, write_seal};
use super::{evidence, ledger};

pub use super::error::StoreError;
pub use super::ledger::LedgerRow;
pub use super::replace::Replace;
pub use super::rows::{HistoryRow, hex};
pub use super::schema::DB_FILE;

/// A verified baseline held in memory.
pub struct Baseline {
    /// Sorted by path (SQLite orders BLOBs bytewise, as Rust orders byte slices): the sealed
    /// entries with the ledger applied.
    pub entries: Vec<Entry>,
    /// Hash states of append-only files, by path.
    pub appends: HashMap<Vec<u8>, AppendState>,
    /// The seal (hex): which baseline this is, for evidence records.
    pub seal: String,
    /// The generation (sealed in the metadata): 1 at the first `init`, then +1 on every
    /// `init` and `accept`, never less. Alerts, evidence records and the
    /// `fim_baseline_generation` metric carry it, so a sealed older copy put back (a rollback)
    /// shows as the number going down where the intruder cannot reach.
    pub generation: u64,
    /// Paths a rotation retired (their log moved to a rotated name).
    pub retired: std::collections::HashSet<Vec<u8>>,
    pub meta: HashMap<String, String>,
    pub history: Vec<HistoryRow>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    key_desc: String,
    /// Opened by [`Store::open_read_only`]: for reading only.
    read_only: bool,
}

/// How long a command's write waits for another process's lock before it fails (`check`'s
/// evidence, `accept`'s commit). The daemon sets a much shorter one ([`Store::set_busy_timeout`])
/// and retries from its loop instead.
pub const COMMAND_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Store {
    /// The store over an open connection; `key_path` is the configured key, named in errors
    /// (the default one in `state_dir` when `None`).
    fn opened(
        conn: Connection,
        path: PathBuf,
        state_dir: &Path,
        key_path: Option<&Path>,
        read_only: bool,
    ) -> Store {
        let key_desc = key_path.map_or_else(
            || state_dir.join(super::seal::KEY_FILE).display().to_string(),
            |p| p.display().to_string(),
        );
        Store {
            conn,
            path,
            key_desc,
            read_only,
        }
    }

    /// Opens the database in `state_dir`; with `create` (what `init` does), makes the private
    /// state directory and an empty database when they do not exist. Without it, a missing
    /// database is `NoBaseline` and nothing is created. What is at the database path is judged
    /// without following symlinks first ([`files::inspect_db`]), and SQLite opens it with
    /// `SQLITE_OPEN_NOFOLLOW`, so a symlink put there is refused, never followed.
    /// An older schema is upgraded only with `create`: its seal cannot be verified any more.
    /// A directory or database this user may not use is `Denied`, naming the privilege.
    pub fn open(state_dir: &Path, key_path: Option<&Path>, create: bool) -> Result<Store, StoreError> {
        let no_baseline = || StoreError::NoBaseline {
            path: state_dir.join(DB_FILE),
        };
        let uid = rustix::process::geteuid().as_raw();
        if let Err(e) = std::fs::metadata(state_dir)
            && e.kind() == std::io::ErrorKind::PermissionDenied
        {
            return Err(StoreError::Denied {
                path: state_dir.join(DB_FILE),
                uid,
            });
        }
        if !files::secure_dir(state_dir, create)? {
            return Err(no_baseline());
        }
        // SQLite refuses a symlink anywhere in the path it is given with NOFOLLOW: the
        // configured directory may be one (a deliberate choice), its database may not.
        let dir = std::fs::canonicalize(state_dir).map_err(|err| StoreError::StateDir {
            path: state_dir.to_owned(),
            err,
        })?;
        let path = dir.join(DB_FILE);
        match files::inspect_db(&path)? {
            files::DbState::Usable => {}
            files::DbState::Missing if create => files::create_db(&path)?,
            files::DbState::Missing => return Err(no_baseline()),
        }
        // SQLite says "unable to open database file" or "readonly database": say which
        // privilege is missing instead.
        let denied = || {
            rustix::fs::accessat(
                rustix::fs::CWD,
                &dir,
                rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
                rustix::fs::AtFlags::EACCESS,
            )
            .is_err_and(|e| e == rustix::io::Errno::ACCESS)
                || rustix::fs::accessat(
                    rustix::fs::CWD,
                    &path,
                    rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
                    rustix::fs::AtFlags::EACCESS,
                )
                .is_err_and(|e| e == rustix::io::Errno::ACCESS)
        };
        let sql = |err| {
            if denied() {
                StoreError::Denied {
                    path: path.clone(),
                    uid,
                }
            } else {
                StoreError::Sqlite {
                    path: path.clone(),
                    err,
                }
            }
        };
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(sql)?;
        conn.busy_timeout(COMMAND_BUSY_TIMEOUT).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        match version {
            SCHEMA_VERSION => {}
            0 if create => conn
                .execute_batch(&format!("BEGIN; {SCHEMA_V1}"))
                .and_then(|()| conn.execute_batch(&format!("{SCHEMA_V2} {SCHEMA_V3} {SCHEMA_V4} COMMIT;")))
                .map_err(sql)?,
            1 if create => conn
                .execute_batch(&format!("BEGIN; {SCHEMA_V2} {SCHEMA_V3} {SCHEMA_V4} COMMIT;"))
                .map_err(sql)?,
            2 if create => conn
                .execute_batch(&format!("BEGIN; {SCHEMA_V3} {SCHEMA_V4} COMMIT;"))
                .map_err(sql)?,
            3 if create => conn
                .execute_batch(&format!("BEGIN; {SCHEMA_V4} COMMIT;"))
                .map_err(sql)?,
            found if found < SCHEMA_VERSION => return Err(StoreError::OldSchema { path, found }),
            found => return Err(StoreError::Schema { path, found }),
        }
        Ok(Store::opened(conn, path, state_dir, key_path, false))
    }

    /// Opens an existing database for reading only, when [`Store::open`] cannot (a full
    /// filesystem: SQLite cannot create the WAL index `-shm`, "disk I/O error"). The connection
    /// uses `locking_mode=EXCLUSIVE`, so SQLite keeps the WAL index in its own memory and never
    /// creates `-shm`; while it is open, other processes wait for it. On a read-only filesystem,
    /// where SQLite can do neither, it reads the file as immutable, unless a non-empty `-wal`
    /// holds rows the file lacks. Callers use it to read, and
    /// expect its writes to fail (the daemon closes it and opens a new store to write).
    /// The same checks of the path as `open` apply; nothing is ever created.
    pub fn open_read_only(state_dir: &Path, key_path: Option<&Path>) -> Result<Store, StoreError> {
        if !files::secure_dir(state_dir, false)? {
            return Err(StoreError::NoBaseline {
                path: state_dir.join(DB_FILE),
            });
        }
        let dir = std::fs::canonicalize(state_dir).map_err(|err| StoreError::StateDir {
            path: state_dir.to_owned(),
            err,
        })?;
        let path = dir.join(DB_FILE);
        match files::inspect_db(&path)? {
            files::DbState::Usable => {}
            files::DbState::Missing => return Err(StoreError::NoBaseline { path }),
        }
        let sql = |err| StoreError::Sqlite {
            path: path.clone(),
            err,
        };
        use rusqlite::OpenFlags;
        let exclusive = || -> rusqlite::Result<(Connection, i64)> {
            let conn = Connection::open_with_flags(
                &path,
                // Not SQLITE_OPEN_READ_ONLY: a read-only connection to a WAL database insists
                // on the `-shm` file even in exclusive mode ("disk I/O error" on a full tmpfs).
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_NOFOLLOW,
            )?;
            conn.busy_timeout(COMMAND_BUSY_TIMEOUT)?;
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
            let version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            Ok((conn, version))
        };
        // A read-only filesystem: SQLite can neither create `-shm` nor take the lock it needs to
        // go without it. Nothing can write there, so the database is read as immutable, but only
        // when no WAL holds rows not yet in the database file (immutable mode ignores a WAL).
        let immutable = || -> rusqlite::Result<(Connection, i64)> {
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            if std::fs::symlink_metadata(&wal).is_ok_and(|m| m.len() > 0) {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some("its write-ahead log holds rows not yet in the database file".into()),
                ));
            }
            let uri = format!(
                "file:{}?immutable=1",
                path.to_string_lossy()
                    .replace('%', "%25")
                    .replace('?', "%3f")
                    .replace('#', "%23")
            );
            let conn = Connection::open_with_flags(
                uri,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_URI
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_NOFOLLOW,
            )?;
            let version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            Ok((conn, version))
        };
        let (conn, version) = exclusive().or_else(|e| immutable().map_err(|_| e)).map_err(sql)?;
        match version {
            SCHEMA_VERSION => {}
            found if found < SCHEMA_VERSION => return Err(StoreError::OldSchema { path, found }),
            found => return Err(StoreError::Schema { path, found }),
        }
        Ok(Store::opened(conn, path, state_dir, key_path, true))
    }

    /// Whether this store was opened by [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// How long a write waits for another process's lock before it fails with "database is
    /// locked" (SQLite's busy timeout).
    pub fn set_busy_timeout(&self, wait: std::time::Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(wait).map_err(self.sql())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |err| StoreError::Sqlite {
            path: self.path.clone(),
            err,
        }
    }

    /// Whether a sealed baseline exists.
    pub fn has_baseline(&self) -> Result<bool, StoreError> {
        let seal: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'seal'", [], |r| r.get(0))
            .optional()
            .map_err(self.sql())?;
        Ok(seal.is_some())
    }

    /// Starts replacing the whole baseline; nothing is visible until `Replace::commit`.
    pub fn replace(&mut self) -> Result<Replace<'_>, StoreError> {
        self.replace_capped(SEAL_ARENA_CAP)
    }

    /// [`Store::replace`] keeping at most `arena_cap` bytes of seal encodings (see
    /// [`SEAL_ARENA_CAP`]).
    pub(super) fn replace_capped(&mut self, arena_cap: usize) -> Result<Replace<'_>, StoreError> {
        let path = self.path.clone();
        let sql = |err| StoreError::Sqlite {
            path: path.clone(),
            err,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        // Read, not verified: a new baseline follows whatever was there (the counter only
        // grows), even one that fails its seal, which is why it is being replaced.
        let previous = stored_generation(&tx).map_err(sql)?;
        tx.execute_batch(
            "DELETE FROM entries; DELETE FROM meta; DELETE FROM history; DELETE FROM ledger;
                            DELETE FROM alerted;",
        )
        .map_err(sql)?;
        Ok(Replace::new(tx, path, previous + 1, arena_cap))
    }

    /// Applies accepted changes: upserts, deletions and their history rows, advances the
    /// generation by one, then reseals. Returns the new generation.
    pub fn apply(
        &mut self,
        key: &Key,
        upserts: &[Entry],
        deletes: &[Vec<u8>],
        history: &[HistoryRow],
        meta: &[(&str, String)],
    ) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let sql = |err| StoreError::Sqlite {
            path: path.clone(),
            err,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        // Refuse to build on a baseline that was tampered with.
        let (sealed_meta, _) = read_sealed(&tx, &path, key, &self.key_desc, |_| {})?;
        let generation = sealed_meta
            .get(GENERATION)
            .and_then(|g| g.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        for e in upserts {
            insert_entry(&tx, e).map_err(sql)?;
        }
        for p in deletes {
            tx.execute("DELETE FROM entries WHERE path = ?1", [p])
                .map_err(sql)?;
        }
        // What is accepted supersedes what the policy advanced, and what was alerted about it.
        for p in deletes.iter().chain(upserts.iter().map(|e| &e.path)) {
            tx.execute("DELETE FROM ledger WHERE path = ?1", [p])
                .map_err(sql)?;
            tx.execute("DELETE FROM alerted WHERE path = ?1", [p])
                .map_err(sql)?;
        }
        insert_history(&tx, history).map_err(sql)?;
        set_meta(&tx, meta).map_err(sql)?;
        set_meta(&tx, &[(GENERATION, generation.to_string())]).map_err(sql)?;
        write_seal(&tx, &path, key)?;
        tx.commit().map_err(sql)?;
        Ok(generation)
    }

    /// Loads the baseline, verifying its seal.
    pub fn load(&self, key: &Key) -> Result<Baseline, StoreError> {
        if !self.has_baseline()? {
            return Err(StoreError::NoBaseline {
                path: self.path.clone(),
            });
        }
        // One read transaction: a commit by another fimd mid-read must not look like tampering.
        let tx = self.conn.unchecked_transaction().map_err(self.sql())?;
        // Sized once: a vector grown by doubling holds up to twice the entries' 200 bytes each
        // while it loads, and the copy when shrunk (heaptrack of `fimd run` on /usr: 52 MB).
        let count: i64 = tx
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
            .map_err(self.sql())?;
        let mut entries = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let (meta, history) = read_sealed(&tx, &self.path, key, &self.key_desc, |e| entries.push(e))?;
        let seal: String = tx
            .query_row("SELECT value FROM meta WHERE key = 'seal'", [], |r| r.get(0))
            .map_err(self.sql())?;
        let ledger = ledger::read(&tx, &self.path, key)?;
        drop(tx);
        let mut appends = HashMap::new();
        let mut retired = std::collections::HashSet::new();
        if !ledger.is_empty() {
            let mut by_path: HashMap<Vec<u8>, Option<Entry>> = HashMap::new();
            for row in ledger {
                if let Some(a) = row.append {
                    appends.insert(row.path.clone(), a);
                }
                if row.entry.is_none() {
                    retired.insert(row.path.clone());
                }
                by_path.insert(row.path, row.entry);
            }
            entries.retain_mut(|e| match by_path.remove(&e.path) {
                None => true,
                Some(None) => false,
                Some(Some(new)) => {
                    *e = new;
                    true
                }
            });
            entries.extend(by_path.into_values().flatten());
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            entries.shrink_to_fit();
        }
        let generation = meta
            .get(GENERATION)
            .map(|g| {
                g.parse().map_err(|_| StoreError::Malformed {
                    path: self.path.clone(),
                    what: format!("generation {g:?}"),
                })
            })
            .transpose()?
            .unwrap_or(0);
        Ok(Baseline {
            entries,
            appends,
            seal,
            generation,
            retired,
            meta,
            history,
        })
    }

    /// Records what a policy advanced (an append verified, a rotation judged), each row with
    /// its own MAC: one small write per change, not a reseal of the whole baseline.
    /// Not synced to disk at once (WAL, `synchronous=NORMAL` for this transaction only): a
    /// crash can lose the last rows, never corrupt them, and a lost row only means the next
    /// start verifies those appends again. One fsync per append was half its latency.
    pub fn ledger_put(&self, key: &Key, rows: &[LedgerRow]) -> Result<(), StoreError> {
        let sql = self.sql();
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(&sql)?;
        let out = ledger::put(&self.conn, &self.path, key, rows);
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(&sql)?;
        out
    }

    /// The tokens of the differences already alerted (see `crate::alerted`), as stored. Each is
    /// an HMAC under the baseline key, so a row forged without the key matches no difference.
    pub fn alerted(&self) -> Result<std::collections::HashSet<Vec<u8>>, StoreError> {
        let sql = self.sql();
        let mut stmt = self.conn.prepare("SELECT mac FROM alerted").map_err(&sql)?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).map_err(&sql)?;
        rows.collect::<Result<_, _>>().map_err(&sql)
    }

    /// Records that the differences `(path, token)` were alerted: one transaction, not synced
    /// at once (as `ledger_put`): a crash can lose the last rows, and then only means those
    /// differences are alerted once more.
    pub fn alerted_put(&self, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = self.sql();
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(&sql)?;
        let out = (|| {
            let tx = self.conn.unchecked_transaction()?;
            for (path, token) in rows {
                tx.prepare_cached("INSERT OR IGNORE INTO alerted (path, mac) VALUES (?1, ?2)")?
                    .execute(params![path, token])?;
            }
            tx.commit()
        })()
        .map_err(&sql);
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(&sql)?;
        out
    }

    /// Forgets every alerted difference but `keep` (what a full comparison found outstanding):
    /// a file that matched the baseline again and changes anew is alerted anew.
    pub fn alerted_retain(&self, keep: &std::collections::HashSet<Vec<u8>>) -> Result<(), StoreError> {
        let sql = self.sql();
        let stored = self.alerted()?;
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        for t in stored.difference(keep) {
            tx.execute("DELETE FROM alerted WHERE mac = ?1", [t])
                .map_err(&sql)?;
        }
        tx.commit().map_err(&sql)
    }

    /// Appends an evidence record (a comparison: when, what, outcome) to a MAC chain: each
    /// record's MAC covers the previous one, so a record cannot be dropped or edited unseen.
    pub fn evidence_append(&self, key: &Key, record: &serde_json::Value) -> Result<(), StoreError> {
        evidence::append(&self.conn, &self.path, key, record)
    }

    /// Every evidence record, oldest first, each with whether the chain verifies up to it.
    pub fn evidence(&self, key: &Key) -> Result<Vec<(i64, serde_json::Value, bool)>, StoreError> {
        evidence::read(&self.conn, &self.path, key)
    }

    /// The seal as stored now, unverified (`None`: no baseline): cheap enough to ask on every
    /// tick, to notice an `init` or `accept` by another process.
    pub fn stored_seal(&self) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'seal'")
            .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
            .map_err(self.sql())
    }
}
