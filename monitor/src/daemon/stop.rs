//! SIGTERM always stops the daemon (issue 12 §2). The loop obeys SIGTERM and SIGINT between
//! two wakeups, and shutdown flushes the sinks for at most `SHUTDOWN_FLUSH`; a call stuck in
//! the kernel (a read of a file on a hung mount inside a scan) could still hold the loop. This
//! watchdog, a task of its own on the runtime, ends the process `grace` after the first such
//! signal if the daemon has not stopped by then, naming the threads still blocked in the
//! kernel and the files they wait on.
//!
//! What exit cannot do: a thread waiting uninterruptibly (D state) ends only when its call
//! returns, so the process is reaped only then. A FUSE request the filesystem's server has
//! read is waited out that way whatever the signal (fs/fuse/dev.c `request_wait_answer`:
//! "Either request is already in userspace, or it was forced. Wait it out."), as is the
//! inode lock (`i_rwsem`) of a file whose writer is stuck.
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

/// Exit status of a stop forced by the watchdog: an error, since queued alerts and state
/// writes may not have been delivered.
pub const FORCED_EXIT: i32 = 2;

/// Spawns the watchdog on the current runtime, and blocks SIGTERM, SIGINT and SIGHUP in the
/// calling thread (the one that runs the loop) and so in every thread it starts from now on
/// (scans, hashing, barriers inherit the mask): a process-directed signal goes to a thread
/// that does not block it (signal(7)), here the runtime's workers, which never wait on files.
/// Without this the kernel may pick the loop's thread; a thread inside a FUSE request the
/// server has read does not return to user space, so the handler would never run and neither
/// the loop nor the watchdog would learn of the signal. Call it on the loop's thread after
/// the runtime is built. Errors: a signal cannot be registered.
pub fn watchdog(grace: Duration) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    block_control_signals()?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tokio::time::sleep(grace).await;
        let blocked = blocked_threads();
        let detail = if blocked.is_empty() {
            String::new()
        } else {
            format!(
                "; {} threads are blocked in the kernel ({}): the process is reaped only once those \
                 calls return (a hung FUSE mount can be aborted with umount -f or \
                 /sys/fs/fuse/connections/ID/abort)",
                blocked.len(),
                blocked.join(", ")
            )
        };
        eprintln!(
            "fimd run: did not stop within {} s of the signal (a call on a file or mount is stuck in \
             the kernel): exiting now; undelivered alerts and state writes are lost, and the next \
             start compares everything again{detail}",
            grace.as_secs()
        );
        std::process::exit(FORCED_EXIT);
    });
    Ok(())
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (pthread_sigmask(3)).
fn block_control_signals() -> std::io::Result<()> {
    // SAFETY: a zeroed sigset_t is initialised by sigemptyset before use; the calls only
    // read and write the set and this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
            0 => Ok(()),
            e => Err(std::io::Error::from_raw_os_error(e)),
        }
    }
}

/// This process's threads blocked in a call on a file: in uninterruptible sleep (D state), or
/// asleep inside one of the file calls the scan makes (a FUSE request waits interruptibly
/// until a fatal signal, then uninterruptibly). Each as `name in wchan on PATH`: PATH is what
/// the descriptor in the call's first argument names (the file read, the directory listed or
/// looked in). Reads /proc/self only (proc(5): task/TID/stat, wchan, syscall; fd/N), which
/// never blocks on a filesystem.
fn blocked_threads() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
        let stat = read("stat");
        // Field 3, after the parenthesised name (which may hold spaces and parentheses).
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let state = rest.chars().next().unwrap_or('?');
        if state != 'D' && state != 'S' {
            continue;
        }
        let call = file_call(&read("syscall"));
        if state == 'S' && call.is_none() {
            continue;
        }
        let name = read("comm").trim().to_string();
        let wchan = read("wchan").trim().to_string();
        let mut text = format!("{name} in {}", if wchan.is_empty() { "?" } else { &wchan });
        if let Some(Some(path)) = call {
            text.push_str(&format!(" on {path}"));
        }
        out.push(text);
    }
    out.sort();
    out
}

/// Whether a thread's call (task/TID/syscall: "NR ARG0 ..." in hex) is one of the calls the
/// scan makes on a descriptor (reads, listings, stats and opens relative to a directory,
/// extended attributes, flags); if so, the path its first argument's descriptor names.
fn file_call(syscall: &str) -> Option<Option<String>> {
    let mut fields = syscall.split_whitespace();
    let nr: libc::c_long = fields.next()?.parse().ok()?;
    let fd_first = [
        libc::SYS_read,
        libc::SYS_pread64,
        libc::SYS_readv,
        libc::SYS_preadv,
        libc::SYS_preadv2,
        libc::SYS_getdents64,
        libc::SYS_lseek,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_fgetxattr,
        libc::SYS_flistxattr,
        libc::SYS_ioctl,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
    ];
    if !fd_first.contains(&nr) {
        return None;
    }
    let path = fields.next().and_then(|a| {
        let fd = u64::from_str_radix(a.trim_start_matches("0x"), 16).ok()? as i64 as i32;
        // AT_FDCWD and the like name no descriptor.
        if fd < 0 {
            return None;
        }
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        Some(crate::output::path::path_text(target.as_os_str().as_encoded_bytes()).0)
    });
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_call_names_the_file_of_a_blocked_read() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(f.as_file());
        let line = format!(
            "{} 0x{fd:x} 0x7ffd0000 0x1000 0x0 0x0 0x0 0x7ffd 0x7f00",
            libc::SYS_pread64
        );
        assert_eq!(file_call(&line), Some(Some(f.path().display().to_string())));
        // A stat relative to AT_FDCWD: a file call, no descriptor to name.
        let line = format!(
            "{} 0xffffffffffffff9c 0x0 0x0 0x0 0x0 0x0 0x0 0x0",
            libc::SYS_newfstatat
        );
        assert_eq!(file_call(&line), Some(None));
        // Not a call on a file, a running thread: not one.
        let line = format!("{} 0x{fd:x} 0x0 0x0 0x0 0x0 0x0 0x0 0x0", libc::SYS_futex);
        assert_eq!(file_call(&line), None);
        assert_eq!(file_call("running"), None);
    }
}
