//! deploy/prometheus: the alert rules pass `promtool` and each is tested firing and silent, the
//! PrometheusRule carries exactly the rules file's groups, and `fimd run` exports every metric
//! the rules use.
//!
//! Tools: promtool (`prometheus`), python3 with `kubernetes-validate` from PyPI (it brings
//! PyYAML). A missing tool fails the test under FIMD_REQUIRE_PRIVILEGED=1 and skips it elsewhere.
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use common::daemon::Daemon;
use common::deploy::{Writer, baselined, have, have_promtool, have_python_yaml, output, repo, yaml_doc};
use common::metrics::{free_port, get};
use common::privileged;

/// The `fim_*` metric names the alert rules use.
fn metrics_in_rules() -> BTreeSet<String> {
    let text = fs::read_to_string(repo("deploy/prometheus/fimd-rules.yml")).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("fim_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn metrics_endpoint_serves_the_probes_and_every_metric_the_rules_use() {
    if !privileged("fimd run's metrics endpoint")
        || !have("python3", &["--version"], "apt-get install python3")
    {
        return;
    }
    let port = free_port();
    let (f, _) = baselined(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let mut d = Daemon::start_on_baseline(&f);
    let get = |path: &str| get(port, path);
    assert_eq!(get("/healthz").0, 200, "/healthz");
    assert_eq!(get("/readyz").0, 200, "/readyz once ready");

    let target = f.path("a.txt");
    let w = Writer::append(&target);
    d.expect(&target, "updated", w.pid());
    let (status, body) = get("/metrics");
    assert_eq!(status, 200, "/metrics: {body}");
    let exported: BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for name in metrics_in_rules() {
        assert!(
            exported.contains(name.as_str()),
            "/metrics lacks {name}, which the alert rules use:\n{body}"
        );
    }
    let sample = |prefix: &str| {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("/metrics has no {prefix}…:\n{body}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(sample("fim_sensor_attached{sensor=\"ebpf\"}"), 1.0);
    assert!(sample("fim_last_full_check_timestamp_seconds") > 0.0);
    let violations: f64 = body
        .lines()
        .filter(|l| l.starts_with("fim_integrity_changes_total{") && l.contains("kind=\"alert\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(violations >= 1.0, "the violation is not counted:\n{body}");
    assert_eq!(d.stop().code(), Some(0));
}

#[test]
fn prometheus_rules_pass_promtool_and_each_rule_is_tested_firing_and_silent() {
    if !have_promtool() || !have_python_yaml() {
        return;
    }
    let rules = repo("deploy/prometheus/fimd-rules.yml");
    let tests = repo("deploy/prometheus/fimd-rules.test.yml");
    let (ok, out, err) = output(Command::new("promtool").args(["check", "rules"]).arg(&rules));
    assert!(ok, "promtool check rules: {out}{err}");
    let (ok, out, err) = output(Command::new("promtool").args(["test", "rules"]).arg(&tests));
    assert!(ok, "promtool test rules: {out}{err}");

    let doc = yaml_doc(&rules);
    let mut alerts = BTreeSet::new();
    for g in doc["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().expect("only alerting rules");
            alerts.insert(name.to_owned());
            let sev = r["labels"]["severity"].as_str().unwrap_or_default();
            assert!(["critical", "warning"].contains(&sev), "{name}: severity {sev:?}");
            for a in ["summary", "description"] {
                assert!(r["annotations"][a].is_string(), "{name} lacks annotations.{a}");
            }
            assert!(
                r["annotations"]["description"]
                    .as_str()
                    .unwrap()
                    .contains("Runbook:"),
                "{name}'s description has no runbook hint"
            );
        }
    }
    for expected in [
        "FimdIntegrityViolation",
        "FimdKernelEventsLost",
        "FimdSensorDetached",
        "FimdFullCheckOverdue",
        "FimdDown",
        "FimdAbsent",
        "FimdAlertOutputDropping",
        "FimdBaselineRolledBack",
        "FimdDaemonSetNotFullyAvailable",
    ] {
        assert!(alerts.contains(expected), "no {expected} rule");
    }
    // Every rule has a test where it fires and one where it must not.
    let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for t in yaml_doc(&tests)["tests"].as_array().unwrap() {
        for case in t["alert_rule_test"].as_array().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let n = case["exp_alerts"].as_array().map_or(0, Vec::len);
            if n == 0 { &mut silent } else { &mut fires }.insert(name);
        }
    }
    for a in &alerts {
        assert!(fires.contains(a), "no test where {a} fires");
        assert!(silent.contains(a), "no test where {a} stays silent");
    }
}

#[test]
fn prometheusrule_carries_exactly_the_rules_file_groups() {
    if !have_python_yaml() {
        return;
    }
    let file = yaml_doc(&repo("deploy/prometheus/fimd-rules.yml"));
    let cr = yaml_doc(&repo("deploy/kubernetes/prometheusrule.yaml"));
    assert_eq!(cr["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(cr["kind"], "PrometheusRule");
    assert_eq!(cr["metadata"]["name"], "fimd");
    assert_eq!(cr["metadata"]["namespace"], "fimd");
    assert_eq!(
        cr["spec"]["groups"], file["groups"],
        "prometheusrule.yaml's spec.groups differ from deploy/prometheus/fimd-rules.yml: edit both"
    );
    let keys: Vec<&String> = cr["spec"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["groups"], "PrometheusRule spec holds only groups");
    if have_promtool() {
        let dir = tempfile::tempdir().unwrap();
        let extracted = dir.path().join("groups.json");
        fs::write(&extracted, serde_json::to_string(&cr["spec"]).unwrap()).unwrap();
        let (ok, out, err) = output(Command::new("promtool").args(["check", "rules"]).arg(&extracted));
        assert!(
            ok,
            "promtool check rules on the PrometheusRule's groups: {out}{err}"
        );
    }
}
