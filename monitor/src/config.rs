//! Configuration: the raw TOML document (`RawConfig`) and the validated `Settings` built from it.
//!
//! Every error names the file, the line and the key, so an operator can fix it without guessing.
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use toml::Spanned;

use crate::output::sink::{RawAlerts, SinkSettings};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The document as written. Unknown keys are refused so a typo never silently disables a watch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Spanned<PathBuf>,
    hmac_key: Option<Spanned<PathBuf>>,
    #[serde(default)]
    watch: Vec<Spanned<RawWatch>>,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    scan: RawScan,
    #[serde(default)]
    realtime: RawRealtime,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    schedule: RawSchedule,
    /// Where the host's root filesystem is, when fimd runs in a container (`/host`): used to
    /// name the pods that changed files.
    host_root: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// `/metrics`, `/healthz` and `/readyz` on this address (none when absent).
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    /// How often the daemon runs a full comparison ("7d", "12h"); "0" disables it.
    full_check: Option<Spanned<String>>,
    /// A random delay up to this much is added to each, so a fleet does not read at once.
    jitter: Option<Spanned<String>>,
}

/// PCI DSS 11.5.2: compare at least weekly.
pub const DEFAULT_FULL_CHECK: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);
/// One hour: enough to spread a fleet's disk reads, short next to a week.
pub const DEFAULT_JITTER: std::time::Duration = std::time::Duration::from_secs(3600);
/// Shortest `schedule.full_check`: 1 minute. Each full comparison rereads every watched byte;
/// at `"1ns"` the daemon ran about 300 a second and did little else.
pub const MIN_FULL_CHECK: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest `schedule.full_check` and `schedule.jitter`: 366 days. Compliance asks for weekly;
/// past a year a schedule means "never" (write `"0"`), and huge values overflowed the daemon's
/// timer (`"500000000000y"` made `fimd run` panic).
pub const MAX_FULL_CHECK: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);
/// Most `scan.threads`: 1024. Each hashing thread holds a 128 KiB read buffer and a stack;
/// past four per core nothing got faster (README, Performance), and `99999999999` made
/// `init` hang trying to start them.
pub const MAX_THREADS: i64 = 1024;
/// Smallest `realtime.ring_buffer_bytes`: 4 KiB, one page on x86-64 (the kernel wants a
/// power-of-two number of pages, so on a larger-page machine its page size is the floor).
pub const MIN_RING_BYTES: u64 = 4096;
/// Largest `realtime.ring_buffer_bytes`: 256 MiB, about 3 million records. The ring is locked
/// kernel memory mapped into the daemon (2 GiB cost 4.2 GB of RSS); a loss is repaired by a
/// full comparison, so a bigger ring buys little.
pub const MAX_RING_BYTES: u64 = 256 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRealtime {
    /// Kernel-to-daemon ring buffer size in bytes: a power of two from `MIN_RING_BYTES` to
    /// `MAX_RING_BYTES`, as a number or a size string ("4MiB").
    ring_buffer_bytes: Option<Spanned<toml::Value>>,
    sensor: Option<SensorChoice>,
    /// Inodes the eBPF sensor's maps hold; by default sized from the baseline.
    max_watched_inodes: Option<Spanned<u64>>,
}

/// Bounds of `realtime.max_watched_inodes`: below 1,024 nothing useful fits; 16 Mi entries
/// cost about 2.5 GiB of locked kernel memory (docs/sensor-design.md §3, per-entry cost).
pub const WATCHED_INODES_RANGE: std::ops::RangeInclusive<u64> = 1024..=(16 << 20);

/// `[realtime] sensor`: which kernel sensor `fimd run` and `fimd selftest` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorChoice {
    /// The eBPF sensor where it loads, else fanotify.
    #[default]
    Auto,
    /// Only eBPF: `run` fails (exit 2) with the reason when it cannot load.
    Ebpf,
    /// Only fanotify (needs CAP_SYS_ADMIN).
    Fanotify,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    path: Spanned<PathBuf>,
    #[serde(default)]
    policy: Option<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default = "default_true")]
    one_filesystem: bool,
    /// Append-only watches: names (globs) that rotated logs take, e.g. `app.log.*`.
    #[serde(default)]
    rotate: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScan {
    /// Scanning threads, 0 to `MAX_THREADS`; 0 or absent means four per core.
    threads: Option<Spanned<i64>>,
    /// Files larger than this are recorded without a content hash (and reported); 0 = no limit.
    max_file_size: Option<Spanned<toml::Value>>,
}

/// Default cap on hashed size: a sparse file of exabytes must not stall every check.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 30;

fn default_true() -> bool {
    true
}

/// What a watch allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Any change alerts.
    Static,
    /// Growth is allowed; any other change alerts (logs).
    AppendOnly,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Static => "static",
            Policy::AppendOnly => "append-only",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "static" => Some(Policy::Static),
            "append-only" => Some(Policy::AppendOnly),
            _ => None,
        }
    }
}

/// One validated watch.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Absolute, normalised host path.
    pub path: PathBuf,
    pub policy: Policy,
    pub exclude: Excludes,
    pub one_filesystem: bool,
    /// Names a rotated log takes (append-only watches); rotations outside them alert.
    pub rotate: Rotate,
}

/// Rotation name globs, matched against file names.
#[derive(Debug, Clone, Default)]
pub struct Rotate {
    set: Option<GlobSet>,
    pub patterns: Vec<String>,
}

impl Rotate {
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `name` (a file name, not a path) is one a rotated log takes.
    pub fn matches(&self, name: &[u8]) -> bool {
        use std::ffi::OsStr;
        self.set
            .as_ref()
            .is_some_and(|s| s.is_match(Path::new(OsStr::from_bytes(name))))
    }
}

/// Exclusion globs: patterns starting with `/` match the whole path, others match the file name.
/// fimd's own files inside the watch are excluded too (`own`).
#[derive(Debug, Clone)]
pub struct Excludes {
    full: GlobSet,
    name: GlobSet,
    /// As written, for the baseline's record of what it covers.
    pub patterns: Vec<String>,
    /// fimd's own files below this watch, excluded whatever the patterns say.
    pub own: Vec<OwnFiles>,
}

/// Files fimd itself writes, excluded from every watch that contains them: watching them would
/// make every check differ (the database) or every alert cause another (the alert file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnFiles {
    /// `state_dir` and everything in it: the database, its WAL and the key.
    StateDir(Vec<u8>),
    /// `alerts.jsonl` and its rotated siblings `FILE.1`, `FILE.2`, … (any number).
    Alerts(Vec<u8>),
}

impl OwnFiles {
    /// The path, as bytes.
    pub fn path(&self) -> &[u8] {
        match self {
            OwnFiles::StateDir(p) | OwnFiles::Alerts(p) => p,
        }
    }

    /// Whether `path` is one of these files.
    pub fn contains(&self, path: &[u8]) -> bool {
        match self {
            OwnFiles::StateDir(dir) if dir.as_slice() == b"/" => true,
            OwnFiles::StateDir(dir) => path
                .strip_prefix(&dir[..])
                .is_some_and(|rest| rest.is_empty() || rest[0] == b'/'),
            OwnFiles::Alerts(file) => path.strip_prefix(&file[..]).is_some_and(|rest| {
                rest.is_empty()
                    || (rest.len() > 1 && rest[0] == b'.' && rest[1..].iter().all(u8::is_ascii_digit))
            }),
        }
    }

    /// `state_dir=PATH` or `alerts.jsonl=PATH`, for the baseline's coverage record and messages
    /// (a name that is not UTF-8 is shown lossily; matching always uses the bytes).
    pub fn describe(&self) -> String {
        let (what, p) = match self {
            OwnFiles::StateDir(p) => ("state_dir", p),
            OwnFiles::Alerts(p) => ("alerts.jsonl", p),
        };
        format!("{what}={}", String::from_utf8_lossy(p))
    }
}

impl Excludes {
    pub fn is_excluded(&self, path: &[u8], name: &[u8]) -> bool {
        use std::ffi::OsStr;
        self.own.iter().any(|o| o.contains(path))
            || self.full.is_match(Path::new(OsStr::from_bytes(path)))
            || self.name.is_match(Path::new(OsStr::from_bytes(name)))
    }
}

/// The validated configuration every command works from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source: PathBuf,
    pub state_dir: PathBuf,
    pub hmac_key: Option<PathBuf>,
    pub watches: Vec<Watch>,
    /// Where alerts go (`[alerts]`).
    pub alerts: SinkSettings,
    pub threads: usize,
    pub max_file_size: Option<u64>,
    pub ring_buffer_bytes: u32,
    /// `[realtime] sensor`.
    pub sensor: SensorChoice,
    /// `[realtime] max_watched_inodes`: the eBPF maps' capacity (entries); `None`: sized from
    /// the baseline at start.
    pub max_watched_inodes: Option<u32>,
    pub metrics_listen: Option<String>,
    /// Full comparisons in the daemon: every `full_check` plus up to `jitter`; `None`: never.
    pub full_check: Option<std::time::Duration>,
    pub jitter: std::time::Duration,
    pub host_root: PathBuf,
}

impl Settings {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            err: source,
        })?;
        Settings::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigError> {
        let invalid = |span: Range<usize>, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            message,
        };
        let duration = |d: &Spanned<String>, key: &str| {
            humantime::parse_duration(d.get_ref().trim()).map_err(|e| {
                invalid(
                    d.span(),
                    format!(
                        "{key}: {:?}: {e}; write a duration such as \"7d\", \"12h\" or \"30m\"",
                        d.get_ref()
                    ),
                )
            })
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            invalid(span, e.message().trim().to_owned())
        })?;

        let state_dir =
            absolute(&raw.state_dir, "state_dir").map_err(|m| invalid(raw.state_dir.span(), m))?;
        let hmac_key = match &raw.hmac_key {
            Some(k) => Some(absolute(k, "hmac_key").map_err(|m| invalid(k.span(), m))?),
            None => None,
        };

        if raw.watch.is_empty() {
            return Err(invalid(
                0..0,
                "no [[watch]] table: add at least one, e.g. [[watch]] path = \"/etc\"".into(),
            ));
        }
        let mut watches: Vec<(Watch, Range<usize>)> = Vec::new();
        for w in &raw.watch {
            let span = w.span();
            let w = w.get_ref();
            let wpath = absolute(&w.path, "watch.path").map_err(|m| invalid(w.path.span(), m))?;
            let policy = match &w.policy {
                None => Policy::Static,
                Some(p) => Policy::parse(p.get_ref()).ok_or_else(|| {
                    invalid(
                        p.span(),
                        format!(
                            "watch.policy: unknown policy {:?}; use \"static\" or \"append-only\"",
                            p.get_ref()
                        ),
                    )
                })?,
            };
            let mut full = GlobSetBuilder::new();
            let mut name = GlobSetBuilder::new();
            for pat in &w.exclude {
                let glob = Glob::new(pat.get_ref()).map_err(|e| {
                    invalid(
                        pat.span(),
                        format!("watch.exclude: bad glob {:?}: {}", pat.get_ref(), e.kind()),
                    )
                })?;
                if pat.get_ref().starts_with('/') {
                    full.add(glob);
                } else {
                    name.add(glob);
                }
            }
            let build = |b: GlobSetBuilder| {
                b.build()
                    .map_err(|e| invalid(span.clone(), format!("watch.exclude: {e}")))
            };
            let exclude = Excludes {
                full: build(full)?,
                name: build(name)?,
                patterns: w.exclude.iter().map(|p| p.get_ref().clone()).collect(),
                own: Vec::new(),
            };
            if let Some((other, other_span)) = watches.iter().find(|(o, _)| o.path == wpath) {
                let _ = other;
                return Err(invalid(
                    w.path.span(),
                    format!(
                        "watch.path: {} is already watched (line {}); merge the two [[watch]] tables",
                        wpath.display(),
                        line_of(text, other_span.start)
                    ),
                ));
            }
            for (other, other_span) in &watches {
                let nested = wpath.starts_with(&other.path) || other.path.starts_with(&wpath);
                if nested && other.policy != policy {
                    return Err(invalid(
                        w.path.span(),
                        format!(
                            "watch.path: {} (policy {}) is nested with {} (policy {}, line {}); \
                             nested watches must share a policy: split the tree or exclude the inner path",
                            wpath.display(),
                            policy.as_str(),
                            other.path.display(),
                            other.policy.as_str(),
                            line_of(text, other_span.start)
                        ),
                    ));
                }
            }
            if !w.rotate.is_empty() && policy != Policy::AppendOnly {
                return Err(invalid(
                    w.rotate[0].span(),
                    "watch.rotate: rotation is allowed only for policy = \"append-only\"; remove it or set the policy"
                        .into(),
                ));
            }
            let mut rb = GlobSetBuilder::new();
            for r in &w.rotate {
                if r.get_ref().contains('/') || r.get_ref().is_empty() {
                    return Err(invalid(
                        r.span(),
                        format!(
                            "watch.rotate: {:?} must be a file name glob such as \"app.log.*\" (no '/'): \
                             rotated logs stay in the log's directory",
                            r.get_ref()
                        ),
                    ));
                }
                let g = Glob::new(r.get_ref())
                    .map_err(|e| invalid(r.span(), format!("watch.rotate: {:?}: {e}", r.get_ref())))?;
                rb.add(g);
            }
            let rotate = Rotate {
                set: if w.rotate.is_empty() {
                    None
                } else {
                    Some(
                        rb.build()
                            .map_err(|e| invalid(w.rotate[0].span(), format!("watch.rotate: {e}")))?,
                    )
                },
                patterns: w.rotate.iter().map(|p| p.get_ref().clone()).collect(),
            };
            watches.push((
                Watch {
                    path: wpath,
                    policy,
                    exclude,
                    one_filesystem: w.one_filesystem,
                    rotate,
                },
                w.path.span(),
            ));
        }

        let alerts = raw
            .alerts
            .validate()
            .map_err(|e| invalid(e.span.unwrap_or(0..0), e.message))?;

        // fimd's own files: excluded from every watch holding them; a watch inside them is
        // refused (it would watch nothing but fimd).
        let mut own = vec![(
            OwnFiles::StateDir(state_dir.as_os_str().as_bytes().to_vec()),
            "state_dir",
            raw.state_dir.span(),
        )];
        if let (Some(crate::output::sink::JsonlTarget::File { path: a, .. }), Some(span)) =
            (&alerts.jsonl, raw.alerts.jsonl.as_ref().map(|j| j.span()))
        {
            own.push((
                OwnFiles::Alerts(a.as_os_str().as_bytes().to_vec()),
                "alerts.jsonl",
                span,
            ));
        }
        for (w, wspan) in &mut watches {
            let root = w.path.as_os_str().as_bytes();
            for (o, key, ospan) in &own {
                if o.contains(root) {
                    return Err(invalid(
                        wspan.clone(),
                        format!(
                            "watch.path: {} lies in fimd's own {key} (line {}), which fimd changes on every \
                             run; watch another path or move {key} out of it",
                            w.path.display(),
                            line_of(text, ospan.start)
                        ),
                    ));
                }
                if crate::compare::is_under(o.path(), root) {
                    w.exclude.own.push(o.clone());
                }
            }
        }

        // Reads from a cold cache wait on the disk: more threads than cores keep the cores busy
        // (measured on /usr: cold 32.7 s with 2 threads, 22.2 s with 8; warm unchanged).
        let threads = match &raw.scan.threads {
            Some(n) if (1..=MAX_THREADS).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) if *n.get_ref() != 0 => {
                return Err(invalid(
                    n.span(),
                    format!(
                        "scan.threads: {} is out of range; give 1 to {MAX_THREADS}, or 0 for four per core",
                        n.get_ref()
                    ),
                ));
            }
            _ => (std::thread::available_parallelism().map_or(1, |n| n.get()) * 4).min(64),
        };

        let max_file_size = match &raw.scan.max_file_size {
            None => Some(DEFAULT_MAX_FILE_SIZE),
            Some(v) => match parse_size(v.get_ref()) {
                Some(0) => None,
                Some(n) => Some(n),
                None => {
                    return Err(invalid(
                        v.span(),
                        "scan.max_file_size: give bytes as a number, or a string such as \"64GiB\" (0 = no limit)"
                            .into(),
                    ));
                }
            },
        };

        let ring_buffer_bytes = match &raw.realtime.ring_buffer_bytes {
            None => crate::sensor::ebpf::DEFAULT_RING_BYTES,
            Some(v) => {
                let min = MIN_RING_BYTES.max(page_size());
                match parse_size(v.get_ref()) {
                    Some(n) if n.is_power_of_two() && (min..=MAX_RING_BYTES).contains(&n) => n as u32,
                    _ => {
                        return Err(invalid(
                            v.span(),
                            format!(
                                "realtime.ring_buffer_bytes: {} is not a power of two from {min} to {MAX_RING_BYTES} \
                                 (256 MiB); write e.g. 4194304 or \"4MiB\" (the default)",
                                v.get_ref()
                            ),
                        ));
                    }
                }
            }
        };

        let max_watched_inodes = match &raw.realtime.max_watched_inodes {
            None => None,
            Some(n) if WATCHED_INODES_RANGE.contains(n.get_ref()) => Some(*n.get_ref() as u32),
            Some(n) => {
                return Err(invalid(
                    n.span(),
                    format!(
                        "realtime.max_watched_inodes: {} is outside {} to {}; leave it out to size the \
                         sensor's maps from the baseline",
                        n.get_ref(),
                        WATCHED_INODES_RANGE.start(),
                        WATCHED_INODES_RANGE.end()
                    ),
                ));
            }
        };

        let full_check = match &raw.schedule.full_check {
            None => Some(DEFAULT_FULL_CHECK),
            Some(d) if d.get_ref().trim() == "0" => None,
            Some(d) => {
                let every = duration(d, "schedule.full_check")?;
                if !(MIN_FULL_CHECK..=MAX_FULL_CHECK).contains(&every) {
                    return Err(invalid(
                        d.span(),
                        format!(
                            "schedule.full_check: {:?} is out of range; give 1 minute (\"1m\") to 366 days \
                             (\"366d\"), or \"0\" for no scheduled comparison",
                            d.get_ref()
                        ),
                    ));
                }
                Some(every)
            }
        };
        let jitter = match &raw.schedule.jitter {
            None => DEFAULT_JITTER.min(full_check.unwrap_or(MAX_FULL_CHECK)),
            Some(d) if d.get_ref().trim() == "0" => std::time::Duration::ZERO,
            Some(d) => {
                let jitter = duration(d, "schedule.jitter")?;
                let most = full_check.unwrap_or(MAX_FULL_CHECK);
                if jitter > most {
                    return Err(invalid(
                        d.span(),
                        format!(
                            "schedule.jitter: {:?} is longer than {}; give at most {} (or \"0\")",
                            d.get_ref(),
                            if full_check.is_some() {
                                "schedule.full_check"
                            } else {
                                "366 days"
                            },
                            humantime::format_duration(most)
                        ),
                    ));
                }
                jitter
            }
        };

        Ok(Settings {
            source: path.to_owned(),
            state_dir,
            hmac_key,
            watches: watches.into_iter().map(|(w, _)| w).collect(),
            alerts,
            threads,
            max_file_size,
            ring_buffer_bytes,
            sensor: raw.realtime.sensor.unwrap_or_default(),
            max_watched_inodes,
            metrics_listen: match &raw.metrics.listen {
                None => None,
                Some(a) => {
                    a.get_ref().parse::<std::net::SocketAddr>().map_err(|e| {
                        invalid(
                            a.span(),
                            format!(
                                "metrics.listen: {:?}: {e}; give an address and port such as \"127.0.0.1:9464\"",
                                a.get_ref()
                            ),
                        )
                    })?;
                    Some(a.get_ref().clone())
                }
            },
            full_check,
            jitter,
            host_root: match &raw.host_root {
                None => PathBuf::from("/"),
                Some(p) if p.get_ref().is_absolute() => p.get_ref().clone(),
                Some(p) => {
                    return Err(invalid(
                        p.span(),
                        format!(
                            "host_root: {} is relative; give an absolute path",
                            p.get_ref().display()
                        ),
                    ));
                }
            },
        })
    }

    /// What the watches cover, in one canonical line each; the baseline records it so that a
    /// narrowed configuration cannot silently shrink what is compared.
    pub fn coverage(&self) -> String {
        let mut lines: Vec<String> = self
            .watches
            .iter()
            .map(|w| {
                let mut line = format!(
                    "{:?} policy={} one_filesystem={} exclude={:?}",
                    w.path.display().to_string(),
                    w.policy.as_str(),
                    w.one_filesystem,
                    w.exclude.patterns
                );
                // Only when there are some, so baselines sealed before fimd excluded its own
                // files keep matching.
                if !w.exclude.own.is_empty() {
                    let own: Vec<String> = w.exclude.own.iter().map(OwnFiles::describe).collect();
                    line.push_str(&format!(" own={own:?}"));
                }
                line
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// Checks that every watched path exists under `root` (the host's `/` by default) and is
    /// not on a pseudo-filesystem (proc, sysfs, cgroup, …: see `scan::fstype`).
    pub fn check_paths_exist(&self, root: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(&self.source).unwrap_or_default();
        for w in &self.watches {
            let real = reroot(root, &w.path);
            let refuse = |message: String| {
                let needle = format!("{:?}", w.path.display().to_string());
                let line = text.find(&needle).map_or(0, |at| line_of(&text, at));
                ConfigError::Invalid {
                    path: self.source.clone(),
                    line,
                    message,
                }
            };
            if std::fs::symlink_metadata(&real).is_err() {
                return Err(refuse(format!(
                    "watch.path: {} does not exist; create it or remove this [[watch]]",
                    real.display()
                )));
            }
            if let Ok(Some(fs)) = crate::scan::fstype::pseudo_fs_at(&real) {
                return Err(refuse(format!(
                    "watch.path: {} is on a {fs} pseudo-filesystem, whose files are kernel state that \
                     changes by itself; remove this [[watch]] (fimd watches files on disk)",
                    real.display()
                )));
            }
        }
        Ok(())
    }

    /// The watch that governs `path`: the deepest one containing it.
    pub fn watch_for(&self, path: &Path) -> Option<&Watch> {
        self.watches
            .iter()
            .filter(|w| path.starts_with(&w.path))
            .max_by_key(|w| w.path.as_os_str().len())
    }

    /// Whether `path` is watched and not excluded by its governing watch.
    pub fn covers(&self, path: &Path) -> bool {
        let Some(w) = self.watch_for(path) else {
            return false;
        };
        // Excludes apply to the path and to each of its ancestors below the watch root.
        let mut cur = Some(path);
        while let Some(p) = cur {
            if p == w.path {
                return true;
            }
            let name = p.file_name().map_or(&[][..], |n| n.as_bytes());
            if w.exclude.is_excluded(p.as_os_str().as_bytes(), name) {
                return false;
            }
            cur = p.parent();
        }
        true
    }
}

/// Maps a host path into a tree mounted at `root` (`/` leaves it unchanged).
pub fn reroot(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new("/") {
        path.to_owned()
    } else {
        root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

fn absolute(p: &Spanned<PathBuf>, key: &str) -> Result<PathBuf, String> {
    let path = p.get_ref();
    if !path.is_absolute() {
        return Err(format!(
            "{key}: {:?} is relative; fimd needs absolute paths (e.g. \"/{}\")",
            path.display().to_string(),
            path.display()
        ));
    }
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(format!("{key}: the path contains a NUL byte"));
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(format!(
                    "{key}: {:?} contains \"..\"; write the path without it",
                    path.display().to_string()
                ));
            }
            Component::Prefix(_) => unreachable!("no path prefixes on Unix"),
        }
    }
    Ok(out)
}

/// `123`, `"123"`, `"64KiB"`, `"64MiB"`, `"64GiB"`, `"1TiB"` (also K, M, G, T).
pub(crate) fn parse_size(v: &toml::Value) -> Option<u64> {
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().ok()?;
            let shift = match unit.trim() {
                "" | "B" => 0,
                "K" | "KiB" => 10,
                "M" | "MiB" => 20,
                "G" | "GiB" => 30,
                "T" | "TiB" => 40,
                _ => return None,
            };
            n.checked_mul(1u64 << shift)
        }
        _ => None,
    }
}

/// The kernel's page size in bytes (4096 on x86-64).
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).unwrap_or(4096).max(1)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(Path::new("/etc/fimd.toml"), text)
    }

    #[test]
    fn valid_config_is_normalised() {
        let s = parse(
            "state_dir = \"/var/lib/fimd\"\n[[watch]]\npath = \"/etc/\"\nexclude = [\"*.swp\", \"/etc/mtab\"]\n[alerts]\njsonl = \"-\"\n",
        )
        .unwrap();
        assert_eq!(s.watches[0].path, Path::new("/etc"));
        assert_eq!(s.watches[0].policy, Policy::Static);
        assert!(s.watches[0].exclude.is_excluded(b"/etc/a.swp", b"a.swp"));
        assert!(s.watches[0].exclude.is_excluded(b"/etc/mtab", b"mtab"));
        assert!(!s.watches[0].exclude.is_excluded(b"/etc/passwd", b"passwd"));
        assert!(matches!(
            s.alerts.jsonl,
            Some(crate::output::sink::JsonlTarget::Stdout)
        ));
        assert!(!s.covers(Path::new("/etc/x/y.swp")));
        assert!(s.covers(Path::new("/etc/passwd")));
        assert!(!s.covers(Path::new("/usr/bin")));
        assert_eq!(s.max_file_size, Some(DEFAULT_MAX_FILE_SIZE));
        assert_eq!(parse_size(&toml::Value::String("2GiB".into())), Some(2 << 30));
        assert_eq!(parse_size(&toml::Value::Integer(5)), Some(5));
    }

    #[test]
    fn numbers_at_their_bounds_are_accepted() {
        let s = parse(
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[scan]\nthreads = 1024\n[realtime]\n\
             ring_buffer_bytes = \"256MiB\"\n[schedule]\nfull_check = \"1m\"\njitter = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(s.threads, 1024);
        assert_eq!(u64::from(s.ring_buffer_bytes), MAX_RING_BYTES);
        assert_eq!(s.full_check, Some(MIN_FULL_CHECK));
        assert_eq!(s.jitter, MIN_FULL_CHECK);
        let s = parse(
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[realtime]\nring_buffer_bytes = 4096\n\
             [schedule]\nfull_check = \"366d\"\n",
        )
        .unwrap();
        assert_eq!(s.ring_buffer_bytes, 4096);
        assert_eq!(s.full_check, Some(MAX_FULL_CHECK));
        // The default jitter (1 h) never exceeds a shorter schedule.
        let s =
            parse("state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"5m\"\n").unwrap();
        assert_eq!(s.jitter, std::time::Duration::from_secs(300));
        let s = parse("state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[scan]\nthreads = 0\n").unwrap();
        assert!((1..=64).contains(&s.threads));
    }

    #[test]
    fn fimds_own_files_are_excluded_from_the_watches_holding_them() {
        let s = parse(
            "state_dir = \"/var/lib/fimd\"\n[[watch]]\npath = \"/var\"\n[[watch]]\npath = \"/etc\"\n\
             [alerts]\njsonl = \"/var/log/fimd/alerts.jsonl\"\njsonl_max_bytes = \"1M\"\n",
        )
        .unwrap();
        for own in [
            "/var/lib/fimd",
            "/var/lib/fimd/baseline.db",
            "/var/lib/fimd/baseline.db-wal",
            "/var/lib/fimd/hmac.key",
            "/var/log/fimd/alerts.jsonl",
            "/var/log/fimd/alerts.jsonl.1",
            "/var/log/fimd/alerts.jsonl.12",
        ] {
            assert!(!s.covers(Path::new(own)), "{own} is fimd's own and still watched");
        }
        for other in [
            "/var/lib/fimdx",
            "/var/lib/other",
            "/var/log/fimd",
            "/var/log/fimd/alerts.jsonl.bak",
            "/var/log/fimd/alerts.jsonl.",
            "/var/log/fimd/alerts.jsonlx",
        ] {
            assert!(s.covers(Path::new(other)), "{other} was excluded too");
        }
        // The baseline records it, for the watch that holds them only.
        let coverage = s.coverage();
        assert!(
            coverage.contains("\"/var\" policy=static one_filesystem=true exclude=[] own=[\"state_dir=/var/lib/fimd\", \"alerts.jsonl=/var/log/fimd/alerts.jsonl\"]"),
            "{coverage}"
        );
        assert!(
            coverage.contains("\"/etc\" policy=static one_filesystem=true exclude=[]\n")
                || coverage.ends_with("exclude=[]"),
            "{coverage}"
        );
        // Outside every watch: nothing recorded, so older baselines keep matching.
        let s = parse("state_dir = \"/var/lib/fimd\"\n[[watch]]\npath = \"/etc\"\n").unwrap();
        assert_eq!(
            s.coverage(),
            "\"/etc\" policy=static one_filesystem=true exclude=[]"
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/etc\"\nbogus = 1\n",
                4,
                "unknown field `bogus`",
            ),
            ("state_dir = \"/s\"\n[[watch]]\npath = 3\n", 3, "invalid type"),
            (
                "state_dir = \"rel\"\n[[watch]]\npath = \"/etc\"\n",
                1,
                "state_dir: \"rel\" is relative",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"etc\"\n",
                3,
                "watch.path: \"etc\" is relative",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/var/log\"\npolicy = \"append-only\"\n[[watch]]\npath = \"/var\"\n",
                6,
                "nested with /var/log (policy append-only, line 3)",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\npolicy = \"sometimes\"\n",
                4,
                "unknown policy",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\nexclude = [\"[\"]\n",
                4,
                "bad glob",
            ),
            ("state_dir = \"/s\"\n", 1, "no [[watch]]"),
            (
                "state_dir = \"/var/lib/fimd\"\n[[watch]]\npath = \"/var/lib/fimd/db\"\n",
                3,
                "watch.path: /var/lib/fimd/db lies in fimd's own state_dir (line 1)",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/s\"\n",
                3,
                "lies in fimd's own state_dir",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/var/log/a.jsonl\"\n[alerts]\njsonl = \"/var/log/a.jsonl\"\n",
                3,
                "lies in fimd's own alerts.jsonl (line 5)",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"500000000000y\"\n",
                5,
                "schedule.full_check: \"500000000000y\" is out of range",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"1ns\"\n",
                5,
                "schedule.full_check: \"1ns\" is out of range",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"59s\"\n",
                5,
                "give 1 minute",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"367d\"\n",
                5,
                "to 366 days",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"99999999999999999999y\"\n",
                5,
                "schedule.full_check: ",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"1h\"\njitter = \"61m\"\n",
                6,
                "schedule.jitter: \"61m\" is longer than schedule.full_check",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"0\"\njitter = \"400000y\"\n",
                6,
                "is longer than 366 days",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[scan]\nthreads = 99999999999\n",
                5,
                "scan.threads: 99999999999 is out of range",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[scan]\nthreads = -4\n",
                5,
                "scan.threads: -4 is out of range",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[realtime]\nring_buffer_bytes = 2147483648\n",
                5,
                "realtime.ring_buffer_bytes: 2147483648 is not a power of two from 4096 to 268435456",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[realtime]\nring_buffer_bytes = 2048\n",
                5,
                "realtime.ring_buffer_bytes: 2048",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[realtime]\nring_buffer_bytes = 12288\n",
                5,
                "not a power of two",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[realtime]\nring_buffer_bytes = 8589934592\n",
                5,
                "realtime.ring_buffer_bytes",
            ),
            (
                "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[alerts]\njsonl = \"a.jsonl\"\n",
                5,
                "alerts.jsonl",
            ),
        ];
        for (text, line, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("/etc/fimd.toml:{line}: ")),
                "wrong line for {text:?}: {err}"
            );
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }
}
