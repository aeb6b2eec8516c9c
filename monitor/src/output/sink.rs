//! What a sink reports when it cannot start. The `[alerts]` settings it starts from are
//! configuration: they live in [`crate::config::alerts`] and are re-exported here for the callers
//! that name them `output::sink`.
pub use crate::config::alerts::*;

/// Why a sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write alerts to {target}: {err}")]
    Io { target: String, err: std::io::Error },
    #[error("cannot start the {sink} alert sink thread: {err}")]
    Thread { sink: &'static str, err: std::io::Error },
}
