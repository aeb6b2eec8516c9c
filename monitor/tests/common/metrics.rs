//! `fimd run`'s HTTP endpoints from a test: plain HTTP/1.1 GETs and waits on a metric.
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 nothing listens on (the kernel picked it for a listener just closed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port: status and body, or None when it cannot connect or read.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Some((status, body))
}

/// `GET path` on 127.0.0.1:port, failing the test when it cannot.
pub fn get(port: u16, path: &str) -> (u16, String) {
    http_get(port, path).unwrap_or_else(|| panic!("GET {path} on 127.0.0.1:{port} failed"))
}

/// The value of one sample line (`name{labels} value`) in an exposition text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits up to 15 s for `series` on /metrics to reach `at_least`; returns the exposition.
pub fn wait_metric(port: u16, series: &str, at_least: f64) -> String {
    wait_metric_for(port, series, at_least, Duration::from_secs(15))
}

/// Waits up to `patience` for `series` on /metrics to reach `at_least`; returns the exposition.
pub fn wait_metric_for(port: u16, series: &str, at_least: f64, patience: Duration) -> String {
    let deadline = Instant::now() + patience;
    loop {
        let body = http_get(port, "/metrics").map(|(_, b)| b).unwrap_or_default();
        if sample(&body, series).is_some_and(|v| v >= at_least) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least} within {patience:?}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits up to 15 s for `series` on /metrics to fall to `at_most` (a queue drained); returns
/// the exposition.
pub fn wait_metric_at_most(port: u16, series: &str, at_most: f64) -> String {
    let patience = Duration::from_secs(15);
    let deadline = Instant::now() + patience;
    loop {
        let body = http_get(port, "/metrics").map(|(_, b)| b).unwrap_or_default();
        if sample(&body, series).is_some_and(|v| v <= at_most) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never fell to {at_most} within {patience:?}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
