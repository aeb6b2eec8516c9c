//! The webhook sink: POSTs JSON arrays of alert documents to an HTTP(S) endpoint.
//!
//! A batch holds up to `batch` documents and waits at most `flush_ms` to fill. 2xx delivers
//! it; 408, 429, 5xx and network errors keep it and retry with backoff (documents arriving
//! meanwhile queue up to the bound); any other answer drops it (counted) and says why on
//! stderr, since sending it again would be refused again. Delivery is at least once: a batch
//! whose answer timed out is sent again and may arrive twice.
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::doc::Doc;
use super::queue::Worker;
use crate::config::alerts::WebhookSettings;

/// Longest a server's `Retry-After` can hold a batch back (the backoff cap still applies).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

enum Outcome {
    Sent,
    /// Worth sending again, after at least this long.
    Retry(String, Duration),
    /// The receiver will not take it.
    Refused(String),
}

fn agent(s: &WebhookSettings) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(s.timeout))
        // Statuses are decided here, not turned into errors.
        .http_status_as_error(false)
        // A redirected POST would be re-sent without its body, or to an unexpected place.
        .max_redirects(0)
        .user_agent(concat!("fimd/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// `[doc,doc,…]` from the already serialised documents.
fn body(docs: &[Arc<Doc>]) -> Vec<u8> {
    let mut b = Vec::with_capacity(docs.iter().map(|d| d.json.len() + 1).sum::<usize>() + 2);
    b.push(b'[');
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(d.json.as_bytes());
    }
    b.push(b']');
    b
}

fn post(agent: &ureq::Agent, s: &WebhookSettings, body: &[u8]) -> Outcome {
    let mut req = agent.post(&s.url).header("Content-Type", "application/json");
    for (k, v) in &s.headers {
        req = req.header(k, v);
    }
    let mut resp = match req.send(body) {
        Ok(r) => r,
        Err(e @ (ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl)) => {
            return Outcome::Refused(e.to_string());
        }
        Err(e) => return Outcome::Retry(e.to_string(), Duration::ZERO),
    };
    let status = resp.status();
    if status.is_success() {
        return Outcome::Sent;
    }
    // The start of the answer usually says what is wrong (a bad token, a schema error).
    let mut text = String::new();
    let _ = resp.body_mut().as_reader().take(300).read_to_string(&mut text);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let why = format!("HTTP {status}{}{text}", if text.is_empty() { "" } else { ": " });
    let code = status.as_u16();
    if code == 408 || code == 429 || status.is_server_error() {
        let after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, |s| Duration::from_secs(s).min(RETRY_AFTER_MAX));
        return Outcome::Retry(why, after);
    }
    if status.is_redirection() {
        let to = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        return Outcome::Refused(format!(
            "{why} (redirect to {to}: set alerts.webhook.url to that address)"
        ));
    }
    Outcome::Refused(why)
}

/// Says on stderr that batches were refused: the first at once, then at most once a minute
/// (a bad token refuses every batch; one line per batch would bury everything else).
#[derive(Default)]
struct Refusals {
    last: Option<Instant>,
    unreported: usize,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(60);

    fn report(&mut self, url: &str, n: usize, why: &str) {
        self.unreported += n;
        if self.last.is_some_and(|t| t.elapsed() < Refusals::EVERY) {
            return;
        }
        eprintln!(
            "fimd: webhook {url} refused {} alerts, last with {why}; they are dropped (counted): fix the \
             receiver or alerts.webhook",
            self.unreported
        );
        self.unreported = 0;
        self.last = Some(Instant::now());
    }
}

/// The URL for messages: without user info or query, which may hold credentials.
fn redacted(url: &str) -> String {
    match url.parse::<ureq::http::Uri>() {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme_str().unwrap_or("?"),
            u.host().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => "(the configured URL)".into(),
    }
}

/// The sink thread: batches, posts, retries.
pub(crate) fn run(s: &WebhookSettings, mut w: Worker) {
    let agent = agent(s);
    let url = redacted(&s.url);
    let mut failures: u64 = 0;
    let mut refused = Refusals::default();
    while let Some(docs) = w.queue.take(s.batch, s.flush) {
        let body = body(&docs);
        loop {
            match post(&agent, s, &body) {
                Outcome::Sent => {
                    w.sent(docs.len());
                    if failures > 0 {
                        eprintln!("fimd: webhook {url}: delivering again ({failures} attempts failed)");
                        failures = 0;
                    }
                    w.backoff.reset();
                    break;
                }
                Outcome::Refused(why) => {
                    refused.report(&url, docs.len(), &why);
                    w.dropped(docs.len());
                    break;
                }
                Outcome::Retry(why, floor) => {
                    if w.queue.stopping() {
                        w.dropped(docs.len());
                        break;
                    }
                    if failures == 0 {
                        eprintln!(
                            "fimd: webhook {url}: {why}; retrying, alerts wait in a queue (dropped and counted \
                             when it is full)"
                        );
                    }
                    failures += 1;
                    w.counters.retried();
                    if w.queue.pause(w.backoff.next(floor)) {
                        w.dropped(docs.len());
                        break;
                    }
                }
            }
        }
        w.queue.settle(docs.len());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_do_not_show_credentials() {
        assert_eq!(
            super::redacted("https://user:pw@siem.example:8443/fim?token=abc"),
            "https://siem.example:8443/fim"
        );
        assert_eq!(super::redacted("http://h/"), "http://h/");
    }
}
