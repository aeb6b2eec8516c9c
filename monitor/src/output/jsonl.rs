//! The JSON-lines alert sink: a file (appended, created 0600, rotated by size) or stdout.
use std::ffi::OsString;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::queue::Worker;
pub use super::sink::SinkError;
use crate::config::alerts::JsonlTarget;

/// Size-based rotation of a file sink.
struct Rotation {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// Bytes in the current file, including what is still buffered.
    size: u64,
}

/// Lines are whole or absent: after a failed write (a full disk) the file is cut back to the
/// end of its last complete line, so the next alert never lands glued to half of one.
pub struct JsonlSink {
    out: BufWriter<Box<dyn Write + Send>>,
    target: JsonlTarget,
    rotation: Option<Rotation>,
    /// The open file (another handle to it), to cut it back; `None` for stdout.
    file: Option<std::fs::File>,
    /// Bytes of whole lines known to be in the file.
    committed: u64,
    /// Bytes handed to `out` since the last successful flush.
    pending: u64,
}

fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// The length of `f` up to and including its last newline: where a torn last line (a crash or
/// a full disk in the middle of a write) begins. Reads backwards from the end, 64 KiB at a time.
fn whole_lines_len(f: &std::fs::File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
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
            file: None,
            committed: 0,
            pending: 0,
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
    /// buffer holds may already be half written), and cuts a torn last line off the file.
    fn reopen(&mut self) -> Result<(), SinkError> {
        let old = std::mem::replace(&mut self.out, BufWriter::new(Box::new(std::io::sink())));
        let _ = old.into_parts();
        self.file = None;
        self.pending = 0;
        let out: Box<dyn Write + Send> = match &self.target {
            JsonlTarget::Stdout => Box::new(std::io::stdout()),
            JsonlTarget::File {
                path,
                max_bytes,
                keep,
            } => {
                let f = open_file(path).map_err(|e| self.error(e))?;
                let whole = whole_lines_len(&f).map_err(|e| self.error(e))?;
                if whole < f.metadata().map_err(|e| self.error(e))?.len() {
                    f.set_len(whole).map_err(|e| self.error(e))?;
                }
                self.committed = whole;
                self.rotation = max_bytes.map(|max| Rotation {
                    path: path.clone(),
                    max_bytes: max,
                    keep: *keep,
                    size: whole,
                });
                self.file = Some(f.try_clone().map_err(|e| self.error(e))?);
                Box::new(f)
            }
        };
        self.out = BufWriter::new(out);
        Ok(())
    }

    /// After a failed write: forgets what is buffered and cuts the file back to its last whole
    /// line, then opens it again. Everything since the last successful flush is gone.
    fn roll_back(&mut self) -> Result<(), SinkError> {
        let old = std::mem::replace(&mut self.out, BufWriter::new(Box::new(std::io::sink())));
        let _ = old.into_parts();
        if let Some(f) = &self.file {
            // Shrinking needs no space, so it works on a full disk.
            f.set_len(self.committed).map_err(|e| self.error(e))?;
        }
        self.reopen()
    }

    /// Renames `f.(k-1)` → `f.k` … `f` → `f.1` (the oldest is replaced) and starts a new `f`.
    fn rotate(&mut self) -> Result<(), SinkError> {
        self.flush()?;
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
        self.pending += len;
        if let Some(r) = &mut self.rotation {
            r.size += len;
        }
        Ok(())
    }

    /// Writes out what is buffered; only then do its lines count as in the file.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.error(e))?;
        self.committed += std::mem::take(&mut self.pending);
        Ok(())
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
                w.sent(docs.len());
            }
            Err(e) => {
                // The whole batch is counted lost, and the file is cut back to where the batch
                // began: no line of it stays, whole or half.
                if !failing {
                    eprintln!(
                        "fimd: {e}; alerts for this sink are dropped (and counted) until it works again"
                    );
                    failing = true;
                }
                w.dropped(docs.len());
                // If the file cannot be cut back or opened again, the next write fails and says so.
                if let Err(e) = out.roll_back() {
                    eprintln!("fimd: {e}");
                }
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
    fn a_torn_last_line_is_cut_off_before_the_next_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for (before, kept) in [
            ("{\"a\":1}\n{\"b\":", "{\"a\":1}\n"),
            ("{\"half", ""),
            ("{\"a\":1}\n", "{\"a\":1}\n"),
            ("", ""),
        ] {
            let path = dir.path().join("a.jsonl");
            std::fs::write(&path, before).unwrap();
            let mut s = JsonlSink::open_target(&JsonlTarget::File {
                path: path.clone(),
                max_bytes: None,
                keep: 1,
            })
            .unwrap();
            s.write_line("{\"c\":3}").unwrap();
            s.flush().unwrap();
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                format!("{kept}{{\"c\":3}}\n")
            );
        }
        // A tail longer than one read of the backwards scan.
        let path = dir.path().join("long.jsonl");
        std::fs::write(&path, format!("{{}}\n{}", "x".repeat(200_000))).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        assert_eq!(whole_lines_len(&f).unwrap(), 3);
    }

    #[test]
    fn a_failed_batch_is_rolled_back_to_the_last_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut s = JsonlSink::open_target(&JsonlTarget::File {
            path: path.clone(),
            max_bytes: None,
            keep: 1,
        })
        .unwrap();
        s.write_line("{\"kept\":1}").unwrap();
        s.flush().unwrap();
        // Lines of a batch that reached the file before the batch failed.
        s.write_line(&format!("{{\"lost\":\"{}\"}}", "y".repeat(20_000)))
            .unwrap();
        s.out.flush().unwrap();
        use std::io::Write as _;
        s.file.as_ref().unwrap().write_all(b"{\"half").unwrap();
        s.roll_back().unwrap();
        s.write_line("{\"next\":2}").unwrap();
        s.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"kept\":1}\n{\"next\":2}\n"
        );
    }

    #[test]
    fn existing_size_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        // 90 bytes of whole lines (a torn last line would be cut off first).
        let before = format!("{}\n", "z".repeat(89));
        std::fs::write(&path, &before).unwrap();
        let mut s = JsonlSink::open_target(&JsonlTarget::File {
            path: path.clone(),
            max_bytes: Some(100),
            keep: 1,
        })
        .unwrap();
        s.write_line("short line").unwrap();
        s.flush().unwrap();
        assert_eq!(std::fs::read_to_string(numbered(&path, 1)).unwrap(), before);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short line\n");
    }
}
