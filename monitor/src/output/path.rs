//! File names are bytes. Text output keeps valid UTF-8 as it is; anything else is escaped
//! reversibly and the raw bytes travel alongside in base64.
use base64::Engine as _;

/// The path as text, and the base64 of the raw bytes when escaping was needed.
///
/// Escaped form: invalid bytes as `\xNN` and backslashes doubled, so it decodes back exactly.
pub fn path_text(bytes: &[u8]) -> (String, Option<String>) {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return (s.to_owned(), None);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(ch);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
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
    }
}
