//! The state directory and the files in it: private to their owner (directory 0700, files
//! 0600), and a database path that is a regular, non-empty file, never a symlink, FIFO or
//! directory. Anything else at that path is treated as tampering: fimd names it and refuses,
//! and never creates a database somewhere a symlink points.
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::baseline::entry::FileKind;

/// Mode of the state directory: only its owner may list or enter it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in it (database, its `-wal` and `-shm`, the key).
pub const FILE_MODE: u32 = 0o600;
/// SQLite's companion files of a WAL-mode database, as suffixes of its path.
pub const SQLITE_COMPANIONS: [&str; 2] = ["-wal", "-shm"];

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state directory {path}: {err}")]
    Create { path: PathBuf, err: std::io::Error },
    #[error("cannot inspect {path}: {err}")]
    Inspect { path: PathBuf, err: std::io::Error },
    #[error("state directory {path} is not a directory; fix state_dir in the configuration")]
    NotDir { path: PathBuf },
    #[error(
        "{path} belongs to uid {owner}, not to uid {me} that runs fimd: another user could change the \
         baseline; check who did this, then `chown {me} {path}` or restore the state from a trusted copy"
    )]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
    /// Root's state, used by another user: a missing privilege, not tampering.
    #[error(
        "{path} belongs to root: permission denied to uid {me} that runs fimd; run fimd as root (or with the \
         capabilities of the shipped systemd unit); the baseline itself is not damaged"
    )]
    RootOwned { path: PathBuf, me: u32 },
    #[error(
        "baseline database {path} {what}. fimd does not use or replace it, because that is what \
         tampering looks like: investigate first; then restore baseline.db from a trusted copy \
         (or remove it and run `fimd init` if you know why it happened)"
    )]
    Tampered { path: PathBuf, what: String },
    #[error("cannot create the baseline database {path}: {err}")]
    CreateDb { path: PathBuf, err: std::io::Error },
}

/// What is at the database path, judged without following a symlink.
#[derive(Debug, PartialEq, Eq)]
pub enum DbState {
    /// Nothing there.
    Missing,
    /// A regular file fimd may open.
    Usable,
}

/// The effective uid, whose files the state must be.
fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Makes sure the state directory exists (when `create`) and is private: a directory owned by
/// the user running fimd, mode 0700. A looser mode is tightened with a warning on stderr.
/// Returns `false` when it does not exist and `create` is not set.
pub fn secure_dir(dir: &Path, create: bool) -> Result<bool, StateError> {
    let md = match std::fs::metadata(dir) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|err| StateError::Create {
                    path: dir.to_owned(),
                    err,
                })?;
            std::fs::metadata(dir).map_err(|err| StateError::Inspect {
                path: dir.to_owned(),
                err,
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => {
            return Err(StateError::Inspect {
                path: dir.to_owned(),
                err,
            });
        }
    };
    if !md.is_dir() {
        return Err(StateError::NotDir { path: dir.to_owned() });
    }
    owned_by_me(dir, &md)?;
    if md.mode() & 0o7777 != DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)).map_err(|err| {
            StateError::Inspect {
                path: dir.to_owned(),
                err,
            }
        })?;
        warn_repaired(dir, md.mode(), DIR_MODE);
    }
    Ok(true)
}

fn owned_by_me(path: &Path, md: &std::fs::Metadata) -> Result<(), StateError> {
    let me = me();
    if md.uid() == 0 && me != 0 {
        return Err(StateError::RootOwned {
            path: path.to_owned(),
            me,
        });
    }
    if md.uid() != me {
        return Err(StateError::ForeignOwner {
            path: path.to_owned(),
            owner: md.uid(),
            me,
        });
    }
    Ok(())
}

fn warn_repaired(path: &Path, was: u32, now: u32) {
    eprintln!(
        "fimd: warning: {} was mode {:04o}: other users could read it (every watched path and hash, or \
         the key); set to {now:04o}",
        path.display(),
        was & 0o7777
    );
}

/// Judges what is at the database path `db` and its SQLite companion files, without following
/// symlinks: a missing database is `Missing`; a symlink (dangling or not), a FIFO, socket,
/// device or directory, an empty file (unless its WAL holds the data), or a file of another
/// user is refused as `Tampered`/`ForeignOwner`; a private regular file is `Usable`. Looser
/// modes are tightened to 0600 with a warning.
pub fn inspect_db(db: &Path) -> Result<DbState, StateError> {
    let state = inspect_file(db, true)?;
    for suffix in SQLITE_COMPANIONS {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        inspect_file(Path::new(&p), false)?;
    }
    Ok(state)
}

fn inspect_file(path: &Path, is_db: bool) -> Result<DbState, StateError> {
    let tampered = |what: String| StateError::Tampered {
        path: path.to_owned(),
        what,
    };
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DbState::Missing),
        Err(err) => {
            return Err(StateError::Inspect {
                path: path.to_owned(),
                err,
            });
        }
    };
    let kind = FileKind::from_mode(md.mode());
    let name = if is_db { "" } else { "its companion file " };
    match kind {
        FileKind::Regular => {}
        FileKind::Symlink => {
            let target = std::fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
            let dangling = if std::fs::metadata(path).is_err() {
                " (dangling)"
            } else {
                ""
            };
            return Err(tampered(format!(
                "{name}is a symbolic link to {target}{dangling}; fimd never follows one there"
            )));
        }
        other => {
            return Err(tampered(format!(
                "{name}is a {}, not a regular file",
                other.as_str().replace('_', " ")
            )));
        }
    }
    owned_by_me(path, &md)?;
    if is_db && md.len() == 0 {
        // SQLite leaves the main file empty until the first checkpoint: a committed baseline can
        // live in the WAL alone after a crash. An empty file without one holds nothing.
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        if !std::fs::symlink_metadata(&wal).is_ok_and(|m| m.is_file() && m.len() > 0) {
            return Err(tampered(
                "is empty (0 bytes, and no write-ahead log): a sealed baseline never is, so it was \
                 truncated or replaced"
                    .into(),
            ));
        }
    }
    if md.mode() & 0o777 != FILE_MODE {
        // Through a descriptor opened without following a symlink, so the mode set is this
        // file's even if the name changes meanwhile.
        let f = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|err| StateError::Inspect {
                path: path.to_owned(),
                err,
            })?;
        rustix::fs::fchmod(f.as_fd(), rustix::fs::Mode::from_raw_mode(FILE_MODE)).map_err(|e| {
            StateError::Inspect {
                path: path.to_owned(),
                err: e.into(),
            }
        })?;
        warn_repaired(path, md.mode(), FILE_MODE);
    }
    Ok(DbState::Usable)
}

/// Creates an empty database file, mode 0600, failing if anything (a symlink included) is
/// already there: SQLite then opens it, and gives its `-wal` and `-shm` the same mode.
pub fn create_db(db: &Path) -> Result<(), StateError> {
    File::options()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(db)
        .map(drop)
        .map_err(|err| StateError::CreateDb {
            path: db.to_owned(),
            err,
        })
}
