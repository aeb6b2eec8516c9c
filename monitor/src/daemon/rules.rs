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
        self.settings.policy_of(path)
    }

    /// Whether `path` lies in an append-only watch whose logs rotate (`Watch::rotates`).
    pub fn rotates(&self, path: &[u8]) -> bool {
        self.settings
            .watch_for(Path::new(std::ffi::OsStr::from_bytes(path)))
            .is_some_and(|w| w.rotates())
    }

    /// Whether `path` is an append-only log itself, not one of its rotated names.
    pub fn is_live_log(&self, path: &[u8]) -> bool {
        self.settings
            .watch_for(Path::new(std::ffi::OsStr::from_bytes(path)))
            .is_some_and(|w| w.policy == Policy::AppendOnly && !w.rotate.matches(name_of(path)))
    }
}

pub use crate::paths::{name_of, parent_of};
