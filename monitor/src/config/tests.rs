use super::*;

fn parse(text: &str) -> Result<Settings, ConfigError> {
    Settings::parse(Path::new("/etc/fimd.toml"), text)
}

#[test]
fn valid_config_is_normalised() {
    let s = parse(
        "state_dir = \"/var/lib/fimd\"\n[[watch]]\npath = \"/etc/\"\nexclude = [\"*.swp\", \"/etc/mtab\"]\n[alerts]\njsonl = \"-\"\n",
    )
    .unwrap();
    assert_eq!(s.watches[0].path, Path::new("/etc"));
    assert_eq!(s.watches[0].policy, Policy::Static);
    assert!(s.watches[0].exclude.is_excluded(b"/etc/a.swp", b"a.swp"));
    assert!(s.watches[0].exclude.is_excluded(b"/etc/mtab", b"mtab"));
    assert!(!s.watches[0].exclude.is_excluded(b"/etc/passwd", b"passwd"));
    assert!(matches!(s.alerts.jsonl, Some(JsonlTarget::Stdout)));
    assert!(!s.covers(Path::new("/etc/x/y.swp")));
    assert!(s.covers(Path::new("/etc/passwd")));
    assert!(!s.covers(Path::new("/usr/bin")));
    assert_eq!(s.max_file_size, Some(DEFAULT_MAX_FILE_SIZE));
    assert_eq!(parse_size(&toml::Value::String("2GiB".into())), Some(2 << 30));
    assert_eq!(parse_size(&toml::Value::Integer(5)), Some(5));
}

#[test]
fn numbers_at_their_bounds_are_accepted() {
    let s = parse(
        "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[scan]\nthreads = 1024\n[realtime]\n\
         ring_buffer_bytes = \"256MiB\"\n[schedule]\nfull_check = \"1m\"\njitter = \"1m\"\n",
    )
    .unwrap();
    assert_eq!(s.threads, 1024);
    assert_eq!(u64::from(s.ring_buffer_bytes), MAX_RING_BYTES);
    assert_eq!(s.full_check, Some(MIN_FULL_CHECK));
    assert_eq!(s.jitter, MIN_FULL_CHECK);
    let s = parse(
        "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[realtime]\nring_buffer_bytes = 4096\n\
         [schedule]\nfull_check = \"366d\"\n",
    )
    .unwrap();
    assert_eq!(s.ring_buffer_bytes, 4096);
    assert_eq!(s.full_check, Some(MAX_FULL_CHECK));
    // The default jitter (1 h) never exceeds a shorter schedule.
    let s = parse("state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"5m\"\n").unwrap();
    assert_eq!(s.jitter, std::time::Duration::from_secs(300));
    let s = parse("state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[scan]\nthreads = 0\n").unwrap();
    assert!((1..=64).contains(&s.threads));
}

#[test]
fn fimds_own_files_are_excluded_from_the_watches_holding_them() {
    let s = parse(
        "state_dir = \"/var/lib/fimd\"\n[[watch]]\npath = \"/var\"\n[[watch]]\npath = \"/etc\"\n\
         [alerts]\njsonl = \"/var/log/fimd/alerts.jsonl\"\njsonl_max_bytes = \"1M\"\n",
    )
    .unwrap();
    for own in [
        "/var/lib/fimd",
        "/var/lib/fimd/baseline.db",
        "/var/lib/fimd/baseline.db-wal",
        "/var/lib/fimd/hmac.key",
        "/var/log/fimd/alerts.jsonl",
        "/var/log/fimd/alerts.jsonl.1",
        "/var/log/fimd/alerts.jsonl.12",
    ] {
        assert!(!s.covers(Path::new(own)), "{own} is fimd's own and still watched");
    }
    for other in [
        "/var/lib/fimdx",
        "/var/lib/other",
        "/var/log/fimd",
        "/var/log/fimd/alerts.jsonl.bak",
        "/var/log/fimd/alerts.jsonl.",
        "/var/log/fimd/alerts.jsonlx",
    ] {
        assert!(s.covers(Path::new(other)), "{other} was excluded too");
    }
    // The baseline records it, for the watch that holds them only.
    let coverage = s.coverage();
    assert!(
        coverage.contains("\"/var\" policy=static one_filesystem=true exclude=[] own=[\"state_dir=/var/lib/fimd\", \"alerts.jsonl=/var/log/fimd/alerts.jsonl\"]"),
        "{coverage}"
    );
    assert!(
        coverage.contains("\"/etc\" policy=static one_filesystem=true exclude=[]\n")
            || coverage.ends_with("exclude=[]"),
        "{coverage}"
    );
    // Outside every watch: nothing recorded, so older baselines keep matching.
    let s = parse("state_dir = \"/var/lib/fimd\"\n[[watch]]\npath = \"/etc\"\n").unwrap();
    assert_eq!(
        s.coverage(),
        "\"/etc\" policy=static one_filesystem=true exclude=[]"
    );
}

#[test]
fn errors_name_line_and_key() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/etc\"\nbogus = 1\n",
            4,
            "unknown field `bogus`",
        ),
        ("state_dir = \"/s\"\n[[watch]]\npath = 3\n", 3, "invalid type"),
        (
            "state_dir = \"rel\"\n[[watch]]\npath = \"/etc\"\n",
            1,
            "state_dir: \"rel\" is relative",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"etc\"\n",
            3,
            "watch.path: \"etc\" is relative",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/var/log\"\npolicy = \"append-only\"\n[[watch]]\npath = \"/var\"\n",
            6,
            "nested with /var/log (policy append-only, line 3)",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\npolicy = \"sometimes\"\n",
            4,
            "unknown policy",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\nexclude = [\"[\"]\n",
            4,
            "bad glob",
        ),
        ("state_dir = \"/s\"\n", 1, "no [[watch]]"),
        (
            "state_dir = \"/var/lib/fimd\"\n[[watch]]\npath = \"/var/lib/fimd/db\"\n",
            3,
            "watch.path: /var/lib/fimd/db lies in fimd's own state_dir (line 1)",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/s\"\n",
            3,
            "lies in fimd's own state_dir",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/var/log/a.jsonl\"\n[alerts]\njsonl = \"/var/log/a.jsonl\"\n",
            3,
            "lies in fimd's own alerts.jsonl (line 5)",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"500000000000y\"\n",
            5,
            "schedule.full_check: \"500000000000y\" is out of range",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"1ns\"\n",
            5,
            "schedule.full_check: \"1ns\" is out of range",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"59s\"\n",
            5,
            "give 1 minute",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"367d\"\n",
            5,
            "to 366 days",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"99999999999999999999y\"\n",
            5,
            "schedule.full_check: ",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"1h\"\njitter = \"61m\"\n",
            6,
            "schedule.jitter: \"61m\" is longer than schedule.full_check",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[schedule]\nfull_check = \"0\"\njitter = \"400000y\"\n",
            6,
            "is longer than 366 days",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[scan]\nthreads = 99999999999\n",
            5,
            "scan.threads: 99999999999 is out of range",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[scan]\nthreads = -4\n",
            5,
            "scan.threads: -4 is out of range",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[realtime]\nring_buffer_bytes = 2147483648\n",
            5,
            "realtime.ring_buffer_bytes: 2147483648 is not a power of two from 4096 to 268435456",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[realtime]\nring_buffer_bytes = 2048\n",
            5,
            "realtime.ring_buffer_bytes: 2048",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[realtime]\nring_buffer_bytes = 12288\n",
            5,
            "not a power of two",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[realtime]\nring_buffer_bytes = 8589934592\n",
            5,
            "realtime.ring_buffer_bytes",
        ),
        (
            "state_dir = \"/s\"\n[[watch]]\npath = \"/e\"\n[alerts]\njsonl = \"a.jsonl\"\n",
            5,
            "alerts.jsonl",
        ),
    ];
    for (text, line, needle) in cases {
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("/etc/fimd.toml:{line}: ")),
            "wrong line for {text:?}: {err}"
        );
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    }
}
