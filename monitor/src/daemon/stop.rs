//! SIGTERM always stops the daemon (issue 12 §2). The loop obeys SIGTERM and SIGINT between
//! two wakeups, and shutdown flushes the sinks for at most `SHUTDOWN_FLUSH`; a call stuck in
//! the kernel (a read of a file on a hung mount inside a scan) could still hold the loop. This
//! watchdog, a task of its own on the runtime, ends the process `grace` after the first such
//! signal if the daemon has not stopped by then.
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

/// Exit status of a stop forced by the watchdog: an error, since queued alerts and state
/// writes may not have been delivered.
pub const FORCED_EXIT: i32 = 2;

/// Spawns the watchdog on the current runtime. Errors: a signal cannot be registered.
pub fn watchdog(grace: Duration) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tokio::time::sleep(grace).await;
        eprintln!(
            "fimd run: did not stop within {} s of the signal (a call on a file or mount is stuck in \
             the kernel): exiting now; undelivered alerts and state writes are lost, and the next \
             start compares everything again",
            grace.as_secs()
        );
        std::process::exit(FORCED_EXIT);
    });
    Ok(())
}
