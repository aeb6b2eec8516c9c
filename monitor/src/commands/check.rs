//! `fimd check` (the host against its baseline) and `fimd verify` (a read-only snapshot or
//! mounted image against a baseline, writing nothing to it).
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use super::{
    EXIT_CLEAN, EXIT_DIFFERENCES, EXIT_ERROR, coverage_problem, exit, host_mode, open_baseline, progress,
    report_problems,
};
use crate::append::review;
use crate::baseline::entry::Entry;
use crate::compare::{self, Comparison, Kind, Mode};
use crate::config::Policy;
use crate::config::Settings;
use crate::output::alert::{BaselineRef, Origin, Scan, hostname, human_line};
use crate::output::dispatch::Dispatcher;
use crate::output::typed::Alert;
use crate::scan;

pub enum Target<'a> {
    /// The host's own tree.
    Host,
    /// A tree mounted at this directory standing for the host's `/`.
    Image(&'a Path),
}

/// Runs the comparison in a child process and exits by what it found (see `in_child`).
pub fn run(settings: &Settings, target: Target<'_>, json: bool) -> anyhow::Result<ExitCode> {
    Ok(exit(in_child(|| {
        match compare_and_report(settings, target, json) {
            Ok(code) => code,
            Err(e) => {
                // As the command line says an error (`cli::main`), from the child.
                eprintln!("fimd: error: {e:#}");
                EXIT_ERROR
            }
        }
    })))
}

/// Runs `f` in a forked child and returns its exit status (0, 1, 2) as soon as the child
/// says it, without waiting for the child to end. A thread stuck in a request to a FUSE or NFS
/// server that stopped answering cannot end, SIGKILL included, until the server answers
/// (fs/fuse/dev.c `request_wait_answer`), and a process with such a thread cannot be reaped:
/// the walk gives up on it after its deadline (`scan::guarded`) and reports what it could not
/// compare, but only a process that never asked can exit. So the child does the comparison,
/// prints it, lets go of the standard streams (a stuck child holds no pipe of the caller's
/// open), writes its status to a pipe and exits; the parent relays that status. A stuck child
/// ends when the server answers or the mount is aborted, and init reaps it. The child dies
/// with the parent (`PR_SET_PDEATHSIG`). Called before any thread is started.
fn in_child(f: impl FnOnce() -> u8) -> u8 {
    let (mut read_end, mut write_end) = match std::io::pipe() {
        Ok(p) => p,
        // No pipe: no isolation, the comparison still runs.
        Err(_) => return f(),
    };
    let parent = rustix::process::getpid();
    // SAFETY: fork(2); the child runs the command as the process would have (glibc's fork
    // resets the allocator's locks in the child; no other thread exists yet).
    match unsafe { libc::fork() } {
        -1 => f(),
        0 => {
            drop(read_end);
            // SAFETY: prctl(2) with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
            if rustix::process::getppid() != Some(parent) {
                // SAFETY: _exit(2).
                unsafe { libc::_exit(i32::from(EXIT_ERROR)) };
            }
            let code = f();
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            if let Ok(null) =
                rustix::fs::open("/dev/null", rustix::fs::OFlags::RDWR, rustix::fs::Mode::empty())
            {
                for fd in 0..=2 {
                    // SAFETY: dup2(2) over the standard streams, which nothing uses after this.
                    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
                }
            }
            let _ = write_end.write_all(&[code]);
            // SAFETY: _exit(2): nothing left to flush; a thread stuck on a mount is not joined.
            unsafe { libc::_exit(i32::from(code)) }
        }
        child => {
            drop(write_end);
            let mut code = [EXIT_ERROR];
            // read_exact: retried when a signal interrupts it; end of file when the child died.
            let said = std::io::Read::read_exact(&mut read_end, &mut code);
            let (reaped, status) = reap(child, CHILD_EXIT_WAIT);
            match said {
                Ok(()) => code[0],
                // Died without saying (killed, crashed): an error.
                _ => {
                    if reaped && libc::WIFSIGNALED(status) {
                        eprintln!(
                            "fimd: error: the comparison's process was killed by signal {}",
                            libc::WTERMSIG(status)
                        );
                    }
                    EXIT_ERROR
                }
            }
        }
    }
}

/// How long the parent waits for the child to end once it said its status. It is ending then
/// (`_exit`), so its CPU time and peak memory count as the command's (getrusage(2),
/// RUSAGE_CHILDREN: only a reaped child counts); one stuck on a mount is left to init.
const CHILD_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits up to `wait` for `child` to end: whether it was reaped, and its wait status.
fn reap(child: libc::pid_t, wait: std::time::Duration) -> (bool, libc::c_int) {
    let deadline = std::time::Instant::now() + wait;
    let mut status = 0;
    loop {
        // SAFETY: waitpid(2) on our own child; WNOHANG never blocks.
        match unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } {
            0 if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            0 => return (false, status),
            pid => return (pid == child, status),
        }
    }
}

/// The comparison itself: prints, sends and records what it found; returns the exit status.
fn compare_and_report(settings: &Settings, target: Target<'_>, json: bool) -> anyhow::Result<u8> {
    let (store, key, baseline) = open_baseline(settings)?;
    let coverage = coverage_problem(settings, &baseline);
    let judged_by = Some(BaselineRef {
        generation: baseline.generation,
        seal: baseline.seal.clone(),
    });
    let (root, mode, origin) = match &target {
        Target::Host => (
            Path::new("/"),
            host_mode(&baseline),
            Origin {
                host: hostname(),
                scan: Scan::Check,
                root: None,
                baseline: judged_by,
            },
        ),
        Target::Image(dir) => {
            if !dir.is_dir() {
                anyhow::bail!(
                    "--root {}: not a directory; mount the image or snapshot there first",
                    dir.display()
                );
            }
            (
                *dir,
                Mode::Portable,
                Origin {
                    host: hostname(),
                    scan: Scan::Verify,
                    root: Some(dir.display().to_string()),
                    baseline: judged_by,
                },
            )
        }
    };
    let started = Instant::now();
    let started_at = crate::output::alert::now_rfc3339();
    let append_base = append_only_entries(settings, &baseline.entries);
    let baseline_seal = baseline.seal.clone();
    let mut scan = scan::start(settings, root);
    let bar = progress(&scan, origin.scan.as_str());
    let mut cmp = compare::compare(settings, &baseline.entries, &mut scan, mode, |_| {});
    cmp.problems.extend(coverage);
    drop(scan);
    bar.finish_and_clear();
    let ctx = review::Context {
        settings,
        root,
        mode,
        base: &append_base,
        retired: &baseline.retired,
        checkpoints: &HashMap::new(),
    };
    let reviewed = review::review(&ctx, std::mem::take(&mut cmp.changes));
    cmp.changes = reviewed.changes;
    // On the host, what the policy allowed advances the baseline (an image is only read).
    // Not being able to record it never hides a difference: the run reports what it found and
    // exits by what it found, and says on stderr what it could not write.
    if matches!(target, Target::Host)
        && !reviewed.ledger.is_empty()
        && let Err(e) = store.ledger_put(&key, &reviewed.ledger)
    {
        eprintln!(
            "fimd check: warning: cannot record what the append-only policy allowed ({e}); the next check \
             verifies those files again"
        );
    }

    print_changes(&cmp, &origin, json)?;
    // The periodic check also feeds the configured sinks (a SIEM); verify reads someone else's
    // image. Stdout is where --json already prints.
    if origin.scan == Scan::Check {
        send_to_sinks(settings, &store, &key, &cmp, &origin)?;
    }
    report_problems(&cmp.problems);
    super::report_metadata_only(origin.scan.as_str(), settings, &cmp.metadata_only);
    if matches!(target, Target::Host) {
        let record = super::Evidence {
            kind: "check",
            started_at: &started_at,
            took: started.elapsed(),
            files: cmp.scanned,
            differences: alerts(&cmp),
            events: cmp.changes.len() - alerts(&cmp),
            problems: cmp.problems.len(),
            seal: &baseline_seal,
            generation: baseline.generation,
        }
        .to_json(settings);
        if let Err(e) = store.evidence_append(&key, &record) {
            eprintln!("fimd check: warning: this comparison is not in the evidence log: {e}");
        }
    }
    eprintln!(
        "fimd {}: {} entries compared with baseline generation {} in {:.2} s: {} differences, {} allowed by \
         policy, {} warnings",
        origin.scan.as_str(),
        cmp.scanned,
        baseline.generation,
        started.elapsed().as_secs_f64(),
        alerts(&cmp),
        cmp.changes.len() - alerts(&cmp),
        cmp.problems.len()
    );
    Ok(status(&cmp))
}

/// Sends to the configured sinks what this check found, each difference once
/// (`crate::alerted`, shared with the daemon): a difference already alerted, by an earlier
/// check or by `fimd run`, is held back and counted on stderr; stdout still lists everything.
/// Differences that are gone are forgotten, so one that comes back is sent again. Events (the
/// baseline advances past them) and files that could not be compared are sent as found.
/// Recording what was sent is best effort, and skipped when a sink dropped documents, so the
/// next check sends them again rather than holding back what no sink received.
fn send_to_sinks(
    settings: &Settings,
    store: &crate::baseline::store::Store,
    key: &crate::baseline::seal::Key,
    cmp: &Comparison,
    origin: &Origin,
) -> anyhow::Result<()> {
    let mut sinks = settings.alerts.clone();
    if matches!(sinks.jsonl, Some(crate::config::JsonlTarget::Stdout)) {
        sinks.jsonl = None;
    }
    let sent_before = match store.alerted() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("fimd check: warning: cannot read which differences were alerted ({e}); sending all");
            Default::default()
        }
    };
    let mut alerted = crate::alerted::Alerted::new(sent_before);
    let mut new = Vec::new();
    let mut held_back = 0usize;
    let mut docs = Vec::new();
    for c in &cmp.changes {
        if c.kind == Kind::Alert {
            let token = crate::alerted::token(key, c);
            if !alerted.first(c.path(), token.clone()) {
                held_back += 1;
                continue;
            }
            new.push((c.path().to_vec(), token));
        }
        docs.push(Alert::change(c, origin));
    }
    // A file the check could not compare is evidence too: the SIEM sees it, not just stderr.
    docs.extend(cmp.problems.iter().map(|p| Alert::problem(p, origin)));
    let mut delivered = true;
    if sinks.jsonl.is_some() || sinks.syslog.is_some() || sinks.webhook.is_some() {
        let mut out = Dispatcher::start(&sinks, None)?;
        for d in &docs {
            out.send_alert(d);
        }
        let end = out.shutdown(std::time::Duration::from_secs(30));
        if end.dropped > 0 {
            delivered = false;
            eprintln!(
                "fimd check: warning: not every alert reached the configured sinks ({} dropped); the next check \
                 sends them again",
                end.dropped
            );
        }
    } else {
        // No sink: nothing was sent, so nothing is recorded as alerted.
        new.clear();
    }
    if held_back > 0 {
        eprintln!(
            "fimd check: {held_back} differences already alerted were not sent to the sinks again (listed above)"
        );
    }
    // What this check found outstanding is all that stays alerted: a difference that is gone
    // and comes back is sent again.
    let keep = alerted.outstanding_tokens();
    if !delivered {
        new.clear();
    }
    let recorded = store.alerted_retain(&keep).and_then(|()| store.alerted_put(&new));
    if let Err(e) = recorded {
        eprintln!("fimd check: warning: cannot record which differences were alerted: {e}");
    }
    Ok(())
}

fn print_changes(cmp: &Comparison, origin: &Origin, json: bool) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for c in &cmp.changes {
        if json {
            serde_json::to_writer(&mut out, &Alert::change(c, origin))?;
            out.write_all(b"\n")?;
        } else {
            writeln!(out, "{}", human_line(c))?;
        }
    }
    out.flush()?;
    Ok(())
}

fn alerts(cmp: &Comparison) -> usize {
    cmp.changes.iter().filter(|c| c.kind == Kind::Alert).count()
}

/// The baseline entries under append-only watches, by path: what the policy judges against.
pub(crate) fn append_only_entries(
    settings: &crate::config::Settings,
    entries: &[Entry],
) -> HashMap<Vec<u8>, Entry> {
    use std::os::unix::ffi::OsStrExt;
    if !settings.watches.iter().any(|w| w.policy == Policy::AppendOnly) {
        return HashMap::new();
    }
    entries
        .iter()
        .filter(|e| {
            settings
                .watch_for(Path::new(std::ffi::OsStr::from_bytes(&e.path)))
                .is_some_and(|w| w.policy == Policy::AppendOnly)
        })
        .map(|e| (e.path.clone(), e.clone()))
        .collect()
}

/// Differences win; otherwise files that could not be compared make the run an error.
fn status(cmp: &Comparison) -> u8 {
    if alerts(cmp) > 0 {
        EXIT_DIFFERENCES
    } else if !cmp.problems.is_empty() {
        EXIT_ERROR
    } else {
        EXIT_CLEAN
    }
}

#[cfg(test)]
mod tests {
    use super::reap;
    use std::time::{Duration, Instant};

    /// A child that sleeps `ms` then exits with `code`, forked without running any Rust in it.
    fn child(ms: u32, code: i32) -> libc::pid_t {
        // SAFETY: fork(2); the child only calls usleep(3) and _exit(2), both async-signal-safe.
        match unsafe { libc::fork() } {
            0 => unsafe {
                libc::usleep(ms * 1000);
                libc::_exit(code)
            },
            pid => {
                assert!(pid > 0, "fork failed");
                pid
            }
        }
    }

    #[test]
    fn a_child_that_is_ending_is_reaped_and_one_that_is_not_is_left() {
        // Ending a little after it said its status: waited for, so its usage counts.
        let (reaped, status) = reap(child(50, 3), Duration::from_secs(2));
        assert!(reaped);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3);

        // Not ending (stuck): given up on at the deadline, then reaped here.
        let pid = child(1000, 0);
        let started = Instant::now();
        let (reaped, _) = reap(pid, Duration::from_millis(100));
        assert!(!reaped);
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        assert!(reap(pid, Duration::from_secs(5)).0);
    }
}
