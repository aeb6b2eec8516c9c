//! Signals: what each asks of the daemon, as one control enum (as Vector's `SignalTo` does).
//! The streams are made once and kept across reloads, so a signal arriving while the
//! configuration is being replaced is not lost.
use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGTERM or SIGINT: deliver what is queued (bounded by the shutdown flush) and stop.
    Shutdown,
    /// SIGHUP: load the configuration and baseline again and take them over if they work.
    Reload,
}

/// The process's signal streams.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers. Errors: the runtime could not register a signal (no reactor).
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal and says what it asks.
    pub async fn recv(&mut self) -> Control {
        tokio::select! {
            _ = self.hup.recv() => Control::Reload,
            _ = self.term.recv() => Control::Shutdown,
            _ = self.int.recv() => Control::Shutdown,
        }
    }
}
