//! The label values of fimd's metrics: small fixed sets, each derived from the enum it counts
//! (`compare::Action`, `compare::Kind`, [`RescanReason`]) so a new variant gets its series
//! from the start and no label can carry a path, pid or anything else that varies with what is
//! watched.
use crate::compare::{Action, Kind};

/// Sensors the daemon can attach; both series exist from the start, so "none attached" is a
/// visible 0 rather than a missing series.
pub const SENSORS: [&str; 2] = ["ebpf", "fanotify"];
/// Every `compare::Action`, as labels (`fim_integrity_changes_total{action}`).
pub const CHANGE_ACTIONS: [&str; Action::ALL.len()] = {
    let mut out = [""; Action::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = Action::ALL[i].as_str();
        i += 1;
    }
    out
};

/// Every `compare::Kind`, as labels (`fim_integrity_changes_total{kind}`).
pub const CHANGE_KINDS: [&str; Kind::ALL.len()] = [Kind::ALL[0].as_str(), Kind::ALL[1].as_str()];

/// Why the daemon compared everything again (`fim_rescans_total{reason}`, and the evidence
/// record's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescanReason {
    /// The daemon started.
    Start,
    /// The kernel lost records: what they said is unknown.
    Loss,
    /// The configuration was reloaded.
    Reload,
    /// `schedule.full_check` came round.
    Scheduled,
    /// A watch root's identity changed (moved, deleted, recreated, replaced).
    Root,
}

impl RescanReason {
    pub const ALL: [RescanReason; 5] = [
        RescanReason::Start,
        RescanReason::Loss,
        RescanReason::Reload,
        RescanReason::Scheduled,
        RescanReason::Root,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RescanReason::Start => "start",
            RescanReason::Loss => "loss",
            RescanReason::Reload => "reload",
            RescanReason::Scheduled => "scheduled",
            RescanReason::Root => "root",
        }
    }
}

/// Every [`RescanReason`], as labels.
pub const RESCAN_REASONS: [&str; RescanReason::ALL.len()] = {
    let mut out = [""; RescanReason::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = RescanReason::ALL[i].as_str();
        i += 1;
    }
    out
};

/// Operations run off the event loop with a deadline: the write barrier before a rehash, the
/// /proc maps look, rehashing large files in the pool, the stat of a mount point found in
/// a watch, and every call below a network or FUSE mount (`scan::guarded`).
pub const BLOCKING_OPERATIONS: [&str; 5] = ["barrier", "proc_maps", "rehash", "mount", "hung_mount"];

/// Outcomes of a record for a directory (`fim_directory_listings_total{outcome}`): `listed`
/// (its names read), `paced` (within its pace: folded into its next listing; `daemon::pace`).
pub const LISTING_OUTCOMES: [&str; 2] = ["listed", "paced"];
