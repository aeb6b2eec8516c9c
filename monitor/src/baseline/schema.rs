//! The baseline database's tables, by schema version. A leaf: what each version added, and
//! nothing that reads or writes them.

/// The database's file name in `state_dir`.
pub const DB_FILE: &str = "baseline.db";
pub(super) const SCHEMA_VERSION: i64 = 4;

/// Version 1: metadata, entries and the history of inits and accepts.
pub(super) const SCHEMA_V1: &str = "
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS entries (
       path BLOB PRIMARY KEY, kind INTEGER NOT NULL, size INTEGER NOT NULL,
       mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
       ino INTEGER NOT NULL, dev INTEGER NOT NULL, nlink INTEGER NOT NULL,
       mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
       sha256 BLOB, link_target BLOB, xattrs BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS history (
       id INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL,
       action TEXT NOT NULL, path BLOB, detail TEXT NOT NULL);";

/// Version 2: the ledger (what policy advanced since the seal: verified appends, rotations)
/// and the evidence log of comparisons.
pub(super) const SCHEMA_V2: &str = "
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
pub(super) const SCHEMA_V3: &str = "
    ALTER TABLE entries ADD COLUMN flags INTEGER;
    ALTER TABLE ledger ADD COLUMN flags INTEGER;
    PRAGMA user_version = 3;";

/// Version 4: what tells a moved inode from a reused number (birth time and inode generation,
/// `NULL`: not reported), in entries and the ledger, and the differences already alerted.
/// The seal's encoding of an entry includes the new columns, so, as for version 3, only `init`
/// upgrades an older baseline.
pub(super) const SCHEMA_V4: &str = "
    ALTER TABLE entries ADD COLUMN birth_ns INTEGER;
    ALTER TABLE entries ADD COLUMN generation INTEGER;
    ALTER TABLE ledger ADD COLUMN birth_ns INTEGER;
    ALTER TABLE ledger ADD COLUMN generation INTEGER;
    CREATE TABLE IF NOT EXISTS alerted (path BLOB NOT NULL, mac BLOB NOT NULL, PRIMARY KEY (path, mac)) WITHOUT ROWID;
    PRAGMA user_version = 4;";
