//! `fimd run`: the realtime daemon, which lives in `crate::daemon`. This is its command-line
//! face: it starts the daemon with the loaded configuration and returns its exit status.
use std::process::ExitCode;

use super::{EXIT_CLEAN, exit};
use crate::config::Settings;

/// Serves until SIGTERM or SIGINT (reloading on SIGHUP); exit status 0 after a clean stop.
/// Errors: those of `daemon::run`.
pub fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    crate::daemon::run(settings)?;
    Ok(exit(EXIT_CLEAN))
}
