//! What can go wrong with the baseline database, each error saying how to recover.
use std::path::{Path, PathBuf};

use super::files;
use super::schema::SCHEMA_VERSION;
use super::seal::KeyError;

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

/// Maps a SQLite error on the database at `path` to [`StoreError::Sqlite`].
pub(super) fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    |err| StoreError::Sqlite {
        path: path.to_owned(),
        err,
    }
}
