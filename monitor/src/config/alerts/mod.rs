//! `[alerts]`: where alerts go. The table as written (`RawAlerts`) and the validated
//! `SinkSettings` the dispatcher in `output` starts from; `[alerts.syslog]` and
//! `[alerts.webhook]` have a file each.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::values::{TableError, bounded, err, parse_size};

mod syslog;
mod webhook;

pub use syslog::{DEFAULT_APP_NAME, DEFAULT_SYSLOG_TARGET, RawSyslog, SyslogSettings, SyslogTarget};
pub use webhook::{DEFAULT_BATCH, DEFAULT_FLUSH_MS, DEFAULT_TIMEOUT_MS, RawWebhook, WebhookSettings};

/// Documents a sink may hold while it cannot deliver; past that they are dropped and counted.
pub const DEFAULT_QUEUE: usize = 10_000;
/// Most `alerts.queue`: 1,000,000 documents. An alert document is 1 to 2 KB, so a full queue
/// holds 1 to 2 GB (shared by the sinks); ten million would be ten times that, in a daemon that
/// must never be the reason a host runs out of memory. A day of 10 alerts a second fits.
pub const MAX_QUEUE: i64 = 1_000_000;
pub const DEFAULT_JSONL_KEEP: u32 = 5;

/// The `[alerts]` table as written. Unknown keys are refused: a typo must not silently turn a
/// SIEM feed off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub jsonl: Option<Spanned<String>>,
    pub jsonl_max_bytes: Option<Spanned<toml::Value>>,
    pub jsonl_keep: Option<Spanned<i64>>,
    pub queue: Option<Spanned<i64>>,
    pub syslog: Option<Spanned<RawSyslog>>,
    pub webhook: Option<Spanned<RawWebhook>>,
}

/// The validated `[alerts]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSettings {
    pub jsonl: Option<JsonlTarget>,
    pub syslog: Option<SyslogSettings>,
    pub webhook: Option<WebhookSettings>,
    /// Per-sink bounded queue length.
    pub queue: usize,
    /// Pause between delivery attempts of a network sink: doubles from `first` up to `max`.
    /// Not configurable in TOML; tests shorten it.
    pub retry_first: Duration,
    pub retry_max: Duration,
}

impl Default for SinkSettings {
    fn default() -> SinkSettings {
        SinkSettings {
            jsonl: None,
            syslog: None,
            webhook: None,
            queue: DEFAULT_QUEUE,
            retry_first: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonlTarget {
    Stdout,
    File {
        path: PathBuf,
        /// Rotate before a line would take the file past this size; `None` = never.
        max_bytes: Option<u64>,
        /// Rotated files kept: `path.1` (newest) … `path.keep`.
        keep: u32,
    },
}

impl RawAlerts {
    pub fn validate(&self) -> Result<SinkSettings, TableError> {
        let jsonl = self.validate_jsonl()?;
        let queue = bounded(&self.queue, "alerts.queue", 1, MAX_QUEUE, DEFAULT_QUEUE as i64)? as usize;
        let syslog = match &self.syslog {
            None => None,
            Some(s) => Some(syslog::validate(s.get_ref())?),
        };
        let webhook = match &self.webhook {
            None => None,
            Some(w) => Some(webhook::validate(w.get_ref())?),
        };
        Ok(SinkSettings {
            jsonl,
            syslog,
            webhook,
            queue,
            ..SinkSettings::default()
        })
    }

    fn validate_jsonl(&self) -> Result<Option<JsonlTarget>, TableError> {
        let rotation_key = self
            .jsonl_max_bytes
            .as_ref()
            .map(|v| ("alerts.jsonl_max_bytes", v.span()))
            .or(self.jsonl_keep.as_ref().map(|v| ("alerts.jsonl_keep", v.span())));
        let Some(s) = &self.jsonl else {
            return match rotation_key {
                Some((key, span)) => err(
                    span,
                    format!(
                        "{key}: there is no alerts.jsonl file to rotate; set alerts.jsonl or remove {key}"
                    ),
                ),
                None => Ok(None),
            };
        };
        if s.get_ref() == "-" {
            return match rotation_key {
                Some((key, span)) => err(
                    span,
                    format!(
                        "{key}: alerts go to stdout (alerts.jsonl = \"-\"), which cannot rotate; remove {key} \
                         or give alerts.jsonl an absolute file path"
                    ),
                ),
                None => Ok(Some(JsonlTarget::Stdout)),
            };
        }
        let path = Path::new(s.get_ref());
        if !path.is_absolute() {
            return err(
                s.span(),
                format!(
                    "alerts.jsonl: {:?} is relative; give an absolute path or \"-\" for stdout",
                    s.get_ref()
                ),
            );
        }
        if path.file_name().is_none() || s.get_ref().ends_with('/') {
            return err(
                s.span(),
                format!(
                    "alerts.jsonl: {:?} names a directory; give a file path such as \"/var/log/fimd/alerts.jsonl\"",
                    s.get_ref()
                ),
            );
        }
        let max_bytes = match &self.jsonl_max_bytes {
            None => None,
            Some(v) => match parse_size(v.get_ref()) {
                Some(n) if n > 0 => Some(n),
                _ => {
                    return err(
                        v.span(),
                        "alerts.jsonl_max_bytes: give a size above 0 as bytes (104857600) or with a K, M or G \
                         suffix (\"100M\"); remove the key to never rotate"
                            .into(),
                    );
                }
            },
        };
        if max_bytes.is_none()
            && let Some(k) = &self.jsonl_keep
        {
            return err(
                k.span(),
                "alerts.jsonl_keep: files rotate only when alerts.jsonl_max_bytes is set; set it or remove \
                 alerts.jsonl_keep"
                    .into(),
            );
        }
        let keep = bounded(
            &self.jsonl_keep,
            "alerts.jsonl_keep",
            1,
            1000,
            DEFAULT_JSONL_KEEP.into(),
        )? as u32;
        Ok(Some(JsonlTarget::File {
            path: path.to_owned(),
            max_bytes,
            keep,
        }))
    }
}

#[cfg(test)]
mod tests;
