//! Where alerts go: the `[alerts]` table as written (`RawAlerts`), the validated `SinkSettings`
//! the dispatcher starts from, and the error a sink reports when it cannot start.
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::parse_size;

/// Documents a sink may hold while it cannot deliver; past that they are dropped and counted.
pub const DEFAULT_QUEUE: usize = 10_000;
/// Most `alerts.queue`: 1,000,000 documents. An alert document is 1 to 2 KB, so a full queue
/// holds 1 to 2 GB (shared by the sinks); ten million would be ten times that, in a daemon that
/// must never be the reason a host runs out of memory. A day of 10 alerts a second fits.
pub const MAX_QUEUE: i64 = 1_000_000;
pub const DEFAULT_JSONL_KEEP: u32 = 5;
pub const DEFAULT_SYSLOG_TARGET: &str = "/dev/log";
pub const DEFAULT_APP_NAME: &str = "fimd";
pub const DEFAULT_BATCH: usize = 100;
pub const DEFAULT_FLUSH_MS: u64 = 1000;
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyslog {
    pub target: Option<Spanned<String>>,
    pub facility: Option<Spanned<String>>,
    pub app_name: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: Spanned<String>,
    pub batch: Option<Spanned<i64>>,
    pub flush_ms: Option<Spanned<i64>>,
    pub timeout_ms: Option<Spanned<i64>>,
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
}

/// A configuration mistake in `[alerts]`: the span locates it in the TOML text, the message
/// starts with the dotted key and says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkConfigError {
    pub span: Option<Range<usize>>,
    pub message: String,
}

/// Why a sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write alerts to {target}: {err}")]
    Io { target: String, err: std::io::Error },
    #[error("cannot start the {sink} alert sink thread: {err}")]
    Thread { sink: &'static str, err: std::io::Error },
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSettings {
    pub target: SyslogTarget,
    /// RFC 5424 facility code (0–23).
    pub facility: u8,
    pub app_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// A unix datagram socket such as `/dev/log`.
    Unix(PathBuf),
    /// `host:port`, resolved at each (re)connection so a DNS change is followed.
    Udp(String),
    Tcp(String),
}

impl std::fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogTarget::Unix(p) => write!(f, "unix:{}", p.display()),
            SyslogTarget::Udp(a) => write!(f, "udp://{a}"),
            SyslogTarget::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub url: String,
    /// Most documents in one POST.
    pub batch: usize,
    /// Longest a partial batch waits for more documents.
    pub flush: Duration,
    /// Whole-request timeout (connect, send, answer).
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
}

/// RFC 5424 section 6.2.1 facility names (`security`, `console` and `solaris-cron` have no
/// agreed names across syslog daemons and are left out).
const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

fn err<T>(span: Range<usize>, message: String) -> Result<T, SinkConfigError> {
    Err(SinkConfigError {
        span: Some(span),
        message,
    })
}

/// An integer key within `lo..=hi`.
fn bounded(
    v: &Option<Spanned<i64>>,
    key: &str,
    lo: i64,
    hi: i64,
    default: i64,
) -> Result<i64, SinkConfigError> {
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

/// `host:port` with a non-empty host (a bracketed IPv6 literal is fine) and a port from 1.
fn host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains('/')
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')))
        }
        None => false,
    }
}

fn syslog_target(t: &Spanned<String>) -> Result<SyslogTarget, SinkConfigError> {
    let s = t.get_ref().as_str();
    let bad = |why: &str| {
        err(
            t.span(),
            format!(
                "alerts.syslog.target: {s:?} {why}; write \"/dev/log\", \"unix:/path/to/socket\", \
                 \"udp://host:514\" or \"tcp://host:514\""
            ),
        )
    };
    if let Some(addr) = s.strip_prefix("udp://") {
        return if host_port(addr) {
            Ok(SyslogTarget::Udp(addr.to_owned()))
        } else {
            bad("is not host:port")
        };
    }
    if let Some(addr) = s.strip_prefix("tcp://") {
        return if host_port(addr) {
            Ok(SyslogTarget::Tcp(addr.to_owned()))
        } else {
            bad("is not host:port")
        };
    }
    let path = s.strip_prefix("unix:").unwrap_or(s);
    if path.starts_with('/') {
        return Ok(SyslogTarget::Unix(PathBuf::from(path)));
    }
    bad("is neither an absolute socket path nor a udp:// or tcp:// address")
}

impl RawAlerts {
    pub fn validate(&self) -> Result<SinkSettings, SinkConfigError> {
        let jsonl = self.validate_jsonl()?;
        let queue = bounded(&self.queue, "alerts.queue", 1, MAX_QUEUE, DEFAULT_QUEUE as i64)? as usize;
        let syslog = match &self.syslog {
            None => None,
            Some(s) => Some(validate_syslog(s.get_ref())?),
        };
        let webhook = match &self.webhook {
            None => None,
            Some(w) => Some(validate_webhook(w.get_ref())?),
        };
        Ok(SinkSettings {
            jsonl,
            syslog,
            webhook,
            queue,
            ..SinkSettings::default()
        })
    }

    fn validate_jsonl(&self) -> Result<Option<JsonlTarget>, SinkConfigError> {
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

fn validate_syslog(raw: &RawSyslog) -> Result<SyslogSettings, SinkConfigError> {
    let target = match &raw.target {
        None => SyslogTarget::Unix(PathBuf::from(DEFAULT_SYSLOG_TARGET)),
        Some(t) => syslog_target(t)?,
    };
    let facility = match &raw.facility {
        None => 4,
        Some(f) => match FACILITIES.iter().find(|(name, _)| name == f.get_ref()) {
            Some((_, code)) => *code,
            None => {
                let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
                return err(
                    f.span(),
                    format!(
                        "alerts.syslog.facility: unknown facility {:?}; use one of {}",
                        f.get_ref(),
                        names.join(", ")
                    ),
                );
            }
        },
    };
    // RFC 5424 APP-NAME: 1 to 48 printable US-ASCII characters, no space.
    let app_name = match &raw.app_name {
        None => DEFAULT_APP_NAME.to_owned(),
        Some(a) => {
            let s = a.get_ref();
            if s.is_empty() || s.len() > 48 || !s.bytes().all(|b| (33..=126).contains(&b)) {
                return err(
                    a.span(),
                    format!(
                        "alerts.syslog.app_name: {s:?} is not 1 to 48 printable ASCII characters without \
                         spaces (RFC 5424 APP-NAME); use e.g. \"fimd\""
                    ),
                );
            }
            s.clone()
        }
    };
    Ok(SyslogSettings {
        target,
        facility,
        app_name,
    })
}

fn validate_webhook(raw: &RawWebhook) -> Result<WebhookSettings, SinkConfigError> {
    let url = raw.url.get_ref();
    let uri_ok = url.parse::<ureq::http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    });
    if !uri_ok {
        return err(
            raw.url.span(),
            format!(
                "alerts.webhook.url: {url:?} is not an http:// or https:// URL with a host; write e.g. \
                 \"https://siem.example/fim\""
            ),
        );
    }
    let batch = bounded(
        &raw.batch,
        "alerts.webhook.batch",
        1,
        10_000,
        DEFAULT_BATCH as i64,
    )? as usize;
    let flush_ms = bounded(
        &raw.flush_ms,
        "alerts.webhook.flush_ms",
        1,
        3_600_000,
        DEFAULT_FLUSH_MS as i64,
    )? as u64;
    let timeout_ms = bounded(
        &raw.timeout_ms,
        "alerts.webhook.timeout_ms",
        1,
        600_000,
        DEFAULT_TIMEOUT_MS as i64,
    )? as u64;
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        if ureq::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return err(
                value.span(),
                format!(
                    "alerts.webhook.headers: {name:?} is not a valid HTTP header name; use letters, digits \
                     and '-' (e.g. \"Authorization\")"
                ),
            );
        }
        if name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("content-length") {
            return err(
                value.span(),
                format!("alerts.webhook.headers: {name} is set by fimd (application/json); remove it"),
            );
        }
        if ureq::http::HeaderValue::from_str(value.get_ref()).is_err() {
            return err(
                value.span(),
                format!(
                    "alerts.webhook.headers.{name}: the value holds a control character or a line break; \
                     give it on one line of visible characters"
                ),
            );
        }
        headers.push((name.clone(), value.get_ref().clone()));
    }
    Ok(WebhookSettings {
        url: url.clone(),
        batch,
        flush: Duration::from_millis(flush_ms),
        timeout: Duration::from_millis(timeout_ms),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        alerts: RawAlerts,
    }

    fn line_of(text: &str, offset: usize) -> usize {
        text[..offset].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn settings(text: &str) -> Result<SinkSettings, (usize, String)> {
        let doc: Doc = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            (line_of(text, at), e.message().to_owned())
        })?;
        doc.alerts
            .validate()
            .map_err(|e| (line_of(text, e.span.map_or(0, |s| s.start)), e.message))
    }

    #[test]
    fn full_table_is_validated() {
        let s = settings(
            r#"
[alerts]
jsonl = "/var/log/fimd/alerts.jsonl"
jsonl_max_bytes = "100M"
jsonl_keep = 3
queue = 50
[alerts.syslog]
target = "tcp://[::1]:6514"
facility = "local3"
app_name = "fimd-test"
[alerts.webhook]
url = "https://siem.example/fim"
batch = 10
flush_ms = 250
timeout_ms = 2000
headers = { Authorization = "Bearer abc", X-Tenant = "t1" }
"#,
        )
        .unwrap();
        assert_eq!(
            s.jsonl,
            Some(JsonlTarget::File {
                path: "/var/log/fimd/alerts.jsonl".into(),
                max_bytes: Some(100 << 20),
                keep: 3
            })
        );
        assert_eq!(s.queue, 50);
        let sy = s.syslog.unwrap();
        assert_eq!(sy.target, SyslogTarget::Tcp("[::1]:6514".into()));
        assert_eq!((sy.facility, sy.app_name.as_str()), (19, "fimd-test"));
        let w = s.webhook.unwrap();
        assert_eq!(
            (w.batch, w.flush, w.timeout),
            (10, Duration::from_millis(250), Duration::from_secs(2))
        );
        assert_eq!(
            w.headers,
            vec![
                ("Authorization".into(), "Bearer abc".into()),
                ("X-Tenant".into(), "t1".into())
            ]
        );
    }

    #[test]
    fn defaults() {
        let s = settings("[alerts]\njsonl = \"-\"\n[alerts.syslog]\n[alerts.webhook]\nurl = \"http://h/\"\n")
            .unwrap();
        assert_eq!(s.jsonl, Some(JsonlTarget::Stdout));
        assert_eq!(s.queue, DEFAULT_QUEUE);
        let sy = s.syslog.unwrap();
        assert_eq!(sy.target, SyslogTarget::Unix("/dev/log".into()));
        assert_eq!((sy.facility, sy.app_name.as_str()), (4, "fimd"));
        let w = s.webhook.unwrap();
        assert_eq!(
            (w.batch, w.flush, w.timeout),
            (100, Duration::from_secs(1), Duration::from_secs(5))
        );
        assert_eq!(settings("").unwrap(), SinkSettings::default());
        let f = settings("[alerts]\njsonl = \"/a.jsonl\"\njsonl_max_bytes = 4096\n").unwrap();
        assert_eq!(
            f.jsonl,
            Some(JsonlTarget::File {
                path: "/a.jsonl".into(),
                max_bytes: Some(4096),
                keep: DEFAULT_JSONL_KEEP
            })
        );
        let u = settings("[alerts.syslog]\ntarget = \"unix:/run/log\"\n").unwrap();
        assert_eq!(u.syslog.unwrap().target, SyslogTarget::Unix("/run/log".into()));
        let u = settings("[alerts.syslog]\ntarget = \"udp://siem:514\"\n").unwrap();
        assert_eq!(u.syslog.unwrap().target, SyslogTarget::Udp("siem:514".into()));
    }

    #[test]
    fn errors_name_line_key_and_fix() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "[alerts]\njsonl = \"a.jsonl\"\n",
                2,
                "alerts.jsonl: \"a.jsonl\" is relative",
            ),
            (
                "[alerts]\njsonl = \"/var/log/\"\n",
                2,
                "alerts.jsonl: \"/var/log/\" names a directory",
            ),
            (
                "[alerts]\njsonl = \"-\"\njsonl_max_bytes = \"1M\"\n",
                3,
                "alerts.jsonl_max_bytes: alerts go to stdout",
            ),
            (
                "[alerts]\njsonl_keep = 2\n",
                2,
                "alerts.jsonl_keep: there is no alerts.jsonl",
            ),
            (
                "[alerts]\njsonl = \"/a\"\njsonl_keep = 2\n",
                3,
                "set it or remove alerts.jsonl_keep",
            ),
            (
                "[alerts]\njsonl = \"/a\"\njsonl_max_bytes = \"5X\"\n",
                3,
                "alerts.jsonl_max_bytes: give a size",
            ),
            (
                "[alerts]\njsonl = \"/a\"\njsonl_max_bytes = 0\n",
                3,
                "alerts.jsonl_max_bytes",
            ),
            (
                "[alerts]\njsonl = \"/a\"\njsonl_max_bytes = 9\njsonl_keep = 0\n",
                4,
                "alerts.jsonl_keep: 0 is out of range",
            ),
            (
                "[alerts]\nqueue = 0\n",
                2,
                "alerts.queue: 0 is out of range; give a number from 1",
            ),
            ("[alerts]\nqueue = \"big\"\n", 2, "invalid type"),
            ("[alerts]\nsink = 1\n", 2, "unknown field `sink`"),
            (
                "[alerts.syslog]\ntarget = \"localhost:514\"\n",
                2,
                "alerts.syslog.target: \"localhost:514\"",
            ),
            (
                "[alerts.syslog]\ntarget = \"udp://host\"\n",
                2,
                "is not host:port",
            ),
            (
                "[alerts.syslog]\ntarget = \"tcp://host:0\"\n",
                2,
                "\"tcp://host:514\"",
            ),
            (
                "[alerts.syslog]\ntarget = \"tcp://::1:514\"\n",
                2,
                "is not host:port",
            ),
            (
                "[alerts.syslog]\nfacility = \"security\"\n",
                2,
                "alerts.syslog.facility: unknown facility",
            ),
            (
                "[alerts.syslog]\napp_name = \"my app\"\n",
                2,
                "alerts.syslog.app_name",
            ),
            ("[alerts.syslog]\nport = 514\n", 2, "unknown field `port`"),
            ("[alerts.webhook]\nbatch = 3\n", 1, "missing field `url`"),
            (
                "[alerts.webhook]\nurl = \"ftp://h/\"\n",
                2,
                "alerts.webhook.url: \"ftp://h/\"",
            ),
            (
                "[alerts.webhook]\nurl = \"siem.example\"\n",
                2,
                "alerts.webhook.url",
            ),
            (
                "[alerts.webhook]\nurl = \"http://h/\"\nbatch = 0\n",
                3,
                "alerts.webhook.batch: 0",
            ),
            (
                "[alerts.webhook]\nurl = \"http://h/\"\nflush_ms = -1\n",
                3,
                "alerts.webhook.flush_ms",
            ),
            (
                "[alerts.webhook]\nurl = \"http://h/\"\ntimeout_ms = 0\n",
                3,
                "alerts.webhook.timeout_ms",
            ),
            (
                "[alerts.webhook]\nurl = \"http://h/\"\nheaders = { \"Bad Name\" = \"x\" }\n",
                3,
                "\"Bad Name\" is not a valid HTTP header name",
            ),
            (
                "[alerts.webhook]\nurl = \"http://h/\"\n[alerts.webhook.headers]\nContent-Type = \"text/plain\"\n",
                4,
                "Content-Type is set by fimd",
            ),
            (
                "[alerts.webhook]\nurl = \"http://h/\"\nheaders = { X = \"a\\nb\" }\n",
                3,
                "alerts.webhook.headers.X: the value holds a control character",
            ),
        ];
        for (text, line, needle) in cases {
            let (at, msg) = settings(text).unwrap_err();
            assert_eq!(at, *line, "wrong line for {text:?}: {msg}");
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn sizes() {
        let s = |v: &str| parse_size(&toml::Value::String(v.into()));
        assert_eq!(s("100"), Some(100));
        assert_eq!(s("4K"), Some(4096));
        assert_eq!(s("100M"), Some(100 << 20));
        assert_eq!(s("2GiB"), Some(2 << 30));
        assert_eq!(s("1P"), None);
        assert_eq!(s("M"), None);
        assert_eq!(parse_size(&toml::Value::Integer(-1)), None);
    }
}
