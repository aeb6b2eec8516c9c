//! The Prometheus alert rules against the metrics fimd exports: every metric a rule names is
//! one fimd exports (a renamed metric would silence its rule for ever), and every failure that
//! issue 12 requires to be visible (state store, watches, stuck threads) has a rule. The rules'
//! own behaviour (firing and silent) is tested by promtool: `deploy/prometheus/fimd-rules.test.yml`,
//! run here and in `tests/deploy.rs`.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Each rule's name and expression, from the rules file's `- alert:` and `expr:` lines (an
/// `expr: >-` block runs until the next key of the rule).
fn rules(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut in_expr = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("- alert:") {
            out.push((name.trim().to_owned(), String::new()));
            in_expr = false;
        } else if let Some(e) = t.strip_prefix("expr:") {
            let e = e.trim();
            in_expr = e == ">-" || e == ">" || e == "|";
            if let Some(last) = out.last_mut().filter(|_| !in_expr) {
                last.1 = e.to_owned();
            }
        } else if in_expr {
            // The next key of the rule ("labels:", "for: 2m") ends the block.
            let key = t.split_once(':').is_some_and(|(k, rest)| {
                !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    && (rest.is_empty() || rest.starts_with(' '))
            });
            if key {
                in_expr = false;
            } else if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(t);
            }
        }
    }
    out
}

/// The `fim_*` names in an expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("fim_") {
        let start = i + at;
        let boundary = start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(expr[start..end].to_owned());
        }
        i = end.max(start + 4);
    }
    out
}

/// The families fimd exports, from the exposition's `# TYPE` lines, with the sample names a
/// histogram adds.
fn exported() -> BTreeSet<String> {
    let m = fimd::telemetry::Metrics::new();
    // A family with labels shows once it has a series: give those not started at 0 one.
    m.count_output("jsonl", "dropped");
    m.set_sensor_hooks("ebpf", &["lsm/file_open".to_owned()]);
    let text = m.encode();
    let mut out = BTreeSet::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (Some(name), Some(ty)) = (f.next(), f.next()) else {
            continue;
        };
        out.insert(name.to_owned());
        if ty == "histogram" {
            for s in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{s}"));
            }
        }
    }
    out
}

#[test]
fn every_metric_a_rule_names_is_exported() {
    let exported = exported();
    assert!(exported.len() > 20, "{exported:?}");
    for file in [
        "deploy/prometheus/fimd-rules.yml",
        "deploy/kubernetes/prometheusrule.yaml",
    ] {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        let rules = rules(&text);
        assert!(rules.len() >= 14, "{file}: {} rules parsed", rules.len());
        for (name, expr) in &rules {
            assert!(!expr.is_empty(), "{file}: {name} has no expression parsed");
            for m in metric_names(expr) {
                assert!(
                    exported.contains(&m),
                    "{file}: {name} names {m}, which fimd does not export"
                );
            }
        }
    }
}

#[test]
fn every_visible_failure_has_a_rule() {
    let text = std::fs::read_to_string(repo("deploy/prometheus/fimd-rules.yml")).unwrap();
    let rules = rules(&text);
    let named = |metric: &str| -> Vec<&str> {
        rules
            .iter()
            .filter(|(_, e)| metric_names(e).contains(metric))
            .map(|(n, _)| n.as_str())
            .collect()
    };
    for (metric, rule) in [
        ("fim_state_write_failures_total", "FimdStateStoreFailing"),
        ("fim_state_queue_length", "FimdStateStoreFailing"),
        ("fim_state_writes_dropped_total", "FimdStateWritesDropped"),
        ("fim_watch_failures_total", "FimdWatchFailed"),
        ("fim_sensor_watch_full_total", "FimdWatchCapacityExceeded"),
        ("fim_stuck_threads", "FimdThreadsStuck"),
        ("fim_output_events_total", "FimdAlertOutputDropping"),
        ("fim_kernel_events_lost_total", "FimdKernelEventsLost"),
    ] {
        assert!(
            named(metric).contains(&rule),
            "{metric}: rules naming it: {:?}",
            named(metric)
        );
    }
}

#[test]
fn the_rules_parser_reads_blocks_and_one_liners() {
    let text = "      - alert: A\n        expr: >-\n          increase(fim_a_total[5m]) > 0\n          or (fim_b > 0\n          unless fim_b offset 5m)\n        labels:\n          severity: x\n      - alert: B\n        expr: fim_c == 0\n        for: 2m\n";
    let r = rules(text);
    assert_eq!(r.len(), 2);
    assert_eq!(
        metric_names(&r[0].1),
        BTreeSet::from(["fim_a_total".to_owned(), "fim_b".to_owned()])
    );
    assert_eq!(metric_names(&r[1].1), BTreeSet::from(["fim_c".to_owned()]));
    assert!(metric_names("xfim_d + fim_e").contains("fim_e"));
    assert!(!metric_names("xfim_d").contains("fim_d"));
}

#[test]
fn promtool_tests_the_failure_rules_firing_and_silent() {
    let have = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("FIMD_REQUIRE_PRIVILEGED").is_none(),
            "promtool is missing: apt-get install prometheus"
        );
        eprintln!("skipped: promtool is missing (apt-get install prometheus)");
        return;
    }
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(repo("deploy/prometheus/fimd-rules.test.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tests = std::fs::read_to_string(repo("deploy/prometheus/fimd-rules.test.yml")).unwrap();
    for rule in [
        "FimdStateStoreFailing",
        "FimdStateWritesDropped",
        "FimdWatchFailed",
        "FimdWatchCapacityExceeded",
        "FimdThreadsStuck",
    ] {
        let cases: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|c| c.contains(&format!("alertname: {rule}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "no silent case for {rule}"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "no firing case for {rule}"
        );
    }
}
