//! Operating `fimd run`: Prometheus metrics and health endpoints, scheduled full comparisons,
//! and the evidence `fimd report` reads back (its MAC chain catching edits).
mod common;

use std::fs;
use std::time::Duration;

use common::daemon::{Daemon, by, s};
use common::metrics::{free_port, get, sample, wait_metric, wait_metric_for};
use common::{Fixture, privileged};

#[test]
fn metrics_health_schedule_and_evidence() {
    if !privileged("fimd run") {
        return;
    }
    let port = free_port();
    let f = Fixture::new();
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(
        &f.config,
        format!("{text}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[schedule]\nfull_check = \"1m\"\njitter = \"0\"\n"),
    )
    .unwrap();
    let d = Daemon::start(&f);
    let (status, body) = get(port, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(port, "/healthz").0, 200);
    assert_eq!(get(port, "/nothing").0, 404);

    let metrics = get(port, "/metrics").1;
    for family in [
        "fim_build_info",
        "fim_sensor_attached",
        "fim_kernel_events_total",
        "fim_kernel_events_lost_total",
        "fim_rescans_total",
        "fim_hash_queue_length",
        "fim_hashed_bytes_total",
        "fim_hash_duration_seconds",
        "fim_integrity_changes_total",
        "fim_baseline_files",
        "fim_baseline_generation",
        "fim_outstanding_differences",
        "fim_last_full_check_timestamp_seconds",
        "fim_last_full_check_duration_seconds",
        "fim_output_events_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{metrics}"
        );
    }
    assert_eq!(
        sample(&metrics, "fim_sensor_attached{sensor=\"ebpf\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&metrics, "fim_baseline_files"), Some(4.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "fim_baseline_generation"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "fim_outstanding_differences"),
        Some(0.0),
        "{metrics}"
    );
    // No path, pid or container id ever becomes a label.
    assert!(
        !metrics.contains(s(&f.tree)),
        "a path leaked into a label:\n{metrics}"
    );

    let pid = by("sh", &["-c", &format!("echo changed >> {}", s(&f.path("a.txt")))]);
    let a = d.expect(&f.path("a.txt"), "updated", pid);
    assert_eq!(a["fim"]["baseline"]["generation"], 1, "{a:#}");
    assert_eq!(
        a["fim"]["baseline"]["seal"].as_str().map(str::len),
        Some(64),
        "{a:#}"
    );
    let m = wait_metric(
        port,
        "fim_integrity_changes_total{action=\"updated\",kind=\"alert\"}",
        1.0,
    );
    assert!(sample(&m, "fim_kernel_events_total").unwrap() >= 1.0);
    wait_metric(port, "fim_outstanding_differences", 1.0);
    assert!(
        sample(&m, "fim_output_events_total{result=\"sent\",sink=\"jsonl\"}").unwrap() >= 1.0,
        "{m}"
    );

    // The schedule runs full comparisons by itself, each stamped and counted (one minute is
    // the shortest schedule the configuration allows).
    let m = wait_metric_for(
        port,
        "fim_rescans_total{reason=\"scheduled\"}",
        1.0,
        Duration::from_secs(90),
    );
    let last = sample(&m, "fim_last_full_check_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last).abs() < 10.0, "last full check {last}, now {now}");
    // The scheduled comparison found the difference again: still outstanding, not sent again.
    assert_eq!(sample(&m, "fim_outstanding_differences"), Some(1.0), "{m}");
    let sent = d
        .alerts()
        .iter()
        .filter(|a| a["file"]["path"] == s(&f.path("a.txt")))
        .count();
    assert_eq!(sent, 1, "{:#?}", d.alerts());
    drop(d);

    // Evidence: the start, the scheduled comparisons and a manual check, in order.
    assert_eq!(f.fimd(&["check"]).code, 1);
    let r = f.fimd(&["report", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = r.json_lines();
    let kinds: Vec<&str> = records.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"start"), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| **k == "scheduled").count() >= 1,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"check"), "{kinds:?}");
    // A scheduled comparison counts the difference it did not send again.
    let scheduled = records.iter().find(|r| r["kind"] == "scheduled").unwrap();
    assert_eq!(scheduled["differences"], 1, "{scheduled:#}");
    let last = records.last().unwrap();
    assert_eq!(last["differences"], 1, "{last:#}");
    assert_eq!(last["files_compared"], 4, "{last:#}");
    assert!(records.iter().all(|r| r["chain_intact"] == true));
    assert!(
        records.iter().all(|r| r["baseline_generation"] == 1),
        "{records:#?}"
    );

    // Editing a record (here: hiding the difference) breaks the chain from there on.
    let db = f.state.join("baseline.db");
    let conn = rusqlite_free_sql(
        &db,
        "UPDATE evidence SET record = replace(record, '\"differences\":1', '\"differences\":0') WHERE id = (SELECT max(id) FROM evidence)",
    );
    assert!(conn, "sqlite3 could not edit the evidence");
    let r = f.fimd(&["report"]);
    assert_eq!(r.code, 2, "an edited evidence log must fail: {}", r.stderr);
    assert!(r.stderr.contains("fails its MAC"), "{}", r.stderr);
}

/// Runs SQL on the database with the sqlite3 shell when present, else through python3.
fn rusqlite_free_sql(db: &std::path::Path, sql: &str) -> bool {
    std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(sys.argv[2])\nc.commit()\nprint(c.total_changes)",
            s(db),
            sql,
        ])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "1")
}
