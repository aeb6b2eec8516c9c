//! Configuration: the TOML document as written and the validated `Settings` every command works
//! from, one file per table (`[[watch]]`, `[alerts]`, `[scan]`, `[realtime]`, `[schedule]`,
//! `[metrics]`) and the value forms they share (`values`). The bottom of the crate: it imports
//! nothing from it but `paths` and `fstype` (both leaves).
//!
//! Every error names the file, the line and the key, so an operator can fix it without guessing.
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub mod alerts;
mod metrics;
mod realtime;
mod scan;
mod schedule;
mod values;
mod watch;

pub use alerts::{JsonlTarget, RawAlerts, SinkSettings};
pub use realtime::{DEFAULT_RING_BYTES, MAX_RING_BYTES, MIN_RING_BYTES, SensorChoice, WATCHED_INODES_RANGE};
pub use scan::{DEFAULT_MAX_FILE_SIZE, MAX_THREADS};
pub use schedule::{DEFAULT_FULL_CHECK, DEFAULT_JITTER, MAX_FULL_CHECK, MIN_FULL_CHECK};
pub use values::{TableError, parse_size};
pub use watch::{Excludes, OwnFiles, Policy, Rotate, Watch};

use values::{absolute, line_of};

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
    watch: Vec<Spanned<watch::RawWatch>>,
    #[serde(default)]
    alerts: alerts::RawAlerts,
    #[serde(default)]
    scan: scan::RawScan,
    #[serde(default)]
    realtime: realtime::RawRealtime,
    #[serde(default)]
    metrics: metrics::RawMetrics,
    #[serde(default)]
    schedule: schedule::RawSchedule,
    /// Where the host's root filesystem is, when fimd runs in a container (`/host`): used to
    /// name the pods that changed files.
    host_root: Option<Spanned<PathBuf>>,
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
        let located = |e: TableError| invalid(e.span.unwrap_or(0..0), e.message);
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
        let mut watches = watch::validate(&raw.watch, text).map_err(located)?;
        let alerts = raw.alerts.validate().map_err(located)?;

        // fimd's own files: excluded from every watch holding them; a watch inside them is
        // refused (it would watch nothing but fimd).
        let mut own = vec![(
            OwnFiles::StateDir(state_dir.as_os_str().as_bytes().to_vec()),
            "state_dir",
            raw.state_dir.span(),
        )];
        if let (Some(JsonlTarget::File { path: a, .. }), Some(span)) =
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
                if crate::paths::is_under(o.path(), root) {
                    w.exclude.own.push(o.clone());
                }
            }
        }

        let (threads, max_file_size) = raw.scan.validate().map_err(located)?;
        let realtime = raw.realtime.validate().map_err(located)?;
        let (full_check, jitter) = raw.schedule.validate().map_err(located)?;
        let metrics_listen = raw.metrics.validate().map_err(located)?;

        Ok(Settings {
            source: path.to_owned(),
            state_dir,
            hmac_key,
            watches: watches.into_iter().map(|(w, _)| w).collect(),
            alerts,
            threads,
            max_file_size,
            ring_buffer_bytes: realtime.ring_buffer_bytes,
            sensor: realtime.sensor,
            max_watched_inodes: realtime.max_watched_inodes,
            metrics_listen,
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
    /// not on a pseudo-filesystem (proc, sysfs, cgroup, …: see `crate::fstype`).
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
            if let Ok(Some(fs)) = crate::fstype::pseudo_fs_at(&real) {
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

    /// The policy that governs `path` (bytes): its deepest watch's, `Static` outside every watch.
    pub fn policy_of(&self, path: &[u8]) -> Policy {
        self.watch_for(Path::new(std::ffi::OsStr::from_bytes(path)))
            .map_or(Policy::Static, |w| w.policy)
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

#[cfg(test)]
mod tests;
