//! The JSON-lines alert sink: a file (appended, created 0600) or stdout.
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;

use crate::config::AlertSink;

#[derive(Debug, thiserror::Error)]
#[error("cannot write alerts to {target}: {err}")]
pub struct SinkError {
    target: String,
    err: std::io::Error,
}

pub struct JsonlSink {
    out: BufWriter<Box<dyn Write + Send>>,
    target: String,
}

impl JsonlSink {
    pub fn open(sink: &AlertSink) -> Result<JsonlSink, SinkError> {
        let (out, target): (Box<dyn Write + Send>, String) = match sink {
            AlertSink::Stdout => (Box::new(std::io::stdout()), "stdout".into()),
            AlertSink::File(path) => {
                let err = |err| SinkError {
                    target: path.display().to_string(),
                    err,
                };
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(err)?;
                }
                let f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(err)?;
                (Box::new(f), path.display().to_string())
            }
        };
        Ok(JsonlSink {
            out: BufWriter::new(out),
            target,
        })
    }

    pub fn write(&mut self, doc: &serde_json::Value) -> Result<(), SinkError> {
        let r = serde_json::to_writer(&mut self.out, doc)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        r.map_err(|err| SinkError {
            target: self.target.clone(),
            err,
        })
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|err| SinkError {
            target: self.target.clone(),
            err,
        })
    }
}
