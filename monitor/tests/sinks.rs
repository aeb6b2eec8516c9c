//! Alert sinks against real peers: a real rsyslogd (UDP, TCP octet counting, unix datagrams),
//! a real HTTP server on loopback, and real files for JSONL rotation.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fimd::output::dispatch::Dispatcher;
use fimd::output::sink::{RawAlerts, SinkSettings};
use prometheus::IntCounterVec;
use serde_json::{Value, json};

/// A path no sane tool would make, but an attacker could.
const NASTY_PATH: &str = "/srv/we\"ird]na\\me é [x].conf";

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Validated settings from an `[alerts]` TOML snippet, with short retry pauses for tests.
fn settings(toml_text: &str) -> SinkSettings {
    #[derive(serde::Deserialize)]
    struct Doc {
        alerts: RawAlerts,
    }
    let doc: Doc = toml::from_str(toml_text).unwrap();
    let mut s = doc.alerts.validate().unwrap();
    s.retry_first = Duration::from_millis(50);
    s.retry_max = Duration::from_millis(400);
    s
}

fn count(c: &IntCounterVec, sink: &str, result: &str) -> u64 {
    c.with_label_values(&[sink, result]).get()
}

fn alert(seq: usize) -> Value {
    json!({
        "@timestamp": "2024-05-01T10:00:00.123Z",
        "event": { "kind": "alert", "category": ["file"], "action": "updated", "module": "fimd" },
        "file": { "path": NASTY_PATH, "hash": { "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" } },
        "fim": { "seq": seq, "policy": "static", "changes": ["content", "mtime"] },
        "host": { "name": "testhost" },
        "process": { "pid": 4242, "executable": "/usr/bin/vi" },
        "user": { "id": "0" },
    })
}

fn problem() -> Value {
    json!({
        "@timestamp": "2024-05-01T10:00:01.000Z",
        "event": { "kind": "event", "action": "not_compared", "outcome": "failure" },
        "file": { "path": "/etc/shadow" },
        "error": { "message": "permission denied" },
        "host": { "name": "testhost" },
    })
}

fn appended() -> Value {
    json!({
        "@timestamp": "2024-05-01T10:00:02.000Z",
        "event": { "kind": "event", "action": "appended" },
        "file": { "path": "/var/log/app.log" },
        "host": { "name": "testhost" },
    })
}

/// A loopback port free for both TCP and UDP just now.
fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// rsyslogd, or `None` (skipped loudly) when it is not installed; under
/// `FIMD_REQUIRE_PRIVILEGED=1` (CI) a missing rsyslogd fails the test instead.
fn rsyslogd(what: &str) -> Option<PathBuf> {
    let found = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd", "/usr/local/sbin/rsyslogd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        if std::env::var_os("FIMD_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
            panic!(
                "{what} needs rsyslogd (apt-get install rsyslog), and FIMD_REQUIRE_PRIVILEGED=1 forbids skipping it"
            );
        }
        eprintln!(
            "SKIPPED: {what} needs rsyslogd (apt-get install rsyslog; FIMD_REQUIRE_PRIVILEGED=1 makes this a failure)"
        );
    }
    found
}

/// A private rsyslogd: UDP and TCP on one loopback port, a unix datagram socket, and a file
/// with one tab-separated line per message showing what rsyslog parsed.
struct Rsyslog {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Rsyslog {
    fn start(what: &str) -> Option<Rsyslog> {
        Rsyslog::start_on(what, free_port())
    }

    fn start_on(what: &str, port: u16) -> Option<Rsyslog> {
        let bin = rsyslogd(what)?;
        let dir = tempfile::Builder::new()
            .prefix("fimd-rsyslog-")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        // imuxsock: the standard parser chain (RFC 5424 first) and the message's own timestamp
        // (rsyslog ignores it on local sockets by default).
        // mmpstrucdata parses the structured data into $!rfc5424-sd, unescaping the values.
        let conf = format!(
            r#"global(workDirectory="{d}")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
module(load="mmpstrucdata")
input(type="imudp" address="127.0.0.1" port="{port}")
input(type="imtcp" address="127.0.0.1" port="{port}")
input(type="imuxsock" Socket="{d}/log.sock" UseSpecialParser="off" ParseHostname="on" UseSysTimeStamp="off" IgnoreTimestamp="off")
template(name="fields" type="list") {{
  constant(value="PRI=") property(name="pri")
  constant(value="\tVER=") property(name="protocol-version")
  constant(value="\tTS=") property(name="timereported" dateFormat="rfc3339")
  constant(value="\tHOST=") property(name="hostname")
  constant(value="\tAPP=") property(name="app-name")
  constant(value="\tPROCID=") property(name="procid")
  constant(value="\tMSGID=") property(name="msgid")
  constant(value="\tSD=") property(name="$!rfc5424-sd")
  constant(value="\tRAWSD=") property(name="structured-data")
  constant(value="\tMSG=") property(name="msg")
  constant(value="\n")
}}
action(type="mmpstrucdata")
action(type="omfile" file="{d}/out.log" template="fields")
"#
        );
        fs::write(dir.path().join("rsyslog.conf"), conf).unwrap();
        let mut r = Rsyslog {
            bin,
            dir,
            port,
            child: None,
        };
        r.spawn();
        Some(r)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("log.sock")
    }

    fn spawn(&mut self) {
        let log = fs::File::create(self.dir.path().join("rsyslogd.stderr")).unwrap();
        let child = Command::new(&self.bin)
            .arg("-n")
            .arg("-f")
            .arg(self.dir.path().join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Ready when a UDP probe comes out, TCP accepts and the unix socket exists.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = self.port;
        wait_until(Duration::from_secs(15), "rsyslogd to start", || {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rsyslogd exited ({st}): {}",
                    fs::read_to_string(self.dir.path().join("rsyslogd.stderr")).unwrap_or_default()
                );
            }
            let _ = probe.send_to(b"<13>1 - - probe - probe - ready", ("127.0.0.1", port));
            self.records("probe").next().is_some()
                && TcpStream::connect(("127.0.0.1", port)).is_ok()
                && self.socket().exists()
        });
    }

    /// SIGTERM, and wait for it to be gone.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The parsed fields of every message from `app`.
    fn records(&self, app: &str) -> impl Iterator<Item = BTreeMap<String, String>> {
        let text = fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default();
        let app = app.to_owned();
        text.lines()
            .map(|l| {
                l.split('\t')
                    .filter_map(|f| f.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<BTreeMap<_, _>>()
            })
            .filter(move |r| r.get("APP") == Some(&app))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The messages from `app`, waiting (bounded) until there are `n`.
    fn wait_records(&self, app: &str, n: usize) -> Vec<BTreeMap<String, String>> {
        let mut got = Vec::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(
                Duration::from_secs(30),
                &format!("{n} messages from {app}"),
                || {
                    got = self.records(app).collect();
                    got.len() >= n
                },
            )
        }));
        if let Err(e) = r {
            eprintln!("rsyslog received for {app}: {got:#?}");
            std::panic::resume_unwind(e);
        }
        got
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn msg_json(r: &BTreeMap<String, String>) -> Value {
    serde_json::from_str(&r["MSG"]).unwrap_or_else(|e| panic!("MSG is not JSON ({e}): {r:#?}"))
}

#[test]
fn syslog_rfc5424_fields_survive_rsyslog_parsing_on_every_transport() {
    let Some(rs) = Rsyslog::start("syslog over udp, tcp and unix") else {
        return;
    };
    let targets = [
        ("udp", format!("udp://127.0.0.1:{}", rs.port)),
        ("tcp", format!("tcp://127.0.0.1:{}", rs.port)),
        ("unix", format!("unix:{}", rs.socket().display())),
    ];
    for (name, target) in targets {
        let app = format!("fimd-{name}");
        let c = fimd::telemetry::Metrics::new().output_events;
        let d = Dispatcher::start(
            &settings(&format!(
                "[alerts]\n[alerts.syslog]\ntarget = {target:?}\nfacility = \"local3\"\napp_name = {app:?}\n"
            )),
            Some(c.clone()),
        )
        .unwrap();
        let docs = [alert(1), problem(), appended()];
        for doc in &docs {
            d.send(doc);
        }
        assert!(d.flush(Duration::from_secs(20)), "{name}: flush timed out");
        let got = rs.wait_records(&app, 3);
        assert_eq!(got.len(), 3, "{name}: {got:#?}");
        let by_msgid: BTreeMap<&str, &BTreeMap<String, String>> =
            got.iter().map(|r| (r["MSGID"].as_str(), r)).collect();

        // local3 = 19: alert → warning (4), problem → err (3), other event → notice (5).
        let a = by_msgid["updated"];
        assert_eq!(a["PRI"], (19 * 8 + 4).to_string(), "{name}");
        assert_eq!(
            by_msgid["not_compared"]["PRI"],
            (19 * 8 + 3).to_string(),
            "{name}"
        );
        assert_eq!(by_msgid["appended"]["PRI"], (19 * 8 + 5).to_string(), "{name}");
        assert_eq!(a["VER"], "1");
        assert_eq!(
            a["TS"], "2024-05-01T10:00:00.123Z",
            "{name}: the document's own time"
        );
        assert_eq!(a["HOST"], "testhost");
        assert_eq!(a["PROCID"], std::process::id().to_string());

        // rsyslog's own parser undoes the escaping of `"`, `\` and `]`.
        let sd: Value = serde_json::from_str(&a["SD"]).unwrap_or_else(|e| panic!("{name}: SD {e}: {a:#?}"));
        let fim = &sd["fim@32473"];
        assert_eq!(fim["path"], NASTY_PATH, "{name}: {a:#?}");
        assert_eq!(fim["action"], "updated");
        assert_eq!(fim["kind"], "alert");
        assert_eq!(fim["sha256"], alert(1)["file"]["hash"]["sha256"]);
        assert_eq!(fim["changes"], "content,mtime");
        assert_eq!(fim["pid"], "4242");
        assert_eq!(fim["exe"], "/usr/bin/vi");
        assert_eq!(fim["uid"], "0");
        assert!(
            a["RAWSD"].contains(r#"path="/srv/we\"ird\]na\\me é [x\].conf""#),
            "{a:#?}"
        );
        let p = &serde_json::from_str::<Value>(&by_msgid["not_compared"]["SD"]).unwrap()["fim@32473"];
        assert_eq!(
            (&p["outcome"], &p["path"]),
            (&json!("failure"), &json!("/etc/shadow"))
        );

        // MSG is the whole document.
        assert_eq!(msg_json(a), alert(1), "{name}");
        assert_eq!(msg_json(by_msgid["not_compared"]), problem());
        assert_eq!(count(&c, "syslog", "sent"), 3, "{name}");
        assert_eq!(
            (count(&c, "syslog", "retried"), count(&c, "syslog", "dropped")),
            (0, 0)
        );
    }
}

#[test]
fn syslog_datagrams_fit_rsyslogs_default_message_size() {
    let Some(rs) = Rsyslog::start("syslog datagram size") else {
        return;
    };
    let d = Dispatcher::start(
        &settings(&format!(
            "[alerts]\n[alerts.syslog]\ntarget = \"udp://127.0.0.1:{}\"\napp_name = \"fimd-big\"\n",
            rs.port
        )),
        None,
    )
    .unwrap();
    // 20 KB of detail: more than one datagram rsyslog accepts whole (8096 bytes by default).
    let mut big = alert(7);
    big["fim"]["previous"] = json!({ "path": "p".repeat(10_000) });
    big["message"] = json!("m".repeat(10_000));
    d.send(&big);
    assert!(d.flush(Duration::from_secs(10)));
    let got = rs.wait_records("fimd-big", 1);
    let m = msg_json(&got[0]);
    assert_eq!(m["file"]["path"], NASTY_PATH);
    assert_eq!(
        (&m["fim"]["policy"], &m["user"]["id"]),
        (&json!("static"), &json!("0"))
    );
    assert_eq!(m["fim"]["truncated"], big.to_string().len());
    assert!(m["fim"].get("previous").is_none() && m.get("message").is_none());
}

#[test]
fn syslog_tcp_outage_is_retried_until_everything_arrives() {
    let Some(mut rs) = Rsyslog::start("syslog tcp outage") else {
        return;
    };
    let c = fimd::telemetry::Metrics::new().output_events;
    let d = Dispatcher::start(
        &settings(&format!(
            "[alerts]\n[alerts.syslog]\ntarget = \"tcp://127.0.0.1:{}\"\napp_name = \"fimd-outage\"\n",
            rs.port
        )),
        Some(c.clone()),
    )
    .unwrap();
    d.send(&alert(0));
    assert!(d.flush(Duration::from_secs(10)));
    rs.wait_records("fimd-outage", 1);

    // The receiver goes away with our connection open: nothing sent meanwhile may be lost.
    rs.stop();
    const N: usize = 50;
    let started = Instant::now();
    for i in 1..=N {
        d.send(&alert(i));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "send blocked for {took:?}");
    wait_until(Duration::from_secs(10), "a failed attempt", || {
        count(&c, "syslog", "retried") > 0
    });
    assert!(
        !d.flush(Duration::from_millis(300)),
        "flush cannot succeed while the receiver is down"
    );

    rs.spawn();
    assert!(
        d.flush(Duration::from_secs(30)),
        "not delivered after the receiver came back"
    );
    let got = rs.wait_records("fimd-outage", N + 1);
    let seqs: BTreeSet<u64> = got
        .iter()
        .map(|r| msg_json(r)["fim"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..=N as u64).collect::<BTreeSet<_>>());
    assert_eq!(count(&c, "syslog", "sent"), N as u64 + 1);
    assert!(count(&c, "syslog", "retried") >= 1);
    assert_eq!((count(&c, "syslog", "dropped"), d.dropped()), (0, 0));
}

#[test]
fn syslog_full_queue_drops_and_counts_without_blocking() {
    let port = free_port();
    let mut s = settings(&format!(
        "[alerts]\nqueue = 5\n[alerts.syslog]\ntarget = \"tcp://127.0.0.1:{port}\"\napp_name = \"fimd-full\"\n"
    ));
    s.retry_max = Duration::from_millis(100);
    let c = fimd::telemetry::Metrics::new().output_events;
    let d = Dispatcher::start(&s, Some(c.clone())).unwrap();
    const N: u64 = 200;
    let started = Instant::now();
    for i in 0..N {
        d.send(&alert(i as usize));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "send blocked for {took:?}");
    // At most the queue (5) plus what the sink thread holds (at most a queue's worth) survive.
    let dropped = count(&c, "syslog", "dropped");
    assert!(dropped >= N - 10, "only {dropped} dropped");
    assert_eq!(d.dropped(), dropped);

    let Some(rs) = Rsyslog::start_on("syslog full queue", port) else {
        return;
    };
    assert!(d.flush(Duration::from_secs(30)));
    let sent = count(&c, "syslog", "sent");
    assert_eq!(sent + count(&c, "syslog", "dropped"), N);
    let got = rs.wait_records("fimd-full", sent as usize);
    assert_eq!(got.len() as u64, sent);
}

#[test]
fn dispatcher_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Dispatcher>();
}

#[test]
fn drop_returns_promptly_while_a_sink_is_down() {
    let port = free_port();
    let d = Dispatcher::start(
        &settings(&format!(
            "[alerts]\n[alerts.syslog]\ntarget = \"tcp://127.0.0.1:{port}\"\n[alerts.webhook]\nurl = \"http://127.0.0.1:{port}/\"\n"
        )),
        None,
    )
    .unwrap();
    for i in 0..10 {
        d.send(&alert(i));
    }
    std::thread::sleep(Duration::from_millis(200)); // let both sinks fail and start backing off
    let started = Instant::now();
    drop(d);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "drop took {:?}",
        started.elapsed()
    );
}

/// An HTTP receiver on loopback: answers `fail_first` requests with 503, then `status`.
struct Receiver {
    rt: tokio::runtime::Runtime,
    state: Arc<ReceiverState>,
}

#[derive(Default)]
struct ReceiverState {
    batches: Mutex<Vec<Vec<Value>>>,
    requests: AtomicUsize,
    fail_first: AtomicUsize,
    status: AtomicUsize,
    bad_requests: Mutex<Vec<String>>,
}

async fn receive(
    axum::extract::State(st): axum::extract::State<Arc<ReceiverState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    st.requests.fetch_add(1, Ordering::SeqCst);
    let ctype = headers.get("content-type").and_then(|v| v.to_str().ok());
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if ctype != Some("application/json") || auth != Some("Bearer s3cret") {
        st.bad_requests.lock().unwrap().push(format!("{headers:?}"));
    }
    if st
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")], "busy").into_response();
    }
    let status = StatusCode::from_u16(st.status.load(Ordering::SeqCst) as u16).unwrap();
    if status.is_success() {
        let batch: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
        st.batches.lock().unwrap().push(batch);
    }
    (status, "answer body\n").into_response()
}

impl Receiver {
    fn start(port: u16, fail_first: usize, status: u16) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(ReceiverState::default());
        state.fail_first.store(fail_first, Ordering::SeqCst);
        state.status.store(status.into(), Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/fim", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        Receiver { rt, state }
    }

    fn seqs(&self) -> Vec<u64> {
        let mut s: Vec<u64> = self
            .state
            .batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .map(|d| d["fim"]["seq"].as_u64().unwrap())
            .collect();
        s.sort_unstable();
        s
    }
}

fn webhook_settings(port: u16, batch: usize) -> SinkSettings {
    settings(&format!(
        "[alerts]\n[alerts.webhook]\nurl = \"http://127.0.0.1:{port}/fim\"\nbatch = {batch}\nflush_ms = 50\n\
         timeout_ms = 2000\nheaders = {{ Authorization = \"Bearer s3cret\" }}\n"
    ))
}

#[test]
fn webhook_delivers_everything_through_downtime_and_503s() {
    let port = free_port();
    let c = fimd::telemetry::Metrics::new().output_events;
    let d = Dispatcher::start(&webhook_settings(port, 7), Some(c.clone())).unwrap();
    // The receiver is down: connection refused, retried.
    for i in 0..40 {
        d.send(&alert(i));
    }
    wait_until(Duration::from_secs(10), "a failed post", || {
        count(&c, "webhook", "retried") > 0
    });

    // It comes up, but busy for three requests.
    let r = Receiver::start(port, 3, 200);
    for i in 40..60 {
        d.send(&alert(i));
    }
    assert!(d.flush(Duration::from_secs(30)), "not delivered");
    assert_eq!(r.seqs(), (0..60).collect::<Vec<u64>>());
    let batches = r.state.batches.lock().unwrap();
    assert!(
        batches.iter().all(|b| !b.is_empty() && b.len() <= 7),
        "batch sizes: {:?}",
        { batches.iter().map(Vec::len).collect::<Vec<_>>() }
    );
    assert!(r.state.bad_requests.lock().unwrap().is_empty());
    assert_eq!(
        r.state.fail_first.load(Ordering::SeqCst),
        0,
        "the 503s were answered"
    );
    assert_eq!(count(&c, "webhook", "sent"), 60);
    assert!(
        count(&c, "webhook", "retried") >= 4,
        "{}",
        count(&c, "webhook", "retried")
    );
    assert_eq!((count(&c, "webhook", "dropped"), d.dropped()), (0, 0));
    drop(batches);
    drop(d);
    r.rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn webhook_client_errors_drop_the_batch_and_count_it() {
    let port = free_port();
    let r = Receiver::start(port, 0, 400);
    let c = fimd::telemetry::Metrics::new().output_events;
    let d = Dispatcher::start(&webhook_settings(port, 2), Some(c.clone())).unwrap();
    for i in 0..5 {
        d.send(&alert(i));
    }
    assert!(d.flush(Duration::from_secs(10)));
    assert_eq!(count(&c, "webhook", "dropped"), 5);
    assert_eq!(d.dropped(), 5);
    assert_eq!(
        (count(&c, "webhook", "sent"), count(&c, "webhook", "retried")),
        (0, 0)
    );
    assert!(
        r.state.requests.load(Ordering::SeqCst) >= 3,
        "batches of at most 2"
    );
}

fn jsonl_lines(p: &Path) -> Vec<Value> {
    let text = fs::read_to_string(p).unwrap();
    assert!(text.ends_with('\n'), "{} ends mid-line", p.display());
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn jsonl_rotation_keeps_whole_lines_and_only_keep_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log/alerts.jsonl");
    let c = fimd::telemetry::Metrics::new().output_events;
    let d = Dispatcher::start(
        &settings(&format!(
            "[alerts]\njsonl = {:?}\njsonl_max_bytes = \"2K\"\njsonl_keep = 3\n",
            path.display().to_string()
        )),
        Some(c.clone()),
    )
    .unwrap();
    const N: u64 = 100; // about 20 KB: ten files' worth
    for i in 0..N {
        d.send(&alert(i as usize));
    }
    assert!(d.flush(Duration::from_secs(10)));
    assert_eq!(count(&c, "jsonl", "sent"), N);

    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    assert!(!numbered(4).exists(), "more than jsonl_keep files kept");
    // Oldest first: .3 .2 .1 then the live file, consecutive and ending with the last alert.
    let mut seqs = Vec::new();
    for p in [numbered(3), numbered(2), numbered(1), path.clone()] {
        let size = fs::metadata(&p).unwrap().len();
        assert!(size <= 2048, "{} is {size} bytes", p.display());
        seqs.extend(jsonl_lines(&p).iter().map(|d| d["fim"]["seq"].as_u64().unwrap()));
    }
    let first = seqs[0];
    assert_eq!(seqs, (first..N).collect::<Vec<_>>());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn jsonl_bad_path_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    let target = file.join("alerts.jsonl"); // a file's child: cannot exist
    let err = Dispatcher::start(
        &settings(&format!("[alerts]\njsonl = {:?}\n", target.display().to_string())),
        None,
    )
    .err()
    .expect("a start error");
    let msg = err.to_string();
    assert!(msg.contains(&target.display().to_string()), "{msg}");
}

mod wire_format {
    //! The ECS documents fimd emits, pinned whole: a renamed or retyped field fails here.
    use fimd::attribution::{Actor, ContainerRef, PodRef};
    use fimd::baseline::entry::{Entry, FileKind};
    use fimd::compare::{Action, Attribute, Change, Kind};
    use fimd::config::Policy;
    use fimd::output::alert::{BaselineRef, Origin};
    use fimd::output::typed::Alert;
    use serde_json::{Value, json};

    const AT: &str = "2024-05-01T10:00:00.123Z";

    fn entry(path: &[u8], size: u64, sha: u8) -> Entry {
        Entry {
            path: path.to_vec(),
            kind: FileKind::Regular,
            size,
            mode: 0o640,
            uid: 0,
            gid: 42,
            ino: 1234,
            dev: 2049,
            nlink: 1,
            mtime_ns: 1_714_557_600_000_000_000,
            ctime_ns: 1_714_557_601_500_000_000,
            sha256: Some([sha; 32]),
            link_target: None,
            xattrs: vec![(b"security.selinux".to_vec(), b"x".to_vec())],
            flags: Some(0x10),
            birth_ns: None,
            generation: None,
        }
    }

    fn origin() -> Origin {
        Origin {
            host: "testhost".into(),
            scan: fimd::output::alert::Scan::Realtime,
            root: None,
            baseline: Some(BaselineRef {
                generation: 3,
                seal: "ab".repeat(32),
            }),
        }
    }

    fn actor() -> Actor {
        Actor {
            pid: 4242,
            name: "vi".into(),
            thread_id: 4243,
            thread_name: "vi".into(),
            executable: Some("/usr/bin/vi".into()),
            uid: Some(0),
            container: Some((
                ContainerRef {
                    id: "cd".repeat(32),
                    runtime: Some("containerd"),
                    pod_uid: Some("1234-5678".into()),
                },
                Some(PodRef {
                    uid: "1234-5678".into(),
                    name: "web-0".into(),
                    namespace: "prod".into(),
                }),
            )),
        }
    }

    fn docs() -> Vec<(&'static str, Value)> {
        let o = origin();
        let updated = Change::alert(
            Action::Updated,
            Policy::Static,
            Some(entry(b"/etc/sha\xffdow", 10, 1)),
            Some(entry(b"/etc/sha\xffdow", 12, 2)),
            vec![Attribute::Content, Attribute::Size],
        );
        let appended = Change {
            kind: Kind::Event,
            extra: vec![("append", json!({ "bytes": 2 }))],
            ..Change::alert(
                Action::Appended,
                Policy::AppendOnly,
                Some(entry(b"/var/log/app.log", 10, 3)),
                Some(entry(b"/var/log/app.log", 12, 4)),
                vec![Attribute::Size],
            )
        };
        let deleted = Change::alert(
            Action::Deleted,
            Policy::Static,
            Some(entry(b"/etc/x", 1, 5)),
            None,
            vec![],
        );
        let problem = fimd::scan::Problem {
            path: b"/etc/shadow".to_vec(),
            message: "permission denied".into(),
            subtree: false,
        };
        let doc = |a: Alert| a.at(AT).document().clone();
        vec![
            (
                "updated",
                doc(Alert::change(&updated, &o).with_actor(&actor(), "ebpf", "vfs_write", 77)),
            ),
            ("appended", doc(Alert::change(&appended, &o))),
            ("deleted", doc(Alert::change(&deleted, &o))),
            ("not_compared", doc(Alert::problem(&problem, &o))),
            (
                "watch_capacity_exceeded",
                doc(Alert::coverage(
                    "watch_capacity_exceeded",
                    b"/srv",
                    "maps full",
                    &o,
                )),
            ),
            (
                "state_store_failing",
                doc(Alert::state_store_failing(
                    "disk full",
                    "/var/lib/fimd/state.db",
                    3,
                    &o,
                )),
            ),
            (
                "state_store_recovered",
                doc(Alert::state_store_recovered("/var/lib/fimd/state.db", 3, &o)),
            ),
        ]
    }

    /// Each kind of document, whole, as fimd sends it today (timestamp fixed; the one change
    /// document with a writer carries every actor and kernel field).
    #[test]
    fn every_kind_of_document_is_pinned_whole() {
        let expected = [
            (
                "updated",
                json!({
                    "@timestamp": "2024-05-01T10:00:00.123Z",
                    "container": {
                        "id": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
                        "runtime": "containerd"
                    },
                    "event": {
                        "action": "updated",
                        "category": [
                            "file"
                        ],
                        "kind": "alert",
                        "module": "fimd",
                        "type": [
                            "change"
                        ]
                    },
                    "file": {
                        "attributes": [
                            "immutable"
                        ],
                        "ctime": "2024-05-01T10:00:01.500Z",
                        "gid": "42",
                        "hash": {
                            "sha256": "0202020202020202020202020202020202020202020202020202020202020202"
                        },
                        "inode": "1234",
                        "mode": "0640",
                        "mtime": "2024-05-01T10:00:00.000Z",
                        "name": "sha\\xFFdow",
                        "path": "/etc/sha\\xFFdow",
                        "size": 12,
                        "type": "file",
                        "uid": "0"
                    },
                    "fim": {
                        "baseline": {
                            "generation": 3,
                            "seal": "abababababababababababababababababababababababababababababababab"
                        },
                        "changes": [
                            "content",
                            "size"
                        ],
                        "kernel": {
                            "cgroup_id": 77,
                            "hook": "vfs_write",
                            "sensor": "ebpf"
                        },
                        "path_bytes_b64": "L2V0Yy9zaGH/ZG93",
                        "policy": "static",
                        "previous": {
                            "attributes": [
                                "immutable"
                            ],
                            "ctime": "2024-05-01T10:00:01.500Z",
                            "gid": "42",
                            "hash": {
                                "sha256": "0101010101010101010101010101010101010101010101010101010101010101"
                            },
                            "inode": "1234",
                            "mode": "0640",
                            "mtime": "2024-05-01T10:00:00.000Z",
                            "name": "sha\\xFFdow",
                            "path": "/etc/sha\\xFFdow",
                            "path_bytes_b64": "L2V0Yy9zaGH/ZG93",
                            "size": 10,
                            "type": "file",
                            "uid": "0",
                            "xattrs": [
                                "security.selinux"
                            ]
                        },
                        "scan": "realtime",
                        "xattrs": [
                            "security.selinux"
                        ]
                    },
                    "host": {
                        "name": "testhost"
                    },
                    "kubernetes": {
                        "namespace": "prod",
                        "pod": {
                            "name": "web-0",
                            "uid": "1234-5678"
                        }
                    },
                    "message": "updated             /etc/sha\\xFFdow  [content, size]",
                    "orchestrator": {
                        "namespace": "prod",
                        "resource": {
                            "id": "1234-5678",
                            "name": "web-0",
                            "type": "pod"
                        },
                        "type": "kubernetes"
                    },
                    "process": {
                        "executable": "/usr/bin/vi",
                        "name": "vi",
                        "pid": 4242,
                        "thread": {
                            "id": 4243,
                            "name": "vi"
                        }
                    },
                    "user": {
                        "id": "0"
                    }
                }),
            ),
            (
                "appended",
                json!({
                    "@timestamp": "2024-05-01T10:00:00.123Z",
                    "event": {
                        "action": "appended",
                        "category": [
                            "file"
                        ],
                        "kind": "event",
                        "module": "fimd",
                        "type": [
                            "change"
                        ]
                    },
                    "file": {
                        "attributes": [
                            "immutable"
                        ],
                        "ctime": "2024-05-01T10:00:01.500Z",
                        "gid": "42",
                        "hash": {
                            "sha256": "0404040404040404040404040404040404040404040404040404040404040404"
                        },
                        "inode": "1234",
                        "mode": "0640",
                        "mtime": "2024-05-01T10:00:00.000Z",
                        "name": "app.log",
                        "path": "/var/log/app.log",
                        "size": 12,
                        "type": "file",
                        "uid": "0"
                    },
                    "fim": {
                        "append": {
                            "bytes": 2
                        },
                        "baseline": {
                            "generation": 3,
                            "seal": "abababababababababababababababababababababababababababababababab"
                        },
                        "changes": [
                            "size"
                        ],
                        "policy": "append-only",
                        "previous": {
                            "attributes": [
                                "immutable"
                            ],
                            "ctime": "2024-05-01T10:00:01.500Z",
                            "gid": "42",
                            "hash": {
                                "sha256": "0303030303030303030303030303030303030303030303030303030303030303"
                            },
                            "inode": "1234",
                            "mode": "0640",
                            "mtime": "2024-05-01T10:00:00.000Z",
                            "name": "app.log",
                            "path": "/var/log/app.log",
                            "size": 10,
                            "type": "file",
                            "uid": "0",
                            "xattrs": [
                                "security.selinux"
                            ]
                        },
                        "scan": "realtime",
                        "xattrs": [
                            "security.selinux"
                        ]
                    },
                    "host": {
                        "name": "testhost"
                    },
                    "message": "(appended)          /var/log/app.log  [size]  policy=append-only"
                }),
            ),
            (
                "deleted",
                json!({
                    "@timestamp": "2024-05-01T10:00:00.123Z",
                    "event": {
                        "action": "deleted",
                        "category": [
                            "file"
                        ],
                        "kind": "alert",
                        "module": "fimd",
                        "type": [
                            "deletion"
                        ]
                    },
                    "file": {
                        "attributes": [
                            "immutable"
                        ],
                        "ctime": "2024-05-01T10:00:01.500Z",
                        "gid": "42",
                        "hash": {
                            "sha256": "0505050505050505050505050505050505050505050505050505050505050505"
                        },
                        "inode": "1234",
                        "mode": "0640",
                        "mtime": "2024-05-01T10:00:00.000Z",
                        "name": "x",
                        "path": "/etc/x",
                        "size": 1,
                        "type": "file",
                        "uid": "0"
                    },
                    "fim": {
                        "baseline": {
                            "generation": 3,
                            "seal": "abababababababababababababababababababababababababababababababab"
                        },
                        "changes": [],
                        "policy": "static",
                        "previous": {
                            "attributes": [
                                "immutable"
                            ],
                            "ctime": "2024-05-01T10:00:01.500Z",
                            "gid": "42",
                            "hash": {
                                "sha256": "0505050505050505050505050505050505050505050505050505050505050505"
                            },
                            "inode": "1234",
                            "mode": "0640",
                            "mtime": "2024-05-01T10:00:00.000Z",
                            "name": "x",
                            "path": "/etc/x",
                            "size": 1,
                            "type": "file",
                            "uid": "0",
                            "xattrs": [
                                "security.selinux"
                            ]
                        },
                        "scan": "realtime",
                        "xattrs": [
                            "security.selinux"
                        ]
                    },
                    "host": {
                        "name": "testhost"
                    },
                    "message": "deleted             /etc/x"
                }),
            ),
            (
                "not_compared",
                json!({
                    "@timestamp": "2024-05-01T10:00:00.123Z",
                    "error": {
                        "message": "permission denied"
                    },
                    "event": {
                        "action": "not_compared",
                        "category": [
                            "file"
                        ],
                        "kind": "event",
                        "module": "fimd",
                        "outcome": "failure",
                        "type": [
                            "error"
                        ]
                    },
                    "file": {
                        "path": "/etc/shadow"
                    },
                    "fim": {
                        "baseline": {
                            "generation": 3,
                            "seal": "abababababababababababababababababababababababababababababababab"
                        },
                        "scan": "realtime"
                    },
                    "host": {
                        "name": "testhost"
                    }
                }),
            ),
            (
                "watch_capacity_exceeded",
                json!({
                    "@timestamp": "2024-05-01T10:00:00.123Z",
                    "error": {
                        "message": "maps full"
                    },
                    "event": {
                        "action": "watch_capacity_exceeded",
                        "category": [
                            "file"
                        ],
                        "kind": "alert",
                        "module": "fimd",
                        "outcome": "failure",
                        "type": [
                            "info"
                        ]
                    },
                    "file": {
                        "path": "/srv"
                    },
                    "fim": {
                        "baseline": {
                            "generation": 3,
                            "seal": "abababababababababababababababababababababababababababababababab"
                        },
                        "scan": "realtime"
                    },
                    "host": {
                        "name": "testhost"
                    },
                    "message": "watch_capacity_exceeded /srv: maps full"
                }),
            ),
            (
                "state_store_failing",
                json!({
                    "@timestamp": "2024-05-01T10:00:00.123Z",
                    "error": {
                        "message": "disk full"
                    },
                    "event": {
                        "action": "state_store_failing",
                        "category": [
                            "database"
                        ],
                        "kind": "alert",
                        "module": "fimd",
                        "outcome": "failure",
                        "reason": "disk full",
                        "type": [
                            "error"
                        ]
                    },
                    "fim": {
                        "state": {
                            "database": "/var/lib/fimd/state.db",
                            "queued_writes": 3
                        }
                    },
                    "host": {
                        "name": "testhost"
                    },
                    "message": "state_store_failing /var/lib/fimd/state.db: disk full; detection and alerting go on, evidence and ledger writes are queued in memory and retried"
                }),
            ),
            (
                "state_store_recovered",
                json!({
                    "@timestamp": "2024-05-01T10:00:00.123Z",
                    "event": {
                        "action": "state_store_recovered",
                        "category": [
                            "database"
                        ],
                        "kind": "event",
                        "module": "fimd",
                        "outcome": "success",
                        "type": [
                            "change"
                        ]
                    },
                    "fim": {
                        "state": {
                            "database": "/var/lib/fimd/state.db",
                            "landed_writes": 3
                        }
                    },
                    "host": {
                        "name": "testhost"
                    },
                    "message": "state_store_recovered /var/lib/fimd/state.db: 3 queued writes stored"
                }),
            ),
        ];
        let got = docs();
        assert_eq!(got.len(), expected.len());
        for ((name, doc), (want_name, want)) in got.iter().zip(expected.iter()) {
            assert_eq!(name, want_name);
            assert_eq!(doc, want, "{name}: {doc:#}");
        }
    }
}
