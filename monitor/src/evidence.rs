//! The evidence record of one full comparison (PCI DSS 10.2: an audit trail of integrity
//! checks), written to the state store by `check` and the daemon and read back by
//! `fimd report`.
use std::time::Duration;

use crate::config::Settings;

/// What an auditor reads back with `fimd report`: one full comparison.
pub struct Evidence<'a> {
    pub kind: &'a str,
    pub started_at: &'a str,
    pub took: Duration,
    pub files: u64,
    pub differences: usize,
    pub events: usize,
    pub problems: usize,
    pub seal: &'a str,
    /// The baseline's generation (see `Baseline::generation`).
    pub generation: u64,
}

impl Evidence<'_> {
    pub fn to_json(&self, settings: &Settings) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind,
            "started": self.started_at,
            "finished": crate::output::alert::now_rfc3339(),
            "duration_seconds": self.took.as_secs_f64(),
            "host": crate::output::alert::hostname(),
            "files_compared": self.files,
            "differences": self.differences,
            "allowed_events": self.events,
            "not_compared": self.problems,
            "baseline_seal": self.seal,
            "baseline_generation": self.generation,
            "configuration": settings.source.display().to_string(),
            "fimd_version": env!("CARGO_PKG_VERSION"),
        })
    }
}
