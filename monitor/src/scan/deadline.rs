//! Blocking calls with a deadline: a call that may block on a file or a mount (an `llseek` that
//! waits for a writer's inode lock, a `stat` on a hung FUSE or NFS mount, a read of `/proc`) runs
//! on one of a bounded set of worker threads, and the caller waits for it no longer than its
//! deadline. A worker still inside the call then is abandoned: counted as stuck, never joined,
//! and it returns to the set if the call ever ends. Stuck workers are bounded by the set's size,
//! so a hostile host can pin at most that many threads; once all are stuck, calls fail fast
//! with `DeadlineError::Saturated` instead of queueing.
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a call returned no result.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeadlineError {
    /// The call did not return within its deadline; its thread is abandoned (counted stuck).
    #[error("{what} did not finish within {after:?} (a file or mount is not answering); retried later")]
    TimedOut { what: &'static str, after: Duration },
    /// Every worker is busy or stuck: the call was not started.
    #[error("{what} was not started: all {workers} workers are busy or stuck on files that do not answer")]
    Saturated { what: &'static str, workers: usize },
    /// The call panicked on its worker.
    #[error("{what} failed (internal error)")]
    Panicked { what: &'static str },
}

/// A job's fate, decided once by whichever side comes first.
const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// A call, given the way to put its worker back in the idle list: done before the result is
/// sent, so a caller's next call finds the worker free.
type Job = Box<dyn FnOnce(&dyn Fn()) + Send>;

struct Inner {
    /// What the calls do, for error messages ("barrier", "/proc maps scan").
    what: &'static str,
    max_workers: usize,
    /// Senders of the idle workers, each waiting for one job.
    idle: Mutex<Vec<Sender<Job>>>,
    /// Worker threads alive: idle, running a call, or stuck in one.
    live: AtomicUsize,
    /// Workers whose caller gave up on them and whose call has not returned yet.
    stuck: AtomicUsize,
    /// Calls that ever missed their deadline.
    timed_out: AtomicU64,
    /// Calls refused because no worker was free.
    saturated: AtomicU64,
    /// The runner was dropped: workers exit once their call returns.
    closed: std::sync::atomic::AtomicBool,
}

/// A bounded set of worker threads for blocking calls with a deadline. Dropping it ends the
/// idle workers; a stuck one ends if its call ever returns.
pub struct Runner {
    inner: Arc<Inner>,
}

impl Runner {
    /// A set of at most `max_workers` threads (at least 1), started on demand and kept idle
    /// between calls; `what` names the calls in errors.
    pub fn new(what: &'static str, max_workers: usize) -> Runner {
        Runner {
            inner: Arc::new(Inner {
                what,
                max_workers: max_workers.max(1),
                idle: Mutex::new(Vec::new()),
                live: AtomicUsize::new(0),
                stuck: AtomicUsize::new(0),
                timed_out: AtomicU64::new(0),
                saturated: AtomicU64::new(0),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Runs `f` on a worker and waits at most `deadline` for its result.
    ///
    /// Errors: `TimedOut` when `f` is still running at the deadline (it goes on running, its
    /// result is dropped, and its worker counts as stuck until it returns); `Saturated` when
    /// every worker is busy or stuck (`f` is not run); `Panicked` when `f` panicked.
    pub fn run<T, F>(&self, deadline: Duration, f: F) -> Result<T, DeadlineError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let mut pending = self.start(deadline, f)?;
        match pending.rx.recv_timeout(deadline) {
            Ok(result) => result.map_err(|_| DeadlineError::Panicked { what: pending.what }),
            Err(_) => pending.give_up(),
        }
    }

    /// Starts `f` on a worker without waiting: the caller polls the returned call, which times
    /// out `deadline` from now. Errors: `Saturated` when every worker is busy or stuck.
    pub fn start<T, F>(&self, deadline: Duration, f: F) -> Result<Pending<T>, DeadlineError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = channel::<std::thread::Result<T>>();
        let state = Arc::new(AtomicU8::new(RUNNING));
        let job_state = state.clone();
        let inner = self.inner.clone();
        let job: Job = Box::new(move |idle: &dyn Fn()| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            if job_state.swap(DONE, Ordering::AcqRel) == ABANDONED {
                inner.stuck.fetch_sub(1, Ordering::AcqRel);
            }
            idle();
            let _ = tx.send(result);
        });
        self.dispatch(job)?;
        Ok(Pending {
            what: self.inner.what,
            rx,
            state,
            inner: self.inner.clone(),
            deadline,
            due: Instant::now() + deadline,
        })
    }

    /// Hands `job` to an idle worker, or to a new one while fewer than `max_workers` live.
    fn dispatch(&self, job: Job) -> Result<(), DeadlineError> {
        let mut job = job;
        loop {
            let idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(worker) => match worker.send(job) {
                    Ok(()) => return Ok(()),
                    // That worker is gone (it cannot be, but a dead one must not lose the job).
                    Err(e) => job = e.0,
                },
                None => break,
            }
        }
        let live = self.inner.live.fetch_add(1, Ordering::AcqRel);
        if live >= self.inner.max_workers {
            self.inner.live.fetch_sub(1, Ordering::AcqRel);
            self.inner.saturated.fetch_add(1, Ordering::Relaxed);
            return Err(DeadlineError::Saturated {
                what: self.inner.what,
                workers: self.inner.max_workers,
            });
        }
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("fimd-{}", self.inner.what.replace(' ', "-")))
            .spawn(move || worker(inner, job));
        if spawned.is_err() {
            self.inner.live.fetch_sub(1, Ordering::AcqRel);
            return Err(DeadlineError::Saturated {
                what: self.inner.what,
                workers: self.inner.max_workers,
            });
        }
        Ok(())
    }

    /// Workers abandoned in a call that has not returned yet (at most `max_workers`).
    pub fn stuck(&self) -> usize {
        self.inner.stuck.load(Ordering::Acquire)
    }

    /// Calls that missed their deadline since the start.
    pub fn timed_out(&self) -> u64 {
        self.inner.timed_out.load(Ordering::Relaxed)
    }

    /// Calls refused because every worker was busy or stuck, since the start.
    pub fn saturated(&self) -> u64 {
        self.inner.saturated.load(Ordering::Relaxed)
    }

    /// Worker threads alive (idle, busy or stuck).
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }
}

/// A call started by `Runner::start`.
pub struct Pending<T> {
    what: &'static str,
    rx: Receiver<std::thread::Result<T>>,
    state: Arc<AtomicU8>,
    inner: Arc<Inner>,
    deadline: Duration,
    due: Instant,
}

impl<T> Pending<T> {
    /// The call's result once it returned, `TimedOut` once its deadline passed (its worker is
    /// then abandoned), or `None` while it runs and may still finish in time. Never blocks.
    /// After a `Some`, the call is over: polling again gives `Panicked`.
    pub fn poll(&mut self) -> Option<Result<T, DeadlineError>> {
        use std::sync::mpsc::TryRecvError;
        match self.rx.try_recv() {
            Ok(result) => Some(result.map_err(|_| DeadlineError::Panicked { what: self.what })),
            Err(TryRecvError::Disconnected) => Some(Err(DeadlineError::Panicked { what: self.what })),
            Err(TryRecvError::Empty) => match self.state.load(Ordering::Acquire) {
                RUNNING if Instant::now() >= self.due => Some(self.give_up()),
                ABANDONED => Some(Err(DeadlineError::TimedOut {
                    what: self.what,
                    after: self.deadline,
                })),
                // Running, or done with its result on the way.
                _ => None,
            },
        }
    }

    /// Waits up to `up_to` for the call (never past its deadline by more than that), then
    /// answers as `poll` does.
    pub fn wait(&mut self, up_to: Duration) -> Option<Result<T, DeadlineError>> {
        use std::sync::mpsc::RecvTimeoutError;
        match self.rx.recv_timeout(up_to) {
            Ok(result) => Some(result.map_err(|_| DeadlineError::Panicked { what: self.what })),
            Err(RecvTimeoutError::Disconnected) => Some(Err(DeadlineError::Panicked { what: self.what })),
            Err(RecvTimeoutError::Timeout) => self.poll(),
        }
    }

    /// Abandons the call (counted stuck) unless it finished just now.
    fn give_up(&mut self) -> Result<T, DeadlineError> {
        let what = self.what;
        // Counted before the state flips, so the worker's decrement never comes first.
        self.inner.stuck.fetch_add(1, Ordering::AcqRel);
        match self
            .state
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.inner.timed_out.fetch_add(1, Ordering::Relaxed);
                Err(DeadlineError::TimedOut {
                    what,
                    after: self.deadline,
                })
            }
            Err(ABANDONED) => {
                self.inner.stuck.fetch_sub(1, Ordering::AcqRel);
                Err(DeadlineError::TimedOut {
                    what,
                    after: self.deadline,
                })
            }
            // It finished just now: its result is in the channel.
            Err(_) => {
                self.inner.stuck.fetch_sub(1, Ordering::AcqRel);
                match self.rx.recv() {
                    Ok(result) => result.map_err(|_| DeadlineError::Panicked { what }),
                    Err(_) => Err(DeadlineError::Panicked { what }),
                }
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        // Dropping the idle workers' senders ends their wait.
        self.inner.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A worker: runs its first job, then each job it is given. Each job puts it back in the idle
/// list (a sender held only there), so a closed runner's idle workers see their channel end.
fn worker(inner: Arc<Inner>, first: Job) {
    let mut job = first;
    loop {
        let (tx, rx) = channel::<Job>();
        let idle = || {
            if !inner.closed.load(Ordering::Acquire) {
                inner
                    .idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(tx.clone());
            }
        };
        job(&idle);
        drop(tx);
        match rx.recv() {
            Ok(next) => job = next,
            Err(_) => break,
        }
    }
    inner.live.fetch_sub(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_in_time_returns_its_result() {
        let r = Runner::new("test call", 2);
        assert_eq!(r.run(Duration::from_secs(5), || 6 * 7), Ok(42));
        assert_eq!(r.run(Duration::from_secs(5), || "again"), Ok("again"));
        // One worker served both: it went back to the idle list.
        assert_eq!(r.live(), 1);
        assert_eq!((r.stuck(), r.timed_out()), (0, 0));
    }

    #[test]
    fn a_call_past_its_deadline_is_abandoned_and_counted() {
        let r = Runner::new("test call", 2);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let t = Instant::now();
        let got = r.run(Duration::from_millis(100), move || wait.recv().is_ok());
        assert!(t.elapsed() < Duration::from_secs(2), "waited {:?}", t.elapsed());
        assert!(matches!(got, Err(DeadlineError::TimedOut { .. })), "{got:?}");
        assert_eq!((r.stuck(), r.timed_out()), (1, 1));
        // Other calls still run on the other worker.
        assert_eq!(r.run(Duration::from_secs(5), || 1), Ok(1));
        // The stuck call returns: its worker is no longer stuck and serves again.
        release.send(()).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while r.stuck() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(r.stuck(), 0);
        assert_eq!(r.run(Duration::from_secs(5), || 2), Ok(2));
        assert_eq!(r.live(), 2);
    }

    #[test]
    fn stuck_workers_are_bounded_and_calls_then_fail_fast() {
        let r = Runner::new("test call", 3);
        // A FIFO nobody writes: open(2) for reading blocks, as on a hung mount.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for _ in 0..3 {
            let p = fifo.clone();
            let got = r.run(Duration::from_millis(50), move || std::fs::File::open(p).is_ok());
            assert!(matches!(got, Err(DeadlineError::TimedOut { .. })), "{got:?}");
        }
        assert_eq!(r.stuck(), 3);
        for _ in 0..5 {
            let t = Instant::now();
            let got = r.run(Duration::from_secs(10), || ());
            assert!(
                matches!(got, Err(DeadlineError::Saturated { workers: 3, .. })),
                "{got:?}"
            );
            assert!(t.elapsed() < Duration::from_secs(1));
        }
        assert_eq!((r.live(), r.saturated()), (3, 5));
        // Opening the FIFO for writing releases every reader: all three workers come back.
        let writers: Vec<_> = (0..3)
            .map(|_| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&fifo)
            })
            .collect();
        assert!(writers.iter().any(|w| w.is_ok()));
        let until = Instant::now() + Duration::from_secs(5);
        while r.stuck() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(r.stuck(), 0);
        assert_eq!(r.run(Duration::from_secs(5), || 3), Ok(3));
    }

    #[test]
    fn a_panicking_call_is_an_error_and_the_worker_survives() {
        let r = Runner::new("test call", 1);
        let got = r.run(Duration::from_secs(5), || -> u8 { panic!("boom") });
        assert_eq!(got, Err(DeadlineError::Panicked { what: "test call" }));
        assert_eq!(r.run(Duration::from_secs(5), || 4), Ok(4));
        assert_eq!(r.stuck(), 0);
    }

    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn dropping_the_runner_ends_its_idle_workers() {
        let r = Runner::new("test call", 3);
        let inner = r.inner.clone();
        for _ in 0..3 {
            assert_eq!(r.run(Duration::from_secs(5), || 1), Ok(1));
        }
        assert_eq!(inner.live.load(Ordering::Acquire), 1);
        drop(r);
        let until = Instant::now() + Duration::from_secs(5);
        while inner.live.load(Ordering::Acquire) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(inner.live.load(Ordering::Acquire), 0);
    }
}

#[cfg(test)]
mod pending_tests {
    use super::*;

    #[test]
    fn a_started_call_is_polled_without_blocking() {
        let r = Runner::new("test call", 2);
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let mut p = r
            .start(Duration::from_secs(10), move || wait.recv().map(|()| 5))
            .unwrap();
        let t = Instant::now();
        assert!(p.poll().is_none());
        assert!(t.elapsed() < Duration::from_millis(100));
        go.send(()).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        let mut got = None;
        while got.is_none() && Instant::now() < until {
            got = p.poll();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got, Some(Ok(Ok(5))));
    }

    #[test]
    fn a_started_call_times_out_when_polled_past_its_deadline() {
        let r = Runner::new("test call", 1);
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let mut p = r
            .start(Duration::from_millis(50), move || wait.recv().is_ok())
            .unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert!(matches!(p.poll(), Some(Err(DeadlineError::TimedOut { .. }))));
        assert!(matches!(p.poll(), Some(Err(DeadlineError::TimedOut { .. }))));
        assert_eq!((r.stuck(), r.timed_out()), (1, 1));
        // The only worker is stuck: the next start fails fast.
        assert!(matches!(
            r.start(Duration::from_secs(1), || ()),
            Err(DeadlineError::Saturated { .. })
        ));
        go.send(()).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while r.stuck() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(r.stuck(), 0);
    }
}
