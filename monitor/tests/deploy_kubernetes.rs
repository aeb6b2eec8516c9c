//! deploy/kubernetes: the manifests validate against the Kubernetes JSON schemas (PyPI's
//! kubernetes-validate), agree with each other and with the systemd unit, and the ConfigMap's
//! configuration passes `fimd config check`.
//!
//! Tools: python3 with `kubernetes-validate` from PyPI (it brings PyYAML). A missing tool fails
//! the test under FIMD_REQUIRE_PRIVILEGED=1 and skips it elsewhere.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::FIMD;
use common::deploy::{have_python_yaml, output, repo, unit_capabilities, yaml_doc};
use serde_json::Value;

/// Kubernetes versions whose schemas the manifests must satisfy: the oldest supported (1.30
/// brought securityContext.appArmorProfile) and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[Option<&str>] = &[Some("1.30.0"), None];

/// Every manifest under deploy/kubernetes, by file name.
fn manifests() -> BTreeMap<String, Value> {
    let dir = repo("deploy/kubernetes");
    let mut out = BTreeMap::new();
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.insert(name, yaml_doc(&p));
        }
    }
    out
}

fn by_kind<'a>(m: &'a BTreeMap<String, Value>, kind: &str) -> &'a Value {
    let found: Vec<&Value> = m.values().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn is_custom(doc: &Value) -> bool {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    api.starts_with("monitoring.coreos.com/") || api.starts_with("kustomize.config.k8s.io/")
}

#[test]
fn kubernetes_manifests_validate_against_the_kubernetes_schemas() {
    if !have_python_yaml() {
        return;
    }
    let m = manifests();
    let files: Vec<PathBuf> = m
        .iter()
        .filter(|(_, d)| !is_custom(d))
        .map(|(n, _)| repo("deploy/kubernetes").join(n))
        .collect();
    assert!(files.len() >= 5, "{files:?}");
    for version in KUBERNETES_VERSIONS {
        let mut c = Command::new("python3");
        c.args(["-m", "kubernetes_validate", "--strict"]);
        if let Some(v) = version {
            c.args(["-k", v]);
        }
        let (ok, out, err) = output(c.args(&files));
        let all = format!("{out}{err}");
        eprintln!("{all}");
        assert!(ok, "kubernetes-validate --strict {version:?}:\n{all}");
        assert_eq!(
            all.lines()
                .filter(|l| l.starts_with("INFO") && l.contains(" passed "))
                .count(),
            files.len(),
            "every manifest must be checked against a schema ({version:?}):\n{all}"
        );
        assert!(!all.contains("WARN") && !all.contains("ERROR"), "{all}");
    }
}

#[test]
fn kubernetes_manifests_agree_with_each_other_and_with_the_unit() {
    if !have_python_yaml() {
        return;
    }
    let m = manifests();
    let ns = by_kind(&m, "Namespace");
    let namespace = ns["metadata"]["name"].as_str().unwrap();
    assert_eq!(namespace, "fimd");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    for (file, d) in &m {
        if d["kind"] != "Namespace" && d["kind"] != "Kustomization" {
            assert_eq!(d["metadata"]["namespace"], namespace, "{file}: namespace");
        }
    }

    // kustomization.yaml lists every manifest, and names the image the pods use.
    let k = by_kind(&m, "Kustomization");
    let listed: BTreeSet<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let present: BTreeSet<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|n| *n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources");

    let ds = by_kind(&m, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "the DaemonSet's selector must match its pods");
    }
    assert_eq!(pod["hostPID"], true, "process attribution needs the host's /proc");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], serde_json::json!([{"operator": "Exists"}]));
    let sa = by_kind(&m, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let inits = pod["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 1);
    let init = &inits[0];
    let image = k["images"][0]["name"].as_str().unwrap();
    assert_eq!(c["image"], image);
    assert_eq!(init["image"], image);
    assert_eq!(
        c["command"],
        serde_json::json!(["fimd", "-c", "/etc/fimd/fimd.toml", "run"])
    );

    // The configuration: mounted where the command reads it, parsed by fimd itself below.
    let cm = by_kind(&m, "ConfigMap");
    let toml_text = cm["data"]["fimd.toml"].as_str().unwrap();
    let cfg: toml::Value = toml::from_str(toml_text).unwrap();
    let state_dir = cfg["state_dir"].as_str().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mount = |ctr: &Value, path: &str| -> Value {
        ctr["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|mt| mt["mountPath"] == path)
            .unwrap_or_else(|| panic!("{} mounts nothing at {path}", ctr["name"]))
            .clone()
    };
    for ctr in [c, init] {
        let cfg_mount = mount(ctr, "/etc/fimd");
        assert_eq!(
            volume(cfg_mount["name"].as_str().unwrap())["configMap"]["name"],
            cm["metadata"]["name"]
        );
        let host = mount(ctr, "/host");
        assert_eq!(host["readOnly"], true, "the host's root must be read-only");
        assert_eq!(host["mountPropagation"], "HostToContainer");
        assert_eq!(volume(host["name"].as_str().unwrap())["hostPath"]["path"], "/");
        // The baseline survives pod restarts: on the node.
        let state = mount(ctr, state_dir);
        assert_eq!(
            volume(state["name"].as_str().unwrap())["hostPath"]["path"],
            state_dir
        );
        let sc = &ctr["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["runAsUser"], 0);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        for r in ["requests", "limits"] {
            assert!(
                ctr["resources"][r]["memory"].is_string(),
                "{}: resources.{r}",
                ctr["name"]
            );
        }
    }
    for (path, host) in [
        ("/sys/kernel/btf", "/sys/kernel/btf"),
        ("/sys/kernel/tracing", "/sys/kernel/tracing"),
    ] {
        let mt = mount(c, path);
        assert_eq!(mt["readOnly"], true);
        assert_eq!(volume(mt["name"].as_str().unwrap())["hostPath"]["path"], host);
    }
    // The init container baselines a node only when it has none, and never replaces one.
    let script = init["command"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    assert!(
        script.contains(&format!("test -e {state_dir}/baseline.db")),
        "{script}"
    );
    assert!(script.contains("fimd -c /etc/fimd/fimd.toml init"), "{script}");

    // The same capabilities as the systemd unit.
    let (bounding, _) = unit_capabilities();
    let mut added: Vec<String> = c["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_ascii_lowercase())
        .collect();
    added.sort();
    assert_eq!(
        added, bounding,
        "the DaemonSet and the systemd unit should grant the same capabilities"
    );
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        serde_json::json!(["DAC_READ_SEARCH"]),
        "init reads files and loads no eBPF"
    );

    let env = c["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "NODE_NAME" && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "NODE_NAME from the downward API"
    );

    // Metrics: the configured listener, the container port, the probes, the Service and the
    // ServiceMonitor line up.
    let listen = cfg["metrics"]["listen"].as_str().unwrap();
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        listen.starts_with("0.0.0.0:"),
        "metrics must listen on the pod IP: {listen}"
    );
    let ports = c["ports"].as_array().unwrap();
    let metrics_port = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(metrics_port["containerPort"], port);
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    let startup = &c["startupProbe"];
    let budget = startup["periodSeconds"].as_u64().unwrap() * startup["failureThreshold"].as_u64().unwrap();
    assert!(
        budget >= 15 * 60,
        "the initial comparison may take many minutes: startup budget {budget} s"
    );
    let svc = by_kind(&m, "Service");
    assert_eq!(
        svc["spec"]["clusterIP"], "None",
        "headless: one endpoint per node"
    );
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "the Service must select the fimd pods");
    }
    let svc_port = &svc["spec"]["ports"][0];
    assert_eq!(svc_port["name"], "metrics");
    assert_eq!(svc_port["port"], port);
    assert_eq!(svc_port["targetPort"], "metrics");

    let sm = by_kind(&m, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert!(sm["metadata"]["name"].is_string());
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "the ServiceMonitor must select the Service"
        );
    }
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!([namespace])
    );
    let endpoints = sm["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], "metrics");
    assert_eq!(endpoints[0]["path"], "/metrics");
    // The rules expect job="fimd": a ServiceMonitor's job is its Service's name.
    assert!(sm["spec"]["jobLabel"].is_null());
    assert_eq!(svc["metadata"]["name"], "fimd");
}

#[test]
fn configmap_configuration_passes_fimd_config_check() {
    if !have_python_yaml() {
        return;
    }
    let cm = yaml_doc(&repo("deploy/kubernetes/configmap.yaml"));
    let text = cm["data"]["fimd.toml"].as_str().unwrap();
    // The watches name the host's paths under /host; here /host is a link to this machine's
    // root, so `config check` also proves they exist on a typical Linux host.
    assert!(text.contains("\"/host/"), "the watches should be under /host");
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/", dir.path().join("host")).unwrap();
    let rerooted = text.replace("\"/host/", &format!("\"{}/host/", dir.path().display()));
    let cfg = dir.path().join("fimd.toml");
    fs::write(&cfg, &rerooted).unwrap();
    let r = common::run({
        let mut c = Command::new(FIMD);
        c.arg("-c").arg(&cfg).args(["config", "check"]);
        c
    });
    assert_eq!(
        r.code, 0,
        "fimd config check on the ConfigMap's fimd.toml:\n{}{}",
        r.stdout, r.stderr
    );
}
