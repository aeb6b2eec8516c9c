//! `fimd baseline show|export`: the verified baseline as JSON lines or `sha256sum` lines.
use std::io::Write;
use std::process::ExitCode;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{EXIT_CLEAN, exit, open_baseline};
use crate::baseline::store::hex;
use crate::config::Settings;
use crate::output::alert::file_fields;

pub fn show(settings: &Settings) -> anyhow::Result<ExitCode> {
    let (_store, _key, baseline) = open_baseline(settings)?;
    let entries = baseline.entries;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for e in &entries {
        let mut doc = file_fields(e);
        doc.insert("nlink".into(), json!(e.nlink));
        doc.insert("device".into(), json!(e.dev.to_string()));
        // lsattr letters; "none" where no flags were recorded.
        doc.insert("flags".into(), json!(crate::scan::flags::letters(e.flags)));
        if !e.xattrs.is_empty() {
            let b64 = base64::engine::general_purpose::STANDARD;
            let x: serde_json::Map<String, Value> = e
                .xattrs
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), json!(b64.encode(v))))
                .collect();
            doc.insert("xattrs_b64".into(), Value::Object(x));
        }
        serde_json::to_writer(&mut out, &doc)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(exit(EXIT_CLEAN))
}

/// Lines `sha256sum -c` accepts. Like GNU coreutils, a name holding a backslash or newline is
/// escaped and its line starts with a backslash.
pub fn export(settings: &Settings) -> anyhow::Result<ExitCode> {
    let (_store, _key, baseline) = open_baseline(settings)?;
    let entries = baseline.entries;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for e in &entries {
        let Some(h) = &e.sha256 else { continue };
        let needs_escape = e.path.iter().any(|&b| b == b'\\' || b == b'\n' || b == b'\r');
        if needs_escape {
            out.write_all(b"\\")?;
        }
        out.write_all(hex(h).as_bytes())?;
        out.write_all(b"  ")?;
        if needs_escape {
            for &b in &e.path {
                match b {
                    b'\\' => out.write_all(b"\\\\")?,
                    b'\n' => out.write_all(b"\\n")?,
                    b'\r' => out.write_all(b"\\r")?,
                    _ => out.write_all(&[b])?,
                }
            }
        } else {
            out.write_all(&e.path)?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(exit(EXIT_CLEAN))
}

pub fn history(settings: &Settings) -> anyhow::Result<ExitCode> {
    let (_store, _key, baseline) = open_baseline(settings)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for h in &baseline.history {
        let mut doc = serde_json::to_value(h)?;
        if let (Some(p), Some(obj)) = (&h.path, doc.as_object_mut()) {
            obj.insert("path".into(), json!(crate::paths::path_text(p).0));
        }
        serde_json::to_writer(&mut out, &doc)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(exit(EXIT_CLEAN))
}
