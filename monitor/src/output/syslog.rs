//! The syslog sink: RFC 5424 messages over a unix datagram socket (`/dev/log`), UDP (RFC 5426)
//! or TCP with octet-counting framing (RFC 6587).
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [fim@32473 …] MSG`: MSGID is the event
//! action, the structured data repeats the fields a SIEM indexes on, MSG is the whole ECS
//! document as JSON (no UTF-8 BOM: receivers tend to keep it in the message, which breaks
//! JSON parsing; RFC 5424 makes it optional).
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use serde_json::{Map, Value};

use super::doc::{Doc, Fields};
use super::queue::Worker;
use crate::config::alerts::{SyslogSettings, SyslogTarget};

/// Structured-data ID: `fim` under the documentation enterprise number of RFC 5612.
pub const SD_ID: &str = "fim@32473";

/// Largest datagram sent (UDP or unix). rsyslog's default `maxMessageSize` is 8096 bytes and it
/// cuts anything longer; larger UDP datagrams also fragment more and get lost more. A longer
/// message first loses its JSON detail (see `reduced`), and only then is cut.
pub const DATAGRAM_MAX: usize = 8096;

/// Longest structured-data value: keeps the header of a datagram well under `DATAGRAM_MAX`
/// even for a 4 KiB path. The full value is always in the JSON message.
const SD_VALUE_MAX: usize = 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages formatted and sent per round: one write on TCP.
const BATCH: usize = 64;

/// A PARAM-VALUE: `"`, `\` and `]` escaped with a backslash (RFC 5424 section 6.3.3), control
/// characters written as `\xNN` so a value cannot break a line-based receiver, cut at
/// `SD_VALUE_MAX` bytes on a character boundary.
fn sd_value(v: &str, out: &mut String) {
    let mut end = v.len().min(SD_VALUE_MAX);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    for c in v[..end].chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
}

/// The document with only what identifies the event, for a datagram too small for all of it.
/// `fim.truncated` holds the size of the full JSON.
fn reduced(json: &str) -> Option<String> {
    let Value::Object(doc) = serde_json::from_str::<Value>(json).ok()? else {
        return None;
    };
    let mut out = Map::new();
    let pick = |src: Option<&Value>, keys: &[&str]| -> Option<Value> {
        let src = src?.as_object()?;
        let m: Map<String, Value> = keys
            .iter()
            .filter_map(|k| src.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        Some(Value::Object(m))
    };
    for key in ["@timestamp", "event", "host", "user", "container", "error"] {
        if let Some(v) = doc.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(f) = pick(doc.get("file"), &["path", "type", "hash", "target_path"]) {
        out.insert("file".into(), f);
    }
    if let Some(p) = pick(doc.get("process"), &["pid", "name", "executable"]) {
        out.insert("process".into(), p);
    }
    let mut fim = pick(doc.get("fim"), &["policy", "changes", "scan", "root"]).unwrap_or_default();
    if let Value::Object(m) = &mut fim {
        m.insert("truncated".into(), Value::from(json.len()));
    }
    out.insert("fim".into(), fim);
    serde_json::to_string(&Value::Object(out)).ok()
}

/// One RFC 5424 message; with `limit`, at most that many bytes.
pub(crate) fn format(s: &SyslogSettings, f: &Fields, json: &str, limit: Option<usize>) -> Vec<u8> {
    let pri = u16::from(s.facility) * 8 + u16::from(f.severity);
    let ts = f.timestamp.clone().unwrap_or_else(super::alert::now_rfc3339);
    let mut msg = format!(
        "<{pri}>1 {ts} {} {} {} {} ",
        f.hostname.as_deref().unwrap_or("-"),
        s.app_name,
        std::process::id(),
        f.msgid.as_deref().unwrap_or("-"),
    );
    if f.params.is_empty() {
        msg.push('-');
    } else {
        msg.push('[');
        msg.push_str(SD_ID);
        for (name, value) in &f.params {
            msg.push(' ');
            msg.push_str(name);
            msg.push_str("=\"");
            sd_value(value, &mut msg);
            msg.push('"');
        }
        msg.push(']');
    }
    msg.push(' ');
    let Some(limit) = limit.filter(|&l| msg.len() + json.len() > l) else {
        msg.push_str(json);
        return msg.into_bytes();
    };
    let small = reduced(json).unwrap_or_else(|| json.to_owned());
    msg.push_str(&small);
    let mut end = msg.len().min(limit);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    msg.truncate(end);
    msg.into_bytes()
}

enum Conn {
    Unix(UnixDatagram),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// The connection to the receiver, made on first use and again after any failure.
struct Transport {
    target: SyslogTarget,
    conn: Option<Conn>,
}

fn resolve(addr: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        ));
    }
    Ok(addrs)
}

/// Whether the receiver has closed the connection. A syslog receiver never sends, so anything
/// readable means end of stream or an error; checking first keeps the first message after a
/// receiver restart from vanishing into a half-closed socket.
fn peer_closed(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let r = s.peek(&mut [0u8; 1]);
    let closed = match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    closed || s.set_nonblocking(false).is_err()
}

impl Transport {
    fn datagram(&self) -> bool {
        !matches!(self.target, SyslogTarget::Tcp(_))
    }

    fn connect(&self) -> io::Result<Conn> {
        match &self.target {
            SyslogTarget::Unix(_) => {
                let s = UnixDatagram::unbound()?;
                // A receiver that stops reading fills its socket buffer: give up, and retry later.
                s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                Ok(Conn::Unix(s))
            }
            SyslogTarget::Udp(addr) => {
                let to = resolve(addr)?[0];
                let local: SocketAddr = if to.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let s = UdpSocket::bind(local)?;
                // Connected: an ICMP port unreachable surfaces as an error on the next send.
                s.connect(to)?;
                Ok(Conn::Udp(s))
            }
            SyslogTarget::Tcp(addr) => {
                let mut last = None;
                for to in resolve(addr)? {
                    match TcpStream::connect_timeout(&to, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                            s.set_nodelay(true)?;
                            return Ok(Conn::Tcp(s));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| io::ErrorKind::NotConnected.into()))
            }
        }
    }

    /// Sends `msgs` in order; on failure, how many were sent before it. The connection is
    /// dropped on failure so the next call makes a new one.
    fn send(&mut self, msgs: &[Vec<u8>]) -> Result<(), (usize, io::Error)> {
        if let Some(Conn::Tcp(s)) = &self.conn
            && peer_closed(s)
        {
            self.conn = None;
        }
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(self.connect().map_err(|e| (0, e))?),
        };
        let r = match conn {
            Conn::Unix(s) => {
                let SyslogTarget::Unix(path) = &self.target else {
                    unreachable!()
                };
                each(msgs, |m| s.send_to(m, path).map(drop))
            }
            Conn::Udp(s) => each(msgs, |m| s.send(m).map(drop)),
            Conn::Tcp(s) => {
                // RFC 6587 octet counting: "LEN SP MSG", all frames in one write.
                let mut buf = Vec::with_capacity(msgs.iter().map(|m| m.len() + 8).sum());
                for m in msgs {
                    buf.extend_from_slice(format!("{} ", m.len()).as_bytes());
                    buf.extend_from_slice(m);
                }
                s.write_all(&buf).map_err(|e| (0, e))
            }
        };
        if r.is_err() {
            self.conn = None;
        }
        r
    }
}

fn each(msgs: &[Vec<u8>], mut send: impl FnMut(&[u8]) -> io::Result<()>) -> Result<(), (usize, io::Error)> {
    for (i, m) in msgs.iter().enumerate() {
        send(m).map_err(|e| (i, e))?;
    }
    Ok(())
}

/// The sink thread: formats what the queue holds and sends it, retrying with backoff while the
/// receiver is unreachable (the queue absorbs the backlog up to its bound).
pub(crate) fn run(s: &SyslogSettings, mut w: Worker) {
    let mut t = Transport {
        target: s.target.clone(),
        conn: None,
    };
    let limit = t.datagram().then_some(DATAGRAM_MAX);
    let mut failures: u64 = 0;
    let message = |d: &Doc| match &d.syslog {
        Some(f) => format(s, f, &d.json, limit),
        None => format(s, &Fields::default(), &d.json, limit),
    };
    while let Some(docs) = w.queue.take(BATCH, Duration::ZERO) {
        let msgs: Vec<Vec<u8>> = docs.iter().map(|d| message(d)).collect();
        let mut done = 0;
        while done < msgs.len() {
            match t.send(&msgs[done..]) {
                Ok(()) => {
                    w.sent(msgs.len() - done);
                    done = msgs.len();
                    if failures > 0 {
                        eprintln!(
                            "fimd: syslog {}: delivering again ({failures} attempts failed)",
                            s.target
                        );
                        failures = 0;
                    }
                    w.backoff.reset();
                }
                Err((n, e)) => {
                    w.sent(n);
                    done += n;
                    // Once stopping there is no later: what cannot go now is lost.
                    if w.queue.stopping() {
                        w.dropped(msgs.len() - done);
                        break;
                    }
                    if failures == 0 {
                        eprintln!(
                            "fimd: syslog {}: {e}; retrying, alerts wait in a queue (dropped and counted when it is full)",
                            s.target
                        );
                    }
                    failures += 1;
                    w.counters.retried();
                    if w.queue.pause(w.backoff.next(Duration::ZERO)) {
                        w.dropped(msgs.len() - done);
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
    use super::super::doc::{ERR, NOTICE, WARNING, is_rfc5424_time};
    use super::*;
    use serde_json::json;

    fn settings() -> SyslogSettings {
        SyslogSettings {
            target: SyslogTarget::Udp("127.0.0.1:514".into()),
            facility: 4,
            app_name: "fimd".into(),
        }
    }

    #[test]
    fn header_and_structured_data() {
        let doc = json!({
            "@timestamp": "2024-05-01T10:00:00.123Z",
            "event": { "kind": "alert", "action": "updated" },
            "file": { "path": "/etc/a\"b]c\\d", "hash": { "sha256": "ab" } },
            "fim": { "changes": ["content", "mtime"] },
            "process": { "pid": 42 },
            "host": { "name": "web 1" },
        });
        let json = doc.to_string();
        let m = String::from_utf8(format(&settings(), &Fields::of(&doc), &json, None)).unwrap();
        let pid = std::process::id();
        assert_eq!(
            m,
            format!(
                "<36>1 2024-05-01T10:00:00.123Z web_1 fimd {pid} updated [fim@32473 action=\"updated\" \
                 kind=\"alert\" path=\"/etc/a\\\"b\\]c\\\\d\" sha256=\"ab\" changes=\"content,mtime\" pid=\"42\"] {json}"
            )
        );
    }

    #[test]
    fn severities() {
        let sev = |doc: Value| Fields::of(&doc).severity;
        assert_eq!(
            sev(json!({"event": {"kind": "alert", "action": "deleted"}})),
            WARNING
        );
        assert_eq!(
            sev(json!({"event": {"kind": "event", "action": "appended"}})),
            NOTICE
        );
        assert_eq!(
            sev(json!({"event": {"kind": "event", "action": "not_compared", "outcome": "failure"}})),
            ERR
        );
        assert_eq!(sev(json!({"event": {"kind": "pipeline_error"}})), ERR);
        assert_eq!(sev(json!({})), NOTICE);
    }

    #[test]
    fn timestamps() {
        assert!(is_rfc5424_time("2024-05-01T10:00:00Z"));
        assert!(is_rfc5424_time("2024-05-01T10:00:00.123456+02:00"));
        assert!(!is_rfc5424_time("2024-05-01T10:00:00.1234567Z"));
        assert!(!is_rfc5424_time("2024-05-01 10:00:00Z"));
        assert!(!is_rfc5424_time("yesterday"));
        // A document without a usable timestamp gets the current time.
        let m = format(&settings(), &Fields::of(&json!({"@timestamp": "x"})), "{}", None);
        assert!(is_rfc5424_time(
            String::from_utf8(m).unwrap().split(' ').nth(1).unwrap()
        ));
    }

    #[test]
    fn datagrams_stay_within_the_limit() {
        let long = "é".repeat(3000); // 6000 bytes
        let doc = json!({
            "event": { "kind": "alert", "action": "updated" },
            "file": { "path": format!("/x/{long}") },
            "fim": { "previous": { "path": long.clone(), "mode": "0644" }, "policy": "static" },
            "message": long,
        });
        let json = doc.to_string();
        let m = format(&settings(), &Fields::of(&doc), &json, Some(DATAGRAM_MAX));
        assert!(m.len() <= DATAGRAM_MAX, "{}", m.len());
        let m = String::from_utf8(m).unwrap();
        let body: Value = serde_json::from_str(&m[m.find("] {").unwrap() + 2..]).unwrap();
        assert_eq!(body["fim"]["truncated"], json.len());
        assert_eq!(body["file"]["path"], doc["file"]["path"]);
        assert!(body["fim"].get("previous").is_none());
        // A path so long that even the reduced document does not fit is cut, on a char boundary.
        let huge = json!({"file": {"path": "é".repeat(5000)}}).to_string();
        let m = format(&settings(), &Fields::default(), &huge, Some(DATAGRAM_MAX));
        assert!(m.len() <= DATAGRAM_MAX && String::from_utf8(m).is_ok());
    }
}
