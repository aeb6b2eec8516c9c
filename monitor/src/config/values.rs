//! How values are written in any table, and the error that locates a bad one: sizes, absolute
//! paths, bounded integers, line numbers. The leaf of `config`: it imports nothing from the crate.
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, PathBuf};

use toml::Spanned;

/// A mistake in one key of a table: the span locates it in the TOML text, the message starts
/// with the dotted key and says how to fix it. [`super::Settings::parse`] turns it into a
/// [`super::ConfigError`] naming the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TableError {
    pub span: Option<Range<usize>>,
    pub message: String,
}

/// A [`TableError`] at `span`.
pub(super) fn invalid(span: Range<usize>, message: String) -> TableError {
    TableError {
        span: Some(span),
        message,
    }
}

pub(super) fn err<T>(span: Range<usize>, message: String) -> Result<T, TableError> {
    Err(invalid(span, message))
}

/// An integer key within `lo..=hi`.
pub(super) fn bounded(
    v: &Option<Spanned<i64>>,
    key: &str,
    lo: i64,
    hi: i64,
    default: i64,
) -> Result<i64, TableError> {
    match v {
        None => Ok(default),
        Some(n) if (lo..=hi).contains(n.get_ref()) => Ok(*n.get_ref()),
        Some(n) => err(
            n.span(),
            format!(
                "{key}: {} is out of range; give a number from {lo} to {hi}",
                n.get_ref()
            ),
        ),
    }
}

/// `p` made absolute and normalised, or why it cannot be (the message names `key`).
pub(super) fn absolute(p: &Spanned<PathBuf>, key: &str) -> Result<PathBuf, String> {
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
pub fn parse_size(v: &toml::Value) -> Option<u64> {
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
pub(super) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).unwrap_or(4096).max(1)
}

/// The 1-based line of byte `offset` in `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}
