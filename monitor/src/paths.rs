//! Paths as bytes (Linux file names are not UTF-8): their last component, their parent, whether
//! one lies below another, and their text form. Text output keeps valid UTF-8 as it is; anything
//! else is escaped reversibly and the raw bytes travel alongside in base64.
//!
//! The lowest module of the crate: it imports nothing from it, so the baseline, output, the
//! daemon and the commands all share these.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use base64::Engine as _;

/// The last component of `path` (all of it when it has no `/`; empty for a path ending in `/`).
pub fn name_of(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

/// The directory holding `path`: `/` for a top-level name, `None` when `path` has no `/`.
pub fn parent_of(path: &[u8]) -> Option<&[u8]> {
    let i = path.iter().rposition(|&b| b == b'/')?;
    Some(if i == 0 { b"/" } else { &path[..i] })
}

/// `dir` and a child `name` joined by one `/` (none added after a `dir` ending in `/`).
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if dir.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Whether `path` is `dir` or lies below it, by whole components (`/etcx` is not under `/etc`).
pub fn is_under(path: &[u8], dir: &[u8]) -> bool {
    Path::new(OsStr::from_bytes(path)).starts_with(Path::new(OsStr::from_bytes(dir)))
}

/// The path as text, and the base64 of the raw bytes when escaping was needed.
///
/// Plain UTF-8 without control characters is kept as it is. Anything else is escaped so it
/// decodes back exactly and cannot move a terminal's cursor or forge an output line: invalid
/// bytes and control characters (C0, DEL, C1) as `\xNN` per byte, backslashes doubled.
pub fn path_text(bytes: &[u8]) -> (String, Option<String>) {
    let is_control = |c: char| c.is_control();
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.contains(is_control)
    {
        return (s.to_owned(), None);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    let hex = |out: &mut String, b: u8| out.push_str(&format!("\\x{b:02X}"));
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch == '\\' {
                out.push_str("\\\\");
            } else if is_control(ch) {
                let mut buf = [0u8; 4];
                for &b in ch.encode_utf8(&mut buf).as_bytes() {
                    hex(&mut out, b);
                }
            } else {
                out.push(ch);
            }
        }
        for &b in chunk.invalid() {
            hex(&mut out, b);
        }
    }
    (out, Some(base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// Undoes `path_text`'s escaping.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1)? {
            b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'x' => {
                let hex = text.get(i + 2..i + 4)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parents_are_whole_components() {
        assert_eq!(name_of(b"/var/log/app.log"), b"app.log");
        assert_eq!(name_of(b"app.log"), b"app.log");
        assert_eq!(name_of(b"/a\xffb"), b"a\xffb");
        assert_eq!(parent_of(b"/var/log/app.log"), Some(&b"/var/log"[..]));
        assert_eq!(parent_of(b"/etc"), Some(&b"/"[..]));
        assert_eq!(parent_of(b"app.log"), None);
        assert!(is_under(b"/var/log/x", b"/var/log") && is_under(b"/var/log", b"/var/log"));
        assert!(!is_under(b"/var/logs", b"/var/log") && !is_under(b"/var", b"/var/log"));
    }

    #[test]
    fn escaping_is_reversible() {
        for p in [
            &b"/etc/passwd"[..],
            b"/tmp/a\xffb\\c\xc3",
            b"/x/\xe2\x82\xac\n\x80",
        ] {
            let (text, raw) = path_text(p);
            match raw {
                None => assert_eq!(text.as_bytes(), p),
                Some(b64) => {
                    assert_eq!(unescape(&text).unwrap(), p);
                    assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap(), p);
                }
            }
        }
        assert_eq!(path_text(b"/a\xffb").0, "/a\\xFFb");
        assert_eq!(path_text(b"/x\x1b[2K\ny\xc2\x85").0, "/x\\x1B[2K\\x0Ay\\xC2\\x85");
        assert_eq!(
            path_text("/caf\u{e9}".as_bytes()),
            ("/caf\u{e9}".to_owned(), None)
        );
    }
}
