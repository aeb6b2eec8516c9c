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
pub const DEFAULT_JITTER: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRealtime {
    /// Kernel-to-daemon ring buffer size in bytes: a power of two, at least 4096.
    ring_buffer_bytes: Option<Spanned<u32>>,
    sensor: Option<SensorChoice>,
}

/// `[realtime] sensor`: which kernel sensor `fimd run` and `fimd selftest` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorChoice {
    /// The eBPF sensor where it loads, else fanotify.
    #[default]
    Auto,
    /// Only eBPF: `run` fails (exit 2) with the reason when it cannot load.
    Ebpf,
    /// Only fanotify (needs CAP_SYS_ADMIN for filesystem marks).
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
    /// Scanning threads; 0 or absent means four per core.
    threads: Option<usize>,
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
#[derive(Debug, Clone)]
pub struct Excludes {
    full: GlobSet,
    name: GlobSet,
    /// As written, for the baseline's record of what it covers.
    pub patterns: Vec<String>,
}

impl Excludes {
    pub fn is_excluded(&self, path: &[u8], name: &[u8]) -> bool {
        use std::ffi::OsStr;
        self.full.is_match(Path::new(OsStr::from_bytes(path)))
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

        // Reads from a cold cache wait on the disk: more threads than cores keep the cores busy
        // (measured on /usr: cold 32.7 s with 2 threads, 22.2 s with 8; warm unchanged).
        let threads = match raw.scan.threads {
            Some(n) if n > 0 => n,
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
            Some(n) if n.get_ref().is_power_of_two() && *n.get_ref() >= 4096 => *n.get_ref(),
            Some(n) => {
                return Err(invalid(
                    n.span(),
                    format!(
                        "realtime.ring_buffer_bytes: {} is not a power of two of at least 4096",
                        n.get_ref()
                    ),
                ));
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
            full_check: match &raw.schedule.full_check {
                None => Some(DEFAULT_FULL_CHECK),
                Some(d) if d.get_ref().trim() == "0" => None,
                Some(d) => Some(duration(d, "schedule.full_check")?),
            },
            jitter: match &raw.schedule.jitter {
                None => DEFAULT_JITTER,
                Some(d) if d.get_ref().trim() == "0" => std::time::Duration::ZERO,
                Some(d) => duration(d, "schedule.jitter")?,
            },
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
                format!(
                    "{:?} policy={} one_filesystem={} exclude={:?}",
                    w.path.display().to_string(),
                    w.policy.as_str(),
                    w.one_filesystem,
                    w.exclude.patterns
                )
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// Checks that every watched path exists under `root` (the host's `/` by default).
    pub fn check_paths_exist(&self, root: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(&self.source).unwrap_or_default();
        for w in &self.watches {
            let real = reroot(root, &w.path);
            if std::fs::symlink_metadata(&real).is_err() {
                let needle = format!("{:?}", w.path.display().to_string());
                let line = text.find(&needle).map_or(0, |at| line_of(&text, at));
                return Err(ConfigError::Invalid {
                    path: self.source.clone(),
                    line,
                    message: format!(
                        "watch.path: {} does not exist; create it or remove this [[watch]]",
                        real.display()
                    ),
                });
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
