//! The baseline's HMAC key: 32 random bytes in a 0600 file, created once.
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit};
use sha2::Sha256;

pub type Sealer = Hmac<Sha256>;

pub const KEY_FILE: &str = "hmac.key";

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
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => Key::create(&path),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(denied(path)),
            Err(err) => Err(KeyError::Read { path, err }),
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
                let bytes = std::fs::read(&path).map_err(|err| {
                    if err.kind() == std::io::ErrorKind::PermissionDenied {
                        denied(path.clone())
                    } else {
                        KeyError::Read {
                            path: path.clone(),
                            err,
                        }
                    }
                })?;
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
