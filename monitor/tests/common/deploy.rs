//! What the deployment tests (`deploy_*.rs`) share: the repository's deploy/ files, the tools
//! that interpret them (a missing tool fails the test under FIMD_REQUIRE_PRIVILEGED=1 and skips
//! it elsewhere), the systemd unit's assignments, and a baselined fixture with a writer for
//! `fimd run` under the unit's constraints.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::Fixture;

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

pub fn unit_path() -> PathBuf {
    repo("deploy/systemd/fimd.service")
}

pub fn required() -> bool {
    std::env::var_os("FIMD_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1")
}

/// Whether `program probe…` runs successfully. When it does not, the test fails under
/// FIMD_REQUIRE_PRIVILEGED=1 (CI must install it) and skips, loudly, elsewhere.
pub fn have(program: &str, probe: &[&str], install: &str) -> bool {
    let ok = Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if required() {
        panic!("{program} {probe:?} does not run: {install}; FIMD_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!(
        "SKIPPED: {program} is missing ({install}; set FIMD_REQUIRE_PRIVILEGED=1 to make this a failure)"
    );
    false
}

pub fn have_systemd_analyze() -> bool {
    have("systemd-analyze", &["--version"], "apt-get install systemd")
}

pub fn have_promtool() -> bool {
    have("promtool", &["--version"], "apt-get install prometheus")
}

pub fn have_python_yaml() -> bool {
    have(
        "python3",
        &["-c", "import yaml, kubernetes_validate"],
        "python3 -m pip install kubernetes-validate",
    )
}

/// Runs a command to completion: success, stdout, stderr.
pub fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every document of a YAML file, as JSON (PyYAML does the parsing).
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let (ok, out, err) = output(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import json, sys, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
         json.dump(docs, sys.stdout)",
            )
            .arg(path),
    );
    assert!(ok, "{} is not valid YAML: {err}", path.display());
    serde_json::from_str(&out).unwrap()
}

pub fn yaml_doc(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{} should hold one document", path.display());
    docs.remove(0)
}

// ---------------------------------------------------------------------------------------------
// The systemd unit

/// `(section, key, value)` of every assignment, in order.
pub fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not an assignment in the unit: {line:?}"));
        assert!(
            !v.ends_with('\\'),
            "line continuations are not expected: {line:?}"
        );
        out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
    }
    out
}

pub fn unit_values(entries: &[(String, String, String)], key: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|(_, k, _)| k == key)
        .map(|(_, _, v)| v.clone())
        .collect()
}

/// The capabilities an assignment list grants (union of the lines), lower case without `CAP_`.
pub fn unit_caps(entries: &[(String, String, String)], key: &str) -> Vec<String> {
    let mut caps = BTreeSet::new();
    for v in unit_values(entries, key) {
        assert!(
            !v.starts_with('~'),
            "{key}= is expected as a list of what is kept: {v:?}"
        );
        if v.is_empty() {
            caps.clear();
        }
        for c in v.split_whitespace() {
            let c = c.to_ascii_lowercase();
            let c = c
                .strip_prefix("cap_")
                .unwrap_or_else(|| panic!("{key}: {c:?} lacks CAP_"));
            caps.insert(c.to_owned());
        }
    }
    caps.into_iter().collect()
}

/// The unit's bounding set (lower case, no `CAP_`) and its ambient set.
pub fn unit_capabilities() -> (Vec<String>, Vec<String>) {
    let entries = unit_entries(&fs::read_to_string(unit_path()).unwrap());
    let bounding = unit_caps(&entries, "CapabilityBoundingSet");
    let ambient = unit_caps(&entries, "AmbientCapabilities");
    assert!(!bounding.is_empty(), "the unit must bound the capability set");
    for a in &ambient {
        assert!(bounding.contains(a), "ambient {a} is not in the bounding set");
    }
    (bounding, ambient)
}

/// Every system call a `SystemCallFilter=@group name…` list stands for, from
/// `systemd-analyze syscall-filter` (groups nest).
pub struct SyscallGroups(BTreeMap<String, Vec<String>>);

impl SyscallGroups {
    pub fn load() -> SyscallGroups {
        let (ok, out, err) = output(Command::new("systemd-analyze").args(["syscall-filter", "--no-pager"]));
        assert!(ok, "systemd-analyze syscall-filter: {err}");
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in out.lines() {
            if line.starts_with('@') {
                current = Some(line.trim().to_owned());
                groups.insert(line.trim().to_owned(), Vec::new());
            } else if line.starts_with(' ') {
                let item = line.trim();
                if let (Some(g), false) = (&current, item.starts_with('#') || item.is_empty()) {
                    groups.get_mut(g).unwrap().push(item.to_owned());
                }
            } else {
                current = None;
            }
        }
        assert!(groups.contains_key("@system-service"), "unexpected output: {out}");
        SyscallGroups(groups)
    }

    pub fn expand(&self, item: &str, into: &mut BTreeSet<String>) {
        if item.starts_with('@') {
            let members = self
                .0
                .get(item)
                .unwrap_or_else(|| panic!("unknown system call group {item}"));
            for m in members {
                self.expand(m, into);
            }
        } else {
            into.insert(item.to_owned());
        }
    }

    /// What the unit's SystemCallFilter= lines allow: the first, an allow list; later `~` lines
    /// take away, later plain lines add.
    pub fn allowed_by_unit(&self) -> BTreeSet<String> {
        let entries = unit_entries(&fs::read_to_string(unit_path()).unwrap());
        let lines = unit_values(&entries, "SystemCallFilter");
        assert!(
            lines.first().is_some_and(|l| !l.starts_with('~')),
            "the unit's SystemCallFilter= should start with an allow list: {lines:?}"
        );
        let mut allowed = BTreeSet::new();
        for line in lines {
            let (deny, items) = match line.strip_prefix('~') {
                Some(rest) => (true, rest),
                None => (false, line.as_str()),
            };
            let mut set = BTreeSet::new();
            for item in items.split_whitespace() {
                self.expand(item, &mut set);
            }
            if deny {
                allowed.retain(|s| !set.contains(s));
            } else {
                allowed.extend(set);
            }
        }
        allowed
    }
}

/// A baselined fixture whose alerts go to `DIR/log/alerts.jsonl`, plus `extra` configuration.
pub fn baselined(extra: &str) -> (Fixture, PathBuf) {
    let f = Fixture::new();
    f.init();
    let logs = f.dir.path().join("log");
    fs::create_dir(&logs).unwrap();
    let sink = logs.join("alerts.jsonl");
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(
        &f.config,
        format!(
            "{text}\n[alerts]\njsonl = {:?}\n{extra}",
            sink.display().to_string()
        ),
    )
    .unwrap();
    (f, sink)
}

/// A writer that lives on for a while after its write, so its /proc/PID/exe can be read.
pub struct Writer {
    child: Child,
}

impl Writer {
    pub fn append(path: &Path) -> Writer {
        let child = Command::new("python3")
            .args([
                "-c",
                "import sys, time\nwith open(sys.argv[1], 'a') as f:\n    f.write('tampered\\n')\ntime.sleep(5)",
            ])
            .arg(path)
            .spawn()
            .expect("python3");
        Writer { child }
    }

    /// What the writer runs now (python3 may be a wrapper script that execs it).
    pub fn exe(&self) -> PathBuf {
        fs::read_link(format!("/proc/{}/exe", self.child.id())).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
