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
