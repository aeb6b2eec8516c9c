//! What the configuration says of a path: its policy and whether its watch rotates. Read by
//! every part of the daemon; holds no state of its own beyond the settings.
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::compare::Mode;
use crate::config::{Policy, Settings};

/// The running configuration and the comparison mode of the baseline.
pub struct Rules {
    pub settings: Settings,
    pub mode: Mode,
}

impl Rules {
    /// The policy of the watch covering `path`; `Static` outside every watch.
    pub fn policy(&self, path: &[u8]) -> Policy {
        self.settings
            .watch_for(Path::new(std::ffi::OsStr::from_bytes(path)))
            .map_or(Policy::Static, |w| w.policy)
    }

    /// Whether `path` lies in an append-only watch with rotated names configured.
    pub fn rotates(&self, path: &[u8]) -> bool {
        self.settings
            .watch_for(Path::new(std::ffi::OsStr::from_bytes(path)))
            .is_some_and(|w| w.policy == Policy::AppendOnly && !w.rotate.is_empty())
    }

    /// Whether `path` is an append-only log itself, not one of its rotated names.
    pub fn is_live_log(&self, path: &[u8]) -> bool {
        self.settings
            .watch_for(Path::new(std::ffi::OsStr::from_bytes(path)))
            .is_some_and(|w| w.policy == Policy::AppendOnly && !w.rotate.matches(name_of(path)))
    }
}

/// The last component of `path`.
pub fn name_of(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

/// The directory holding `path` (`/` for a top-level path); `None` for a bare name.
pub fn parent_of(path: &[u8]) -> Option<&[u8]> {
    let i = path.iter().rposition(|&b| b == b'/')?;
    Some(if i == 0 { b"/" } else { &path[..i] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parents_by_bytes() {
        assert_eq!(name_of(b"/var/log/app.log"), b"app.log");
        assert_eq!(name_of(b"app.log"), b"app.log");
        assert_eq!(name_of(b"/a/\xff\xfe"), b"\xff\xfe");
        assert_eq!(parent_of(b"/var/log/app.log"), Some(&b"/var/log"[..]));
        assert_eq!(parent_of(b"/etc"), Some(&b"/"[..]));
        assert_eq!(parent_of(b"etc"), None);
    }
}
