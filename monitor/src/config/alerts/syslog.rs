//! `[alerts.syslog]`: RFC 5424 over a unix socket, UDP or TCP.
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::super::values::{TableError, err};

pub const DEFAULT_SYSLOG_TARGET: &str = "/dev/log";
pub const DEFAULT_APP_NAME: &str = "fimd";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyslog {
    pub target: Option<Spanned<String>>,
    pub facility: Option<Spanned<String>>,
    pub app_name: Option<Spanned<String>>,
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

fn syslog_target(t: &Spanned<String>) -> Result<SyslogTarget, TableError> {
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

pub(super) fn validate(raw: &RawSyslog) -> Result<SyslogSettings, TableError> {
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
