//! `[alerts.webhook]`: batches of documents POSTed as JSON over HTTP(S).
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::super::values::{TableError, bounded, err};

pub const DEFAULT_BATCH: usize = 100;
pub const DEFAULT_FLUSH_MS: u64 = 1000;
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

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

pub(super) fn validate(raw: &RawWebhook) -> Result<WebhookSettings, TableError> {
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
