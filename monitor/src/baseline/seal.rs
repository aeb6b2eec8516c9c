//! The baseline's HMAC key: 32 random bytes in a 0600 file, created once.
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit};
use sha2::Sha256;

pub type Sealer = Hmac<Sha256>;

pub const KEY_FILE: &str = "hmac.key";

/// The largest key file fimd reads (bytes). Its own keys are 32 bytes (HMAC-SHA256's block is 64:
/// RFC 2104 hashes longer keys anyway); the bound keeps a planted huge file from being read.
pub const MAX_KEY_BYTES: u64 = 4096;

/// What a non-regular file type is, for messages.
fn type_name(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "cannot read the baseline key {path}: {err}; restore it, or rebuild the baseline with `fimd init`"
    )]
    Read { path: PathBuf, err: std::io::Error },
    /// The key is there but this process may not read it: a missing privilege, not a damaged
    /// baseline.
    #[error(
        "cannot read the baseline's HMAC key {path}: permission denied (fimd runs as uid {uid}); run fimd \
         as root, or give it CAP_DAC_READ_SEARCH as the systemd unit does; the baseline itself is not damaged"
    )]
    Denied { path: PathBuf, uid: u32 },
    #[error("cannot create the baseline key {path}: {err}")]
    Create { path: PathBuf, err: std::io::Error },
    #[error("the baseline key {path} must hold 32 bytes or more, it holds {len}")]
    Short { path: PathBuf, len: usize },
    /// Not a regular file: reading a FIFO or device could block forever, a symlink could point
    /// anywhere.
    #[error(
        "the baseline key {path} is {what}, not a regular file; fimd does not open it. Restore the key \
         file (32 random bytes, mode 0600) or point hmac_key at it"
    )]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "the baseline key {path} holds {len} bytes, more than the {MAX_KEY_BYTES} a key may: it is not a key \
         fimd wrote; restore the key file"
    )]
    TooLarge { path: PathBuf, len: u64 },
    #[error(
        "the baseline key {path} is readable by group or others (mode {mode:o}) and cannot be made \
         private ({err}); run `chmod 600 {path}`"
    )]
    Exposed {
        path: PathBuf,
        mode: u32,
        err: std::io::Error,
    },
    #[error(
        "the baseline key {path} belongs to uid {owner}, not to uid {me} that runs fimd: that user could \
         reseal a forged baseline; check who did this, then restore the key and baseline from a trusted copy"
    )]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
}

pub struct Key {
    bytes: Vec<u8>,
}

impl Key {
    /// The key at `configured`, or `state_dir/hmac.key`; created (0600) when `create` is set and
    /// it does not exist yet.
    pub fn load(state_dir: &Path, configured: Option<&Path>, create: bool) -> Result<Key, KeyError> {
        let path = configured.map_or_else(|| state_dir.join(KEY_FILE), Path::to_owned);
        let denied = |path: PathBuf| KeyError::Denied {
            path,
            uid: rustix::process::geteuid().as_raw(),
        };
        // lstat: the key's own type and size are judged before anything opens it.
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => Key::create(&path),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(denied(path)),
            Err(err) => Err(KeyError::Read { path, err }),
            Ok(md) if !md.file_type().is_file() => Err(KeyError::NotAFile {
                what: type_name(md.file_type()),
                path,
            }),
            Ok(md) if md.len() > MAX_KEY_BYTES => Err(KeyError::TooLarge { path, len: md.len() }),
            Ok(md) => {
                use std::os::unix::fs::MetadataExt;
                let me = rustix::process::geteuid().as_raw();
                // Root's key read by another user: a missing privilege, not tampering.
                if md.uid() == 0 && me != 0 {
                    return Err(denied(path));
                }
                if md.uid() != me {
                    return Err(KeyError::ForeignOwner {
                        path,
                        owner: md.uid(),
                        me,
                    });
                }
                let mode = md.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                        |err| KeyError::Exposed {
                            path: path.clone(),
                            mode,
                            err,
                        },
                    )?;
                    eprintln!(
                        "fimd: warning: the baseline key {} was mode {mode:04o}: other users could read it, and \
                         whoever read it can reseal a forged baseline; set to 0600. If that may have \
                         happened, make a new key and baseline (`fimd init`) after checking the host",
                        path.display()
                    );
                }
                let bytes = read_key(&path).map_err(|err| {
                    if err.kind() == std::io::ErrorKind::PermissionDenied {
                        denied(path.clone())
                    } else {
                        KeyError::Read {
                            path: path.clone(),
                            err,
                        }
                    }
                })?;
                if bytes.len() as u64 > MAX_KEY_BYTES {
                    return Err(KeyError::TooLarge {
                        path,
                        len: bytes.len() as u64,
                    });
                }
                if bytes.len() < 32 {
                    return Err(KeyError::Short {
                        path,
                        len: bytes.len(),
                    });
                }
                Ok(Key { bytes })
            }
        }
    }

    fn create(path: &Path) -> Result<Key, KeyError> {
        // create_new never follows a symlink planted at the path (O_CREAT|O_EXCL).
        let err = |err| KeyError::Create {
            path: path.to_owned(),
            err,
        };
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| err(std::io::Error::other(e.to_string())))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(Key { bytes })
    }

    pub fn sealer(&self) -> Sealer {
        Sealer::new_from_slice(&self.bytes).expect("HMAC takes keys of any length")
    }
}

/// Reads at most `MAX_KEY_BYTES + 1` bytes of a key file, opened without following a symlink
/// and without blocking (a FIFO swapped in after the lstat gives EAGAIN, never a hang), after
/// checking again on the descriptor that it is a regular file.
fn read_key(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file once opened"));
    }
    let mut bytes = Vec::with_capacity(64);
    f.take(MAX_KEY_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}
