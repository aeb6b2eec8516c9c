//! The baseline database: SQLite in WAL mode, one transaction per change so a crash at any
//! moment leaves the previous or the new baseline, sealed with an HMAC over its whole content.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hmac::Mac;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::entry::{Entry, FileKind, decode_xattrs, encode_xattrs};
use super::files;
use super::seal::{Key, KeyError, Sealer};
use crate::append::state::AppendState;

pub const DB_FILE: &str = "baseline.db";
/// The metadata key of the baseline's generation (decimal).
const GENERATION: &str = "generation";
const SCHEMA_VERSION: i64 = 4;
const SEAL_DOMAIN: &[u8] = b"fimd-baseline-seal-v1\0";
const LEDGER_DOMAIN: &[u8] = b"fimd-ledger-v1\0";
const EVIDENCE_DOMAIN: &[u8] = b"fimd-evidence-v1\0";

/// Version 2: the ledger (what policy advanced since the seal: verified appends, rotations)
/// and the evidence log of comparisons.
const SCHEMA_V2: &str = "
    CREATE TABLE IF NOT EXISTS ledger (
        path BLOB PRIMARY KEY, kind INTEGER, size INTEGER,
        mode INTEGER, uid INTEGER, gid INTEGER, ino INTEGER, dev INTEGER, nlink INTEGER,
        mtime_ns INTEGER, ctime_ns INTEGER, sha256 BLOB, link_target BLOB, xattrs BLOB,
        deleted INTEGER NOT NULL, append_at INTEGER, append_state BLOB, mac BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS evidence (id INTEGER PRIMARY KEY, record TEXT NOT NULL, mac BLOB NOT NULL);
    PRAGMA user_version = 2;";

/// Version 3: inode flags (`NULL`: none recorded), in entries and the ledger. The seal's
/// encoding of an entry includes them, so a version 2 baseline cannot be verified by this
/// fimd: only `init` upgrades one, as it replaces the whole baseline anyway.
const SCHEMA_V3: &str = "
    ALTER TABLE entries ADD COLUMN flags INTEGER;
    ALTER TABLE ledger ADD COLUMN flags INTEGER;
    PRAGMA user_version = 3;";

/// Version 4: what tells a moved inode from a reused number (birth time and inode generation,
/// `NULL`: not reported), in entries and the ledger, and the differences already alerted.
/// The seal's encoding of an entry includes the new columns, so, as for version 3, only `init`
/// upgrades an older baseline.
const SCHEMA_V4: &str = "
    ALTER TABLE entries ADD COLUMN birth_ns INTEGER;
    ALTER TABLE entries ADD COLUMN generation INTEGER;
    ALTER TABLE ledger ADD COLUMN birth_ns INTEGER;
    ALTER TABLE ledger ADD COLUMN generation INTEGER;
    CREATE TABLE IF NOT EXISTS alerted (path BLOB NOT NULL, mac BLOB NOT NULL, PRIMARY KEY (path, mac)) WITHOUT ROWID;
    PRAGMA user_version = 4;";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("baseline database {path}: {err}")]
    Sqlite { path: PathBuf, err: rusqlite::Error },
    #[error("state directory {path}: {err}")]
    StateDir { path: PathBuf, err: std::io::Error },
    /// The state directory or database is there but this process may not use it.
    #[error(
        "cannot open the baseline database {path} for reading and writing: permission denied (fimd runs as \
         uid {uid}); run fimd as root (or as the owner of the state directory); the baseline itself is not damaged"
    )]
    Denied { path: PathBuf, uid: u32 },
    #[error("no baseline in {path}: run `fimd init` first")]
    NoBaseline { path: PathBuf },
    #[error(
        "baseline database {path} fails its integrity seal: it was changed outside fimd, or {key} is not \
         the key it was sealed with; restore both from a trusted copy, or rebuild with `fimd init`"
    )]
    SealMismatch { path: PathBuf, key: String },
    #[error("baseline database {path} has schema version {found}; this fimd reads version {SCHEMA_VERSION}")]
    Schema { path: PathBuf, found: i64 },
    #[error(
        "baseline database {path} has schema version {found}, from an older fimd: it lacks what this \
         fimd records and seals (inode flags, the baseline generation, birth times, inode generations), and this fimd (version {SCHEMA_VERSION}) cannot verify its seal. Check \
         the host with the fimd that made it, then run `fimd init` to rebuild the baseline"
    )]
    OldSchema { path: PathBuf, found: i64 },
    #[error(
        "baseline database {path}: the ledger row for {row} fails its MAC: it was changed outside fimd; \
         restore the database from a trusted copy, or run `fimd accept` for that path after checking it"
    )]
    LedgerMismatch { path: PathBuf, row: String },
    #[error(
        "baseline database {path} holds a malformed row ({what}); restore it or rebuild with `fimd init`"
    )]
    Malformed { path: PathBuf, what: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    State(#[from] files::StateError),
}

/// One line of the baseline's history: inits and accepted changes, with when and by whom.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    #[serde(skip)]
    pub path: Option<Vec<u8>>,
    pub detail: String,
}

/// What a policy advanced after the seal, for one path: its new state (`None`: deleted, as
/// rotation retires old logs) and, for an append-only file, the hash state of its content.
#[derive(Debug, Clone)]
pub struct LedgerRow {
    pub path: Vec<u8>,
    pub entry: Option<Entry>,
    pub append: Option<AppendState>,
}

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
                .execute_batch(
                    "BEGIN;
                     CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                     CREATE TABLE IF NOT EXISTS entries (
                        path BLOB PRIMARY KEY, kind INTEGER NOT NULL, size INTEGER NOT NULL,
                        mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
                        ino INTEGER NOT NULL, dev INTEGER NOT NULL, nlink INTEGER NOT NULL,
                        mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
                        sha256 BLOB, link_target BLOB, xattrs BLOB NOT NULL) WITHOUT ROWID;
                     CREATE TABLE IF NOT EXISTS history (
                        id INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL,
                        action TEXT NOT NULL, path BLOB, detail TEXT NOT NULL);",
                )
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
        Ok(Replace {
            tx,
            path,
            generation: previous + 1,
        })
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
        let mut entries = Vec::new();
        let (meta, history) = read_sealed(&tx, &self.path, key, &self.key_desc, |e| entries.push(e))?;
        let seal: String = tx
            .query_row("SELECT value FROM meta WHERE key = 'seal'", [], |r| r.get(0))
            .map_err(self.sql())?;
        let ledger = self.read_ledger(&tx, key)?;
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
        let out = self.ledger_put_rows(key, rows);
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(&sql)?;
        out
    }

    fn ledger_put_rows(&self, key: &Key, rows: &[LedgerRow]) -> Result<(), StoreError> {
        let sql = self.sql();
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        for row in rows {
            let mac = ledger_mac(key, row);
            let e = row.entry.as_ref();
            tx.prepare_cached(
                "INSERT OR REPLACE INTO ledger
                 (path, kind, size, mode, uid, gid, ino, dev, nlink, mtime_ns, ctime_ns, sha256, link_target,
                  xattrs, deleted, append_at, append_state, mac, flags, birth_ns, generation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                         ?20, ?21)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    row.path,
                    e.map(|e| e.kind as i64),
                    e.map(|e| e.size as i64),
                    e.map(|e| e.mode),
                    e.map(|e| e.uid),
                    e.map(|e| e.gid),
                    e.map(|e| e.ino as i64),
                    e.map(|e| e.dev as i64),
                    e.map(|e| e.nlink as i64),
                    e.map(|e| e.mtime_ns),
                    e.map(|e| e.ctime_ns),
                    e.and_then(|e| e.sha256.as_ref().map(|h| h.to_vec())),
                    e.and_then(|e| e.link_target.clone()),
                    e.map(|e| encode_xattrs(&e.xattrs)),
                    i64::from(e.is_none()),
                    row.append.as_ref().map(|a| a.at as i64),
                    row.append.as_ref().map(|a| a.state.clone()),
                    mac,
                    e.and_then(|e| e.flags),
                    e.and_then(|e| e.birth_ns),
                    e.and_then(|e| e.generation),
                ])
            })
            .map_err(&sql)?;
        }
        tx.commit().map_err(&sql)
    }

    fn read_ledger(&self, conn: &Connection, key: &Key) -> Result<Vec<LedgerRow>, StoreError> {
        let sql = self.sql();
        let mut stmt = conn
            .prepare(
                "SELECT path, kind, size, mode, uid, gid, ino, dev, nlink, mtime_ns, ctime_ns, sha256,
                        link_target, xattrs, deleted, append_at, append_state, mac, flags, birth_ns, generation
                 FROM ledger ORDER BY path",
            )
            .map_err(&sql)?;
        let mut rows = stmt.query([]).map_err(&sql)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(&sql)? {
            let path: Vec<u8> = r.get(0).map_err(&sql)?;
            let deleted: i64 = r.get(14).map_err(&sql)?;
            let entry = if deleted != 0 {
                None
            } else {
                Some(row_to_entry(r, &self.path, 18)?)
            };
            let at: Option<i64> = r.get(15).map_err(&sql)?;
            let state: Option<Vec<u8>> = r.get(16).map_err(&sql)?;
            let append = match (at, state, &entry) {
                (Some(at), Some(state), Some(e)) => e.sha256.map(|sha256| AppendState {
                    len: e.size,
                    sha256,
                    at: at as u64,
                    state,
                }),
                _ => None,
            };
            let mac: Vec<u8> = r.get(17).map_err(&sql)?;
            let row = LedgerRow { path, entry, append };
            if ledger_mac(key, &row) != mac {
                return Err(StoreError::LedgerMismatch {
                    path: self.path.clone(),
                    row: crate::paths::path_text(&row.path).0,
                });
            }
            out.push(row);
        }
        Ok(out)
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

    /// The seal as stored now, unverified (`None`: no baseline): cheap enough to ask on every
    /// tick, to notice an `init` or `accept` by another process.
    pub fn stored_seal(&self) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'seal'")
            .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
            .map_err(self.sql())
    }

    /// Appends an evidence record (a comparison: when, what, outcome) to a MAC chain: each
    /// record's MAC covers the previous one, so a record cannot be dropped or edited unseen.
    pub fn evidence_append(&self, key: &Key, record: &serde_json::Value) -> Result<(), StoreError> {
        let sql = self.sql();
        let tx = self.conn.unchecked_transaction().map_err(&sql)?;
        let last: Option<(i64, Vec<u8>)> = tx
            .query_row("SELECT id, mac FROM evidence ORDER BY id DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(&sql)?;
        let (id, prev) = last.map_or((1, Vec::new()), |(id, mac)| (id + 1, mac));
        let text = record.to_string();
        let mac = evidence_mac(key, &prev, id, &text);
        tx.execute(
            "INSERT INTO evidence (id, record, mac) VALUES (?1, ?2, ?3)",
            params![id, text, mac],
        )
        .map_err(&sql)?;
        tx.commit().map_err(&sql)
    }

    /// Every evidence record, oldest first, each with whether the chain verifies up to it.
    pub fn evidence(&self, key: &Key) -> Result<Vec<(i64, serde_json::Value, bool)>, StoreError> {
        let sql = self.sql();
        let mut stmt = self
            .conn
            .prepare("SELECT id, record, mac FROM evidence ORDER BY id")
            .map_err(&sql)?;
        let mut rows = stmt.query([]).map_err(&sql)?;
        let mut out = Vec::new();
        let mut prev = Vec::new();
        let mut intact = true;
        while let Some(r) = rows.next().map_err(&sql)? {
            let (id, text, mac): (i64, String, Vec<u8>) = (
                r.get(0).map_err(&sql)?,
                r.get(1).map_err(&sql)?,
                r.get(2).map_err(&sql)?,
            );
            intact &= evidence_mac(key, &prev, id, &text) == mac;
            let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
            out.push((id, value, intact));
            prev = mac;
        }
        Ok(out)
    }
}

/// A whole-baseline replacement in progress (one SQLite transaction).
pub struct Replace<'c> {
    tx: Transaction<'c>,
    path: PathBuf,
    /// The generation the new baseline gets: one more than the one it replaces.
    generation: u64,
}

impl Replace<'_> {
    pub fn insert(&self, e: &Entry) -> Result<(), StoreError> {
        insert_entry(&self.tx, e).map_err(|err| StoreError::Sqlite {
            path: self.path.clone(),
            err,
        })
    }

    /// The generation this baseline will have.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn commit(
        self,
        key: &Key,
        meta: &[(&str, String)],
        history: &[HistoryRow],
    ) -> Result<(), StoreError> {
        let sql = |err| StoreError::Sqlite {
            path: self.path.clone(),
            err,
        };
        set_meta(&self.tx, meta).map_err(sql)?;
        set_meta(&self.tx, &[(GENERATION, self.generation.to_string())]).map_err(sql)?;
        insert_history(&self.tx, history).map_err(sql)?;
        write_seal(&self.tx, &self.path, key)?;
        self.tx.commit().map_err(sql)
    }
}

fn ledger_mac(key: &Key, row: &LedgerRow) -> Vec<u8> {
    let mut mac = key.sealer();
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(LEDGER_DOMAIN);
    buf.extend_from_slice(&(row.path.len() as u64).to_le_bytes());
    buf.extend_from_slice(&row.path);
    match &row.entry {
        Some(e) => {
            buf.push(1);
            e.encode_into(&mut buf);
        }
        None => buf.push(0),
    }
    if let Some(a) = &row.append {
        buf.extend_from_slice(&a.at.to_le_bytes());
        buf.extend_from_slice(&(a.state.len() as u64).to_le_bytes());
        buf.extend_from_slice(&a.state);
    }
    mac.update(&buf);
    mac.finalize().into_bytes().to_vec()
}

fn evidence_mac(key: &Key, prev: &[u8], id: i64, text: &str) -> Vec<u8> {
    let mut mac = key.sealer();
    mac.update(EVIDENCE_DOMAIN);
    mac.update(&(prev.len() as u64).to_le_bytes());
    mac.update(prev);
    mac.update(&id.to_le_bytes());
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn insert_entry(conn: &Connection, e: &Entry) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO entries
         (path, kind, size, mode, uid, gid, ino, dev, nlink, mtime_ns, ctime_ns, sha256, link_target, xattrs, flags,
          birth_ns, generation)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?;
    // SQLite integers are i64: u64 values are stored bit for bit.
    stmt.execute(params![
        e.path,
        e.kind as i64,
        e.size as i64,
        e.mode,
        e.uid,
        e.gid,
        e.ino as i64,
        e.dev as i64,
        e.nlink as i64,
        e.mtime_ns,
        e.ctime_ns,
        e.sha256.as_ref().map(|h| &h[..]),
        e.link_target,
        encode_xattrs(&e.xattrs),
        e.flags,
        e.birth_ns,
        e.generation,
    ])?;
    Ok(())
}

/// The generation in the metadata as stored, unverified; 0 when there is none.
fn stored_generation(conn: &Connection) -> rusqlite::Result<u64> {
    let g: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [GENERATION], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(g.and_then(|g| g.parse().ok()).unwrap_or(0))
}

fn insert_history(conn: &Connection, rows: &[HistoryRow]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO history (at, actor, action, path, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for h in rows {
        stmt.execute(params![h.at, h.actor, h.action, h.path, h.detail])?;
    }
    Ok(())
}

fn set_meta(conn: &Connection, meta: &[(&str, String)]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
    for (k, v) in meta {
        stmt.execute(params![k, v])?;
    }
    Ok(())
}

fn write_seal(conn: &Connection, path: &Path, key: &Key) -> Result<(), StoreError> {
    conn.execute("DELETE FROM meta WHERE key = 'seal'", [])
        .map_err(|err| StoreError::Sqlite {
            path: path.to_owned(),
            err,
        })?;
    let mut mac = key.sealer();
    feed(conn, path, &mut mac, |_| {})?;
    let seal = hex(&mac.finalize().into_bytes());
    set_meta(conn, &[("seal", seal)]).map_err(|err| StoreError::Sqlite {
        path: path.to_owned(),
        err,
    })
}

type MetaAndHistory = (HashMap<String, String>, Vec<HistoryRow>);

/// Reads everything the seal covers, hands each entry to `visit`, and checks the seal.
fn read_sealed(
    conn: &Connection,
    path: &Path,
    key: &Key,
    key_desc: &str,
    visit: impl FnMut(Entry),
) -> Result<MetaAndHistory, StoreError> {
    let sql = |err| StoreError::Sqlite {
        path: path.to_owned(),
        err,
    };
    let stored: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'seal'", [], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    let mut mac = key.sealer();
    let (meta, history) = feed(conn, path, &mut mac, visit)?;
    let ok = stored
        .as_deref()
        .and_then(unhex)
        .is_some_and(|s| mac.verify_slice(&s).is_ok());
    if !ok {
        return Err(StoreError::SealMismatch {
            path: path.to_owned(),
            key: key_desc.to_owned(),
        });
    }
    Ok((meta, history))
}

/// Feeds the canonical encoding of meta (but the seal), entries and history into `mac`.
fn feed(
    conn: &Connection,
    path: &Path,
    mac: &mut Sealer,
    mut visit: impl FnMut(Entry),
) -> Result<MetaAndHistory, StoreError> {
    let sql = |err| StoreError::Sqlite {
        path: path.to_owned(),
        err,
    };
    let mut buf = Vec::with_capacity(512);
    let put = |buf: &mut Vec<u8>, b: &[u8]| {
        buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
        buf.extend_from_slice(b);
    };
    mac.update(SEAL_DOMAIN);

    let mut meta = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT key, value FROM meta WHERE key <> 'seal' ORDER BY key")
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        let (k, v): (String, String) = (r.get(0).map_err(sql)?, r.get(1).map_err(sql)?);
        buf.clear();
        buf.push(b'M');
        put(&mut buf, k.as_bytes());
        put(&mut buf, v.as_bytes());
        mac.update(&buf);
        meta.insert(k, v);
    }

    let mut stmt = conn
        .prepare(
            "SELECT path, kind, size, mode, uid, gid, ino, dev, nlink, mtime_ns, ctime_ns, sha256, link_target, xattrs,
                    flags, birth_ns, generation FROM entries ORDER BY path",
        )
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        let e = row_to_entry(r, path, 14)?;
        buf.clear();
        buf.push(b'E');
        e.encode_into(&mut buf);
        mac.update(&buf);
        visit(e);
    }

    let mut history = Vec::new();
    let mut stmt = conn
        .prepare("SELECT id, at, actor, action, path, detail FROM history ORDER BY id")
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(r) = rows.next().map_err(sql)? {
        let id: i64 = r.get(0).map_err(sql)?;
        let h = HistoryRow {
            at: r.get(1).map_err(sql)?,
            actor: r.get(2).map_err(sql)?,
            action: r.get(3).map_err(sql)?,
            path: r.get(4).map_err(sql)?,
            detail: r.get(5).map_err(sql)?,
        };
        buf.clear();
        buf.push(b'H');
        buf.extend_from_slice(&id.to_le_bytes());
        for f in [
            h.at.as_bytes(),
            h.actor.as_bytes(),
            h.action.as_bytes(),
            h.detail.as_bytes(),
        ] {
            put(&mut buf, f);
        }
        match &h.path {
            Some(p) => {
                buf.push(1);
                put(&mut buf, p);
            }
            None => buf.push(0),
        }
        mac.update(&buf);
        history.push(h);
    }
    Ok((meta, history))
}

/// An entry from columns 0..=13 in `entries` order, its flags from column `flags_col`, its
/// birth time and generation from the two columns after it.
fn row_to_entry(r: &rusqlite::Row<'_>, path: &Path, flags_col: usize) -> Result<Entry, StoreError> {
    let bad = |what: &str| StoreError::Malformed {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    let sql = |err| StoreError::Sqlite {
        path: path.to_owned(),
        err,
    };
    let kind: i64 = r.get(1).map_err(sql)?;
    let sha: Option<Vec<u8>> = r.get(11).map_err(sql)?;
    let xattrs: Vec<u8> = r.get(13).map_err(sql)?;
    Ok(Entry {
        path: r.get(0).map_err(sql)?,
        kind: FileKind::try_from(kind).map_err(|k| bad(&format!("file kind {k}")))?,
        size: r.get::<_, i64>(2).map_err(sql)? as u64,
        mode: r.get(3).map_err(sql)?,
        uid: r.get(4).map_err(sql)?,
        gid: r.get(5).map_err(sql)?,
        ino: r.get::<_, i64>(6).map_err(sql)? as u64,
        dev: r.get::<_, i64>(7).map_err(sql)? as u64,
        nlink: r.get::<_, i64>(8).map_err(sql)? as u64,
        mtime_ns: r.get(9).map_err(sql)?,
        ctime_ns: r.get(10).map_err(sql)?,
        sha256: match sha {
            None => None,
            Some(v) => Some(v.try_into().map_err(|_| bad("sha256 length"))?),
        },
        link_target: r.get(12).map_err(sql)?,
        xattrs: decode_xattrs(&xattrs).ok_or_else(|| bad("xattrs"))?,
        flags: r.get(flags_col).map_err(sql)?,
        birth_ns: r.get(flags_col + 1).map_err(sql)?,
        generation: r.get(flags_col + 2).map_err(sql)?,
    })
}

pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
