//! A bounded, fair pool for rehashing changed files in the daemon.
//!
//! One large file written all the time must never delay the alerts of other files (issue 12:
//! a 16 GiB sparse file touched every second delayed an unrelated change's alert by 50.5 s).
//! The rules:
//! - a key (a path) waits at most once: asking again while it waits replaces its job (the job
//!   hashes what the file holds when it runs, so the newest request stands for all of them);
//! - a key runs on one worker at a time; a request while it runs waits for that run to end;
//! - a large job (`large_bytes` or more) starts at most once per `settle` for its key, and
//!   large jobs together take at most `workers - 1` workers: small files always have one;
//! - at most `queue` keys wait; more are refused and counted (the caller's rescan repairs);
//! - a job running longer than `stuck_after` counts as stuck, and a replacement worker is
//!   started for it, at most `workers` of them: a hung mount pins a bounded number of threads.
//!
//! Dropping the pool stops its idle workers; workers still in a job are never joined.
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The pool's shape.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Worker threads (at least 1), not counting replacements for stuck ones.
    pub workers: usize,
    /// Keys that may wait at once (entries).
    pub queue: usize,
    /// A job of this many bytes or more is large (bytes).
    pub large_bytes: u64,
    /// The least time between two starts of one large key.
    pub settle: Duration,
    /// A job running longer than this counts as stuck.
    pub stuck_after: Duration,
}

/// What became of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The key was not waiting: it waits now.
    Queued,
    /// The key was waiting already: its job was replaced by this one.
    Coalesced,
}

/// A request refused because `queue` keys wait already.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the hashing queue is full ({0} files wait); the file is compared by the next rescan")]
pub struct PoolFull(pub usize);

type Job<R> = Box<dyn FnOnce() -> R + Send>;

struct Waiting<R> {
    job: Job<R>,
    large: bool,
    not_before: Instant,
}

struct State<K, R> {
    /// Waiting keys in request order, small and large apart.
    small: VecDeque<K>,
    large: VecDeque<K>,
    waiting: HashMap<K, Waiting<R>>,
    /// Keys running, with when they started and whether they are large.
    running: HashMap<K, (Instant, bool)>,
    /// When each large key last started, while that is less than `settle` ago.
    last_start: HashMap<K, Instant>,
    running_large: usize,
    /// Worker threads alive.
    threads: usize,
    shutdown: bool,
}

struct Shared<K, R> {
    config: PoolConfig,
    state: Mutex<State<K, R>>,
    wake: Condvar,
    results: SyncSender<(K, R)>,
    coalesced: AtomicU64,
    refused: AtomicU64,
    stuck: AtomicUsize,
}

/// A pool running jobs keyed by `K` (a path) that return `R` (a scan's findings).
pub struct HashPool<K, R> {
    shared: Arc<Shared<K, R>>,
    results: Receiver<(K, R)>,
}

impl<K, R> HashPool<K, R>
where
    K: Hash + Eq + Clone + Send + 'static,
    R: Send + 'static,
{
    /// Starts `config.workers` workers.
    pub fn new(config: PoolConfig) -> HashPool<K, R> {
        let config = PoolConfig {
            workers: config.workers.max(1),
            queue: config.queue.max(1),
            ..config
        };
        // Room for every result that can exist at once: one per waiting or running key.
        let (tx, rx) = sync_channel(config.queue + 2 * config.workers);
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State {
                small: VecDeque::new(),
                large: VecDeque::new(),
                waiting: HashMap::new(),
                running: HashMap::new(),
                last_start: HashMap::new(),
                running_large: 0,
                threads: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            results: tx,
            coalesced: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            stuck: AtomicUsize::new(0),
        });
        let pool = HashPool { shared, results: rx };
        for _ in 0..config.workers {
            pool.spawn_worker();
        }
        pool
    }

    /// Asks for `job` to run for `key`, `bytes` long (its size: what makes it large). Never
    /// blocks on a job. Errors: `PoolFull` when `queue` keys wait already (counted).
    pub fn submit(
        &self,
        key: K,
        bytes: u64,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<Submitted, PoolFull> {
        let cfg = self.shared.config;
        let large = bytes >= cfg.large_bytes;
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(w) = st.waiting.get_mut(&key) {
            w.job = Box::new(job);
            self.shared.coalesced.fetch_add(1, Ordering::Relaxed);
            return Ok(Submitted::Coalesced);
        }
        if st.waiting.len() >= cfg.queue {
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            return Err(PoolFull(st.waiting.len()));
        }
        st.last_start.retain(|_, at| now.duration_since(*at) < cfg.settle);
        let not_before = match st.last_start.get(&key) {
            Some(at) if large => *at + cfg.settle,
            _ => now,
        };
        st.waiting.insert(
            key.clone(),
            Waiting {
                job: Box::new(job),
                large,
                not_before,
            },
        );
        if large {
            st.large.push_back(key);
        } else {
            st.small.push_back(key);
        }
        drop(st);
        self.shared.wake.notify_all();
        Ok(Submitted::Queued)
    }

    /// The results of the jobs finished since the last call, and a replacement worker for each
    /// newly stuck one (at most `workers` in all). Never blocks.
    pub fn poll(&self) -> Vec<(K, R)> {
        let cfg = self.shared.config;
        let now = Instant::now();
        let (stuck, threads) = {
            let st = self.lock();
            let stuck = st
                .running
                .values()
                .filter(|(at, _)| now.duration_since(*at) >= cfg.stuck_after)
                .count();
            (stuck, st.threads)
        };
        self.shared.stuck.store(stuck, Ordering::Relaxed);
        let wanted = cfg.workers + stuck.min(cfg.workers);
        for _ in threads..wanted {
            self.spawn_worker();
        }
        self.results.try_iter().collect()
    }

    /// Keys waiting to run.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.lock().running.len()
    }

    /// Jobs running for longer than `stuck_after` at the last `poll`.
    pub fn stuck(&self) -> usize {
        self.shared.stuck.load(Ordering::Relaxed)
    }

    /// Requests that replaced a waiting job, since the start.
    pub fn coalesced(&self) -> u64 {
        self.shared.coalesced.load(Ordering::Relaxed)
    }

    /// Requests refused with `PoolFull`, since the start.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, R>> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn_worker(&self) {
        let shared = self.shared.clone();
        self.lock().threads += 1;
        let spawned = std::thread::Builder::new()
            .name("fimd-rehash".into())
            .spawn(move || worker(shared));
        if spawned.is_err() {
            self.lock().threads -= 1;
        }
    }
}

impl<K, R> Drop for HashPool<K, R> {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shutdown = true;
        self.shared.wake.notify_all();
    }
}

/// Takes the next job by the rules of the module doc, runs it, sends its result.
fn worker<K, R>(shared: Arc<Shared<K, R>>)
where
    K: Hash + Eq + Clone + Send + 'static,
    R: Send + 'static,
{
    let cfg = shared.config;
    let large_slots = cfg.workers.saturating_sub(1).max(1);
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if st.shutdown {
            st.threads -= 1;
            return;
        }
        let now = Instant::now();
        let small = st.small.iter().position(|k| !st.running.contains_key(k));
        // Large jobs leave a worker to small ones; with one worker, they wait for none.
        let large_ok = st.running_large < large_slots && (cfg.workers > 1 || small.is_none());
        let large = large_ok
            .then(|| {
                st.large.iter().position(|k| {
                    !st.running.contains_key(k) && st.waiting.get(k).is_some_and(|w| w.not_before <= now)
                })
            })
            .flatten();
        // A large job ready takes its slot first, so a stream of small ones cannot starve it.
        let picked = match (large, small) {
            (Some(i), _) => st.large.remove(i),
            (None, Some(i)) => st.small.remove(i),
            (None, None) => None,
        };
        let Some(key) = picked else {
            // Sleep until woken, or until the first large key may start.
            let next = st
                .large
                .iter()
                .filter_map(|k| st.waiting.get(k))
                .map(|w| w.not_before)
                .min();
            st = match next {
                Some(at) if at > now => {
                    shared
                        .wake
                        .wait_timeout(st, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                // Due but blocked (its key runs, or no large slot): woken when a job ends.
                Some(_) | None => shared.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
            continue;
        };
        let w = st.waiting.remove(&key).expect("queued keys wait");
        st.running.insert(key.clone(), (now, w.large));
        if w.large {
            st.running_large += 1;
            st.last_start.insert(key.clone(), now);
        }
        drop(st);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(w.job));
        st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.running.remove(&key);
        if w.large {
            st.running_large -= 1;
        }
        drop(st);
        shared.wake.notify_all();
        // A job that panicked has no result; the next rescan compares its file again.
        if let Ok(result) = result {
            let _ = shared.results.send((key, result));
        }
        st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    const MIB: u64 = 1 << 20;

    fn config(workers: usize) -> PoolConfig {
        PoolConfig {
            workers,
            queue: 64,
            large_bytes: 64 * MIB,
            settle: Duration::from_millis(300),
            stuck_after: Duration::from_secs(30),
        }
    }

    /// Polls until `n` results came, for at most 10 s.
    fn collect<K, R>(pool: &HashPool<K, R>, n: usize) -> Vec<(K, R)>
    where
        K: Hash + Eq + Clone + Send + 'static,
        R: Send + 'static,
    {
        let until = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < until {
            out.extend(pool.poll());
            std::thread::sleep(Duration::from_millis(5));
        }
        out
    }

    #[test]
    fn a_busy_large_file_never_delays_small_ones() {
        for workers in [1, 2, 4] {
            let pool: HashPool<String, Instant> = HashPool::new(config(workers));
            let touch = || {
                let _ = pool.submit("big".into(), 16 << 30, || {
                    std::thread::sleep(Duration::from_millis(1000));
                    Instant::now()
                });
            };
            // The large file: every hash takes 1 s, and it is touched every 20 ms; small
            // files change meanwhile, each one measured from its request to its result.
            let t0 = Instant::now();
            let mut asked: HashMap<String, Instant> = HashMap::new();
            let mut worst = Duration::ZERO;
            let mut done = 0;
            let mut i = 0;
            while t0.elapsed() < Duration::from_secs(2)
                || (done < i && t0.elapsed() < Duration::from_secs(10))
            {
                if t0.elapsed() < Duration::from_secs(2) {
                    touch();
                    if t0.elapsed() > Duration::from_millis(50 + 300 * i as u64) {
                        let k = format!("small{i}");
                        asked.insert(k.clone(), Instant::now());
                        pool.submit(k, 4096, Instant::now).unwrap();
                        i += 1;
                    }
                }
                for (k, at) in pool.poll() {
                    if let Some(asked) = asked.get(&k) {
                        worst = worst.max(at - *asked);
                        done += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(done, i, "{workers} workers: every small file hashed");
            // With one worker a small job may wait for the large hash under way (1 s), never
            // for a queue of them; with more, it never waits for one.
            let bound = if workers == 1 { 1500 } else { 500 };
            assert!(
                worst < Duration::from_millis(bound),
                "{workers} workers: {worst:?}"
            );
        }
    }

    #[test]
    fn a_large_key_starts_at_most_once_per_settle_and_its_last_request_runs() {
        let pool: HashPool<&'static str, (u32, Instant)> = HashPool::new(config(2));
        let t0 = Instant::now();
        let mut requests = 0;
        // Touched every 10 ms for 1 s.
        while t0.elapsed() < Duration::from_secs(1) {
            requests += 1;
            let n = requests;
            pool.submit("big", 1 << 34, move || (n, Instant::now())).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        let last = requests;
        std::thread::sleep(Duration::from_millis(700));
        let runs: Vec<(u32, Instant)> = pool.poll().into_iter().map(|(_, r)| r).collect();
        // 1 s of touching with a 300 ms settle: at most 5 starts (t = 0, 0.3, 0.6, 0.9, 1.2).
        assert!(
            (2..=5).contains(&runs.len()),
            "{} runs for {requests} requests",
            runs.len()
        );
        for pair in runs.windows(2) {
            assert!(
                pair[1].1 - pair[0].1 >= Duration::from_millis(290),
                "{:?}",
                pair[1].1 - pair[0].1
            );
        }
        // Nothing is lost: the newest request is the one that ran last.
        assert_eq!(runs.last().unwrap().0, last);
        assert_eq!(pool.coalesced() as usize, requests as usize - runs.len());
        assert_eq!(pool.waiting(), 0);
    }

    #[test]
    fn a_key_runs_on_one_worker_at_a_time() {
        let pool: HashPool<&'static str, ()> = HashPool::new(config(4));
        let running = Arc::new(AtomicUsize::new(0));
        let overlap = Arc::new(AtomicBool::new(false));
        for _ in 0..20 {
            let (running, overlap) = (running.clone(), overlap.clone());
            let _ = pool.submit("f", 10, move || {
                if running.fetch_add(1, Ordering::SeqCst) > 0 {
                    overlap.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        let got = collect(&pool, 2);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!got.is_empty());
        assert!(!overlap.load(Ordering::SeqCst), "two runs of one key overlapped");
    }

    #[test]
    fn the_queue_is_bounded_and_refusals_are_counted() {
        let mut cfg = config(1);
        cfg.queue = 3;
        let pool: HashPool<u32, u32> = HashPool::new(cfg);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        pool.submit(0, 1, move || {
            let _ = wait.lock().unwrap().recv();
            0
        })
        .unwrap();
        while pool.running() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for k in 1..=3 {
            assert_eq!(pool.submit(k, 1, move || k), Ok(Submitted::Queued));
        }
        assert_eq!(pool.submit(4, 1, || 4), Err(PoolFull(3)));
        assert_eq!(pool.submit(5, 1, || 5), Err(PoolFull(3)));
        // A key already waiting is coalesced, not refused.
        assert_eq!(pool.submit(2, 1, || 20), Ok(Submitted::Coalesced));
        assert_eq!((pool.refused(), pool.coalesced()), (2, 1));
        release.send(()).unwrap();
        let mut got = collect(&pool, 4);
        got.sort();
        assert_eq!(got, vec![(0, 0), (1, 1), (2, 20), (3, 3)]);
    }

    #[test]
    fn a_stuck_job_is_counted_and_replaced() {
        let mut cfg = config(1);
        cfg.stuck_after = Duration::from_millis(50);
        let pool: HashPool<&'static str, u8> = HashPool::new(cfg);
        // A FIFO with no writer: opening it blocks, as a read on a hung mount does.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let p = fifo.clone();
        pool.submit("hung", 1, move || u8::from(std::fs::File::open(p).is_ok()))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(pool.poll().is_empty());
        assert_eq!(pool.stuck(), 1);
        // The one worker is stuck: a replacement hashes the next file.
        pool.submit("small", 1, || 7).unwrap();
        assert_eq!(collect(&pool, 1), vec![("small", 7)]);
        // Release the stuck one: its result still arrives.
        let _w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        assert_eq!(collect(&pool, 1), vec![("hung", 1)]);
        pool.poll();
        assert_eq!(pool.stuck(), 0);
    }

    #[test]
    fn two_busy_large_files_both_progress() {
        let pool: HashPool<&'static str, ()> = HashPool::new(config(2));
        let t0 = Instant::now();
        let mut done: HashMap<&str, usize> = HashMap::new();
        while t0.elapsed() < Duration::from_millis(1500) {
            for k in ["a", "b"] {
                let _ = pool.submit(k, 1 << 34, || std::thread::sleep(Duration::from_millis(100)));
            }
            for (k, ()) in pool.poll() {
                *done.entry(k).or_default() += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(done.get("a").is_some_and(|n| *n >= 2), "{done:?}");
        assert!(done.get("b").is_some_and(|n| *n >= 2), "{done:?}");
    }
}
