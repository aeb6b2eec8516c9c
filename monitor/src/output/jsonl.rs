//! The JSON-lines alert sink: a file (appended, created 0600, rotated by size) or stdout.
use std::ffi::OsString;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::dispatch::Worker;
use super::sink::JsonlTarget;
pub use super::sink::SinkError;

/// Size-based rotation of a file sink.
struct Rotation {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// Bytes in the current file, including what is still buffered.
    size: u64,
}

pub struct JsonlSink {
    out: BufWriter<Box<dyn Write + Send>>,
    target: JsonlTarget,
    rotation: Option<Rotation>,
}

fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// `alerts.jsonl.3` for `alerts.jsonl` and 3.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl JsonlSink {
    pub fn open_target(target: &JsonlTarget) -> Result<JsonlSink, SinkError> {
        let mut sink = JsonlSink {
            out: BufWriter::new(Box::new(std::io::sink())),
            target: target.clone(),
            rotation: None,
        };
        sink.reopen()?;
        Ok(sink)
    }

    fn target_name(&self) -> String {
        match &self.target {
            JsonlTarget::Stdout => "stdout".into(),
            JsonlTarget::File { path, .. } => path.display().to_string(),
        }
    }

    fn error(&self, err: std::io::Error) -> SinkError {
        SinkError::Io {
            target: self.target_name(),
            err,
        }
    }

    /// Opens the target afresh, discarding anything buffered (after a failed write, what the
    /// buffer holds may already be half written).
    fn reopen(&mut self) -> Result<(), SinkError> {
        let out: Box<dyn Write + Send> = match &self.target {
            JsonlTarget::Stdout => Box::new(std::io::stdout()),
            JsonlTarget::File {
                path,
                max_bytes,
                keep,
            } => {
                let f = open_file(path).map_err(|e| self.error(e))?;
                self.rotation = match max_bytes {
                    Some(max) => Some(Rotation {
                        path: path.clone(),
                        max_bytes: *max,
                        keep: *keep,
                        size: f.metadata().map_err(|e| self.error(e))?.len(),
                    }),
                    None => None,
                };
                Box::new(f)
            }
        };
        let old = std::mem::replace(&mut self.out, BufWriter::new(out));
        let _ = old.into_parts();
        Ok(())
    }

    /// Renames `f.(k-1)` → `f.k` … `f` → `f.1` (the oldest is replaced) and starts a new `f`.
    fn rotate(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.error(e))?;
        let Some(r) = &self.rotation else { return Ok(()) };
        for n in (1..r.keep).rev() {
            match std::fs::rename(numbered(&r.path, n), numbered(&r.path, n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(self.error(e)),
                _ => {}
            }
        }
        std::fs::rename(&r.path, numbered(&r.path, 1)).map_err(|e| self.error(e))?;
        self.reopen()
    }

    /// Writes one serialised document and its newline, rotating first when the line would take
    /// the file past its size limit (a line larger than the limit gets a file of its own).
    pub fn write_line(&mut self, json: &str) -> Result<(), SinkError> {
        let len = json.len() as u64 + 1;
        if let Some(r) = &self.rotation
            && r.size > 0
            && r.size + len > r.max_bytes
        {
            self.rotate()?;
        }
        let r = self
            .out
            .write_all(json.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"));
        r.map_err(|e| self.error(e))?;
        if let Some(r) = &mut self.rotation {
            r.size += len;
        }
        Ok(())
    }

    pub fn write(&mut self, doc: &serde_json::Value) -> Result<(), SinkError> {
        let json = serde_json::to_string(doc).map_err(|e| self.error(e.into()))?;
        self.write_line(&json)
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.error(e))
    }
}

/// Documents written between two flushes: bounds what one failed flush can lose.
const BATCH: usize = 256;

/// The sink thread: writes what the queue holds, flushing whenever it runs dry so a reader
/// (`tail -f`, a log shipper) sees each alert at once.
pub(crate) fn run(mut out: JsonlSink, w: Worker) {
    let mut failing = false;
    while let Some(docs) = w.queue.take(BATCH, Duration::ZERO) {
        let mut result = Ok(());
        for d in &docs {
            result = out.write_line(&d.json);
            if result.is_err() {
                break;
            }
        }
        let result = result.and_then(|()| out.flush());
        match result {
            Ok(()) => {
                if failing {
                    eprintln!("fimd: writing alerts to {} again", out.target_name());
                    failing = false;
                }
                w.counters.sent(docs.len());
            }
            Err(e) => {
                // The whole batch is counted lost: part of it may be in the file, but which part
                // cannot be told once the buffer is gone.
                if !failing {
                    eprintln!(
                        "fimd: {e}; alerts for this sink are dropped (and counted) until it works again"
                    );
                    failing = true;
                }
                w.counters.dropped(docs.len());
                // If the file cannot be opened again the next write fails and says so.
                let _ = out.reopen();
            }
        }
        w.queue.settle(docs.len());
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut s = JsonlSink::open_target(&JsonlTarget::File {
            path: path.clone(),
            max_bytes: Some(100),
            keep: 2,
        })
        .unwrap();
        let line = "x".repeat(39); // 40 bytes with its newline: two per file
        for _ in 0..9 {
            s.write_line(&line).unwrap();
        }
        // A line larger than the limit gets a file of its own.
        s.write_line(&"y".repeat(150)).unwrap();
        s.flush().unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), format!("{}\n", "y".repeat(150)));
        assert_eq!(read(&numbered(&path, 1)), format!("{line}\n"));
        assert_eq!(read(&numbered(&path, 2)), format!("{line}\n{line}\n"));
        assert!(!numbered(&path, 3).exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn existing_size_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, "z".repeat(90)).unwrap();
        let mut s = JsonlSink::open_target(&JsonlTarget::File {
            path: path.clone(),
            max_bytes: Some(100),
            keep: 1,
        })
        .unwrap();
        s.write_line("short line").unwrap();
        s.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 1)).unwrap(),
            "z".repeat(90)
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short line\n");
    }
}
