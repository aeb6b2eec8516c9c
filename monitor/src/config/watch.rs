//! `[[watch]]`: which trees are watched, under which policy, minus which names; where rotated
//! logs go; and fimd's own files, excluded from every watch holding them.
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use toml::Spanned;

use super::values::{TableError, absolute, invalid, line_of};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
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
    /// Append-only watches: rotations here keep no copy (logrotate `rotate 0`).
    #[serde(default)]
    rotate_keeps_none: Option<Spanned<bool>>,
}

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
    /// Rotations in this watch keep no copy of the log (logrotate `rotate 0`): a live log that
    /// restarts empty or shorter, with no rotated file, is one rotation whose lost content is
    /// reported as an event. Off by default, because such a rotation cannot be told from a
    /// wiped log (PCI DSS 10.5.5: any change other than an append alerts).
    pub rotate_keeps_none: bool,
}

impl Watch {
    /// Whether logs in this watch rotate at all: append-only, with rotated names or
    /// `rotate_keeps_none`. Their directories' changes are judged together once quiet.
    pub fn rotates(&self) -> bool {
        self.policy == Policy::AppendOnly && (!self.rotate.is_empty() || self.rotate_keeps_none)
    }
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

/// Validates every `[[watch]]` table, each with the span of its path; fimd's own files are
/// added to the excludes later, once `[alerts]` is known.
pub(super) fn validate(
    raw: &[Spanned<RawWatch>],
    text: &str,
) -> Result<Vec<(Watch, Range<usize>)>, TableError> {
    let mut watches: Vec<(Watch, Range<usize>)> = Vec::new();
    for w in raw {
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
        let rotate_keeps_none = match &w.rotate_keeps_none {
            Some(k) if *k.get_ref() && policy != Policy::AppendOnly => {
                return Err(invalid(
                    k.span(),
                    "watch.rotate_keeps_none: rotation is allowed only for policy = \"append-only\"; \
                     remove it or set the policy"
                        .into(),
                ));
            }
            Some(k) => *k.get_ref(),
            None => false,
        };
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
                rotate_keeps_none,
            },
            w.path.span(),
        ));
    }
    Ok(watches)
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;
    use std::path::Path;

    fn parse(keys: &str) -> Result<Settings, String> {
        let text = format!("state_dir = \"/nonexistent\"\n[[watch]]\npath = \"/var/log\"\n{keys}\n");
        Settings::parse(Path::new("fimd.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn rotate_keeps_none_is_for_append_only_watches_and_makes_them_rotate() {
        let s = parse("policy = \"append-only\"\nrotate_keeps_none = true").unwrap();
        assert!(s.watches[0].rotate_keeps_none && s.watches[0].rotates());
        let s = parse("policy = \"append-only\"").unwrap();
        assert!(!s.watches[0].rotate_keeps_none && !s.watches[0].rotates());
        let e = parse("policy = \"static\"\nrotate_keeps_none = true").unwrap_err();
        assert!(e.contains("fimd.toml:5: watch.rotate_keeps_none"), "{e}");
        assert!(parse("policy = \"static\"\nrotate_keeps_none = false").is_ok());
        let e = parse("policy = \"append-only\"\nrotate_keeps_none = \"yes\"").unwrap_err();
        assert!(e.contains("fimd.toml:5") && e.contains("boolean"), "{e}");
    }
}
