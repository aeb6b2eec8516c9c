//! The HTTP endpoint: `/metrics` for Prometheus, `/healthz` (liveness: the daemon loop still
//! turns) and `/readyz` (readiness: sensor attached, baseline verified, first full comparison
//! done). It runs as one more task on the daemon's runtime; the loop's blocking work runs in
//! `block_in_place`, so scrapes are answered while it works.
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::connections::Bounded;
pub use super::health::{DEFAULT_STALE_AFTER, Health};
use super::metrics::Metrics;

/// After cancellation: how long requests under way may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(if cfg!(test) { 500 } else { 5000 });

/// The metrics listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for metrics on {addr:?} (config key metrics.listen): {source}; \
     set metrics.listen to a free host:port such as 127.0.0.1:9917, or remove it to disable the endpoint"
)]
pub struct BindError {
    pub addr: String,
    #[source]
    pub source: io::Error,
}

/// Opens the listener for [`serve`]; `addr` is `host:port` as in the configuration.
pub async fn bind(addr: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        addr: addr.to_owned(),
        source,
    })
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Serves until `cancel`, then lets requests under way finish (for a few seconds at most).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(AppState { metrics, health });
    let listener = Bounded::new(listener);
    let server = axum::serve(listener, app).with_graceful_shutdown(cancel.clone().cancelled_owned());
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        () = async { cancel.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => Ok(()),
    }
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    let body = s.metrics.encode();
    ([(header::CONTENT_TYPE, s.metrics.content_type())], body).into_response()
}

async fn healthz(State(s): State<AppState>) -> Response {
    match s.health.liveness_problem() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(p) => (StatusCode::SERVICE_UNAVAILABLE, format!("{p}\n")).into_response(),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    let problems = s.health.readiness_problems();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let text = format!("not ready: {}\n", problems.join("; "));
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: fimd serves /metrics, /healthz and /readyz\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::time::Instant;

    use super::super::connections::{IDLE_TIMEOUT, MAX_CONNECTIONS};
    use super::*;

    struct Reply {
        status: u16,
        headers: String,
        body: String,
    }

    /// One plain HTTP/1.1 GET over a fresh TCP connection, off the runtime's threads.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut raw = String::new();
            s.read_to_string(&mut raw).unwrap();
            let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
            let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
            Reply {
                status: status_line.split(' ').nth(1).unwrap().parse().unwrap(),
                headers: headers.to_ascii_lowercase(),
                body: body.to_owned(),
            }
        })
        .await
        .unwrap()
    }

    struct Running {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<io::Result<()>>,
    }

    async fn start(health: Health) -> Running {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(health);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, metrics.clone(), health.clone(), cancel.clone()));
        Running {
            addr,
            metrics,
            health,
            cancel,
            task,
        }
    }

    /// Checks every line of a text exposition; returns each family's declared type.
    fn parse_exposition(text: &str) -> HashMap<String, String> {
        let mut types = HashMap::new();
        let is_name = |s: &str| {
            !s.is_empty()
                && !s.starts_with(|c: char| c.is_ascii_digit())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("# TYPE name type");
                assert!(is_name(name), "{line}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_owned(), ty.to_owned()).is_none(),
                    "twice: {line}"
                );
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                assert!(is_name(rest.split(' ').next().unwrap()), "{line}");
                continue;
            }
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "unexpected line {line:?}"
            );
            let name_end = line.find(['{', ' ']).expect("a sample has a value");
            let name = &line[..name_end];
            assert!(is_name(name), "{line}");
            let mut rest = &line[name_end..];
            if let Some(labels) = rest.strip_prefix('{') {
                let end = labels.find("} ").expect("labels end with '} '");
                for pair in labels[..end].split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(
                        is_name(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
                rest = &labels[end + 1..];
            }
            let value = rest.trim_start().split(' ').next().unwrap();
            assert!(
                value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                "bad value in {line}"
            );
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample before its # TYPE: {line}");
        }
        types
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_exports_every_family_as_valid_text() {
        let s = start(Health::new()).await;
        // Label vectors without a preset child appear once used.
        s.metrics
            .count_change(crate::compare::Action::Updated, crate::compare::Kind::Alert);
        s.metrics.count_output("jsonl", "sent");
        s.metrics.kernel_events.inc_by(7);
        let r = request(s.addr, "GET", "/metrics").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.headers.contains("content-type: text/plain; version=0.0.4"),
            "{}",
            r.headers
        );
        let types = parse_exposition(&r.body);
        for (family, ty) in [
            ("fim_build_info", "gauge"),
            ("fim_start_time_seconds", "gauge"),
            ("fim_sensor_attached", "gauge"),
            ("fim_kernel_events_total", "counter"),
            ("fim_kernel_events_lost_total", "counter"),
            ("fim_rescans_total", "counter"),
            ("fim_hash_queue_length", "gauge"),
            ("fim_hashed_bytes_total", "counter"),
            ("fim_hash_duration_seconds", "histogram"),
            ("fim_integrity_changes_total", "counter"),
            ("fim_append_verified_bytes_total", "counter"),
            ("fim_baseline_files", "gauge"),
            ("fim_baseline_generation", "gauge"),
            ("fim_outstanding_differences", "gauge"),
            ("fim_last_full_check_timestamp_seconds", "gauge"),
            ("fim_last_full_check_duration_seconds", "gauge"),
            ("fim_output_events_total", "counter"),
            ("fim_sensor_watch_full_total", "counter"),
            ("fim_sensor_kernel_bytes", "gauge"),
            ("fim_state_write_failures_total", "counter"),
            ("fim_state_queue_length", "gauge"),
            ("fim_state_writes_dropped_total", "counter"),
            ("fim_watch_failures_total", "counter"),
            ("fim_rotation_settling", "gauge"),
            ("fim_sensor_probe_errors_total", "counter"),
            ("fim_stuck_threads", "gauge"),
            ("fim_blocking_timeouts_total", "counter"),
            ("fim_directory_listings_total", "counter"),
        ] {
            assert_eq!(
                types.get(family).map(String::as_str),
                Some(ty),
                "{family} in\n{}",
                r.body
            );
        }
        assert_eq!(types.len(), 28, "unexpected families: {types:?}");
        assert!(
            r.body.lines().any(|l| l == "fim_kernel_events_total 7"),
            "{}",
            r.body
        );
        // Served live: a later change shows in the next scrape.
        s.metrics.kernel_events.inc();
        let r = request(s.addr, "GET", "/metrics").await;
        assert!(
            r.body.lines().any(|l| l == "fim_kernel_events_total 8"),
            "{}",
            r.body
        );
        s.cancel.cancel();
        s.task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readyz_waits_for_every_condition() {
        let s = start(Health::new()).await;
        s.health.tick();
        let r = request(s.addr, "GET", "/readyz").await;
        assert_eq!(r.status, 503);
        for missing in ["sensor", "baseline", "initial comparison"] {
            assert!(r.body.contains(missing), "{missing}: {}", r.body);
        }
        s.health.set_sensor_attached(true);
        s.health.set_baseline_verified(true);
        let r = request(s.addr, "GET", "/readyz").await;
        assert_eq!(r.status, 503);
        assert!(
            !r.body.contains("sensor") && r.body.contains("initial comparison"),
            "{}",
            r.body
        );
        s.health.set_reconciled(true);
        let r = request(s.addr, "GET", "/readyz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
        // A reload starts over.
        s.health.set_ready(false);
        assert_eq!(request(s.addr, "GET", "/readyz").await.status, 503);
        s.health.set_ready(true);
        assert_eq!(request(s.addr, "GET", "/readyz").await.status, 200);
        s.cancel.cancel();
        s.task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthz_fails_when_ticks_stop() {
        let s = start(Health::with_stale_after(Duration::from_millis(300))).await;
        s.health.set_ready(true);
        s.health.tick();
        let r = request(s.addr, "GET", "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let r = request(s.addr, "GET", "/healthz").await;
        assert_eq!(r.status, 503);
        assert!(r.body.contains("stalled"), "{}", r.body);
        // Not ready either while stalled.
        let r = request(s.addr, "GET", "/readyz").await;
        assert_eq!(r.status, 503);
        assert!(r.body.contains("stalled"), "{}", r.body);
        s.health.tick();
        assert_eq!(request(s.addr, "GET", "/healthz").await.status, 200);
        assert_eq!(request(s.addr, "GET", "/readyz").await.status, 200);
        s.cancel.cancel();
        s.task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_paths_and_methods_are_refused() {
        let s = start(Health::new()).await;
        let r = request(s.addr, "GET", "/").await;
        assert_eq!(r.status, 404);
        assert!(r.body.contains("/metrics"), "{}", r.body);
        assert_eq!(request(s.addr, "GET", "/metrics/extra").await.status, 404);
        assert_eq!(request(s.addr, "POST", "/metrics").await.status, 405);
        s.cancel.cancel();
        s.task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_ends_serve_even_with_an_idle_client() {
        let s = start(Health::new()).await;
        assert_eq!(request(s.addr, "GET", "/healthz").await.status, 200);
        // A client that connected and said nothing must not hold the shutdown.
        let idle = std::net::TcpStream::connect(s.addr).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let began = Instant::now();
        s.cancel.cancel();
        tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(2), s.task)
            .await
            .expect("serve ends after cancellation")
            .unwrap()
            .unwrap();
        assert!(began.elapsed() <= SHUTDOWN_GRACE + Duration::from_secs(1));
        drop(idle);
        // The port is closed.
        assert!(std::net::TcpStream::connect(s.addr).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_request_holds_shutdown_no_longer_than_the_grace() {
        let s = start(Health::new()).await;
        let mut stalled = std::net::TcpStream::connect(s.addr).unwrap();
        stalled
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let began = Instant::now();
        s.cancel.cancel();
        tokio::time::timeout(SHUTDOWN_GRACE * 4, s.task)
            .await
            .expect("serve ends after cancellation")
            .unwrap()
            .unwrap();
        let took = began.elapsed();
        assert!(took >= SHUTDOWN_GRACE && took < SHUTDOWN_GRACE * 2, "{took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_clients_are_dropped_and_cannot_exhaust_the_server() {
        let s = start(Health::new()).await;
        // Every slot taken by a client that sends half a request and stalls.
        let mut stalled: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(s.addr).unwrap();
                c.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
                c
            })
            .collect();
        let began = Instant::now();
        // Served at once: the oldest stalled client makes room.
        let r = request(s.addr, "GET", "/healthz").await;
        assert_eq!(r.status, 200);
        assert!(began.elapsed() < IDLE_TIMEOUT / 2, "{:?}", began.elapsed());
        // The stalled clients are disconnected (evicted or idle).
        for c in [0, MAX_CONNECTIONS - 1] {
            let c = &mut stalled[c];
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 64];
            match c.read(&mut buf) {
                Ok(n) => assert_eq!(n, 0, "expected end of stream, got {:?}", &buf[..n]),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
            }
        }
        s.cancel.cancel();
        s.task.await.unwrap().unwrap();
    }

    /// Slow clients that send a header line every 200 ms stay active (the idle timeout never
    /// ends them), more of them than there are slots: probes are still answered at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trickling_clients_never_starve_the_probes() {
        let s = start(Health::new()).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addr = s.addr;
        let trickle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut clients: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS + 8)
                    .filter_map(|_| std::net::TcpStream::connect(addr).ok())
                    .collect();
                for c in &mut clients {
                    let _ = c.write_all(b"GET /healthz HTTP/1.1\r\n");
                }
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for c in &mut clients {
                        let _ = c.write_all(b"X-Slow: 1\r\n");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        for path in ["/healthz", "/readyz", "/metrics"] {
            let began = Instant::now();
            let r = request(s.addr, "GET", path).await;
            assert!(r.status == 200 || r.status == 503, "{path}: {}", r.status);
            assert!(
                began.elapsed() < Duration::from_secs(1),
                "{path}: {:?}",
                began.elapsed()
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        trickle.join().unwrap();
        s.cancel.cancel();
        s.task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bind_names_the_address_and_the_config_key() {
        let taken = bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = bind(&addr).await.unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::AddrInUse);
        let text = e.to_string();
        assert!(text.contains(&addr) && text.contains("metrics.listen"), "{text}");
        let e = bind("not an address").await.unwrap_err();
        assert!(e.to_string().contains("\"not an address\""), "{e}");
    }
}
