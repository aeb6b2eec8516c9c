//! File names are bytes. Text output keeps valid UTF-8 as it is; anything else is escaped
//! reversibly and the raw bytes travel alongside in base64.
use base64::Engine as _;

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
