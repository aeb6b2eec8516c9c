//! The typed alert: one document fimd emits, built once from typed parts (a change, a path that
//! could not be compared, a loss of sight, a state-store episode) and the writer the kernel
//! named. Sinks get its ECS document serialised once; the syslog header and structured data are
//! built from the typed parts, never read back out of the JSON, and the daemon counts alerts by
//! [`EventKind`], not by a field of the document.
use serde_json::{Value, json};

use super::alert::{Origin, coverage_alert, now_rfc3339, problem_json, to_json};
use super::doc::{ERR, Fields, NOTICE, WARNING, is_rfc5424_time, printable};
use crate::attribution::Actor;
use crate::baseline::store::hex;
use crate::compare::{Attribute, Change};
use crate::paths::path_text;

/// ECS `event.kind`: an alert (a difference, a loss of sight) or an event (allowed, recorded).
pub use crate::compare::Kind as EventKind;

/// ECS `event.outcome`, where a document has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// What syslog structured data repeats (`fim@32473`), in its order, from the typed parts.
#[derive(Debug, Clone, Default)]
struct Summary {
    action: String,
    outcome: Option<Outcome>,
    /// `file.path` as text.
    path: Option<String>,
    /// `file.hash.sha256`, hex.
    sha256: Option<String>,
    policy: Option<&'static str>,
    changes: Vec<Attribute>,
    /// `process.pid` (the thread group id).
    pid: Option<u32>,
    exe: Option<String>,
    /// `user.id`.
    uid: Option<u32>,
    container: Option<String>,
}

/// One document fimd emits (see the module doc).
#[derive(Debug, Clone)]
pub struct Alert {
    kind: EventKind,
    /// The ECS document, complete.
    doc: Value,
    summary: Summary,
    /// `@timestamp`.
    timestamp: String,
    /// `host.name`.
    host: String,
}

impl Alert {
    fn new(kind: EventKind, doc: Value, summary: Summary, origin: &Origin) -> Alert {
        let timestamp = doc["@timestamp"].as_str().map_or_else(now_rfc3339, str::to_owned);
        Alert {
            kind,
            doc,
            summary,
            timestamp,
            host: origin.host.clone(),
        }
    }

    /// The document for a change (an alert, or an allowed event such as `appended`).
    pub fn change(c: &Change, origin: &Origin) -> Alert {
        let entry = c.current.as_ref().or(c.previous.as_ref());
        let kind = c.kind;
        let summary = Summary {
            action: c.action.as_str().to_owned(),
            path: entry.map(|e| path_text(&e.path).0),
            sha256: entry.and_then(|e| e.sha256.as_ref()).map(|h| hex(h)),
            policy: Some(c.policy.as_str()),
            changes: c.changes.clone(),
            ..Summary::default()
        };
        Alert::new(kind, to_json(c, origin), summary, origin)
    }

    /// The event for a path the scan could not compare (`not_compared`).
    pub fn problem(p: &crate::scan::Problem, origin: &Origin) -> Alert {
        let summary = Summary {
            action: "not_compared".into(),
            outcome: Some(Outcome::Failure),
            path: Some(path_text(&p.path).0),
            ..Summary::default()
        };
        Alert::new(EventKind::Event, problem_json(p, origin), summary, origin)
    }

    /// The alert that fimd cannot watch `path` (`action`, e.g. `watch_capacity_exceeded`).
    pub fn coverage(action: &str, path: &[u8], reason: &str, origin: &Origin) -> Alert {
        let summary = Summary {
            action: action.to_owned(),
            outcome: Some(Outcome::Failure),
            path: Some(path_text(path).0),
            ..Summary::default()
        };
        let doc = coverage_alert(action, path, reason, origin);
        Alert::new(EventKind::Alert, doc, summary, origin)
    }

    /// The alert that the state store at `database` is failing (`state_store_failing`), once
    /// per episode; `reason` is the store's error, `queued` the writes waiting.
    pub fn state_store_failing(reason: &str, database: &str, queued: usize, origin: &Origin) -> Alert {
        let doc = json!({
            "@timestamp": now_rfc3339(),
            "event": {
                "kind": "alert",
                "category": ["database"],
                "type": ["error"],
                "action": "state_store_failing",
                "outcome": "failure",
                "reason": reason,
                "module": "fimd",
            },
            "error": { "message": reason },
            "fim": { "state": { "database": database, "queued_writes": queued } },
            "host": { "name": origin.host },
            "message": format!(
                "state_store_failing {database}: {reason}; detection and alerting go on, evidence and \
                 ledger writes are queued in memory and retried"
            ),
        });
        let summary = Summary {
            action: "state_store_failing".into(),
            outcome: Some(Outcome::Failure),
            ..Summary::default()
        };
        Alert::new(EventKind::Alert, doc, summary, origin)
    }

    /// The event that `landed` queued writes were stored again (`state_store_recovered`).
    pub fn state_store_recovered(database: &str, landed: usize, origin: &Origin) -> Alert {
        let doc = json!({
            "@timestamp": now_rfc3339(),
            "event": {
                "kind": "event",
                "category": ["database"],
                "type": ["change"],
                "action": "state_store_recovered",
                "outcome": "success",
                "module": "fimd",
            },
            "fim": { "state": { "database": database, "landed_writes": landed } },
            "host": { "name": origin.host },
            "message": format!("state_store_recovered {database}: {landed} queued writes stored"),
        });
        let summary = Summary {
            action: "state_store_recovered".into(),
            outcome: Some(Outcome::Success),
            ..Summary::default()
        };
        Alert::new(EventKind::Event, doc, summary, origin)
    }

    /// Names the writer the kernel reported: ECS `process.*`, `user.id`, `container.*` (and
    /// `orchestrator.*`, `kubernetes.*`), and `fim.kernel` (`sensor`, `hook`: the kernel
    /// function or tracepoint that saw the write, `cgroup_id`).
    pub fn with_actor(mut self, actor: &Actor, sensor: &str, hook: &str, cgroup_id: u64) -> Alert {
        if let Some(obj) = self.doc.as_object_mut() {
            for (k, v) in actor.ecs() {
                obj.insert(k.into(), v);
            }
            if let Some(fim) = obj.get_mut("fim").and_then(Value::as_object_mut) {
                fim.insert(
                    "kernel".into(),
                    json!({ "sensor": sensor, "hook": hook, "cgroup_id": cgroup_id }),
                );
            }
        }
        self.summary.pid = Some(actor.pid);
        self.summary.exe = actor.executable.clone();
        self.summary.uid = actor.uid;
        self.summary.container = actor.container.as_ref().map(|(c, _)| c.id.clone());
        self
    }

    /// The same document stamped at `timestamp` (RFC 3339), for documents pinned in tests.
    pub fn at(mut self, timestamp: &str) -> Alert {
        self.doc["@timestamp"] = json!(timestamp);
        self.timestamp = timestamp.to_owned();
        self
    }

    /// ECS `event.kind`.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The ECS document.
    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// The syslog header and structured data, from the typed parts.
    pub(crate) fn syslog_fields(&self) -> Fields {
        let s = &self.summary;
        let failure = s.outcome == Some(Outcome::Failure) || s.action == "not_compared";
        let severity = if failure {
            ERR
        } else if self.kind == EventKind::Alert {
            WARNING
        } else {
            NOTICE
        };
        let mut params: Vec<(&'static str, String)> = vec![
            ("action", s.action.clone()),
            ("kind", self.kind.as_str().to_owned()),
        ];
        let mut put = |name: &'static str, v: Option<String>| params.extend(v.map(|v| (name, v)));
        put("outcome", s.outcome.map(|o| o.as_str().to_owned()));
        put("path", s.path.clone());
        put("sha256", s.sha256.clone());
        put("policy", s.policy.map(str::to_owned));
        put(
            "changes",
            (!s.changes.is_empty()).then(|| crate::compare::names(&s.changes, ",")),
        );
        put("pid", s.pid.map(|p| p.to_string()));
        put("exe", s.exe.clone());
        put("uid", s.uid.map(|u| u.to_string()));
        put("container", s.container.clone());
        Fields {
            severity,
            timestamp: Some(self.timestamp.clone()).filter(|t| is_rfc5424_time(t)),
            hostname: Some(printable(&self.host, 255)),
            msgid: Some(printable(&s.action, 32)),
            params,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{ContainerRef, PodRef};
    use crate::baseline::entry::Entry;
    use crate::compare::{Action, Kind};
    use crate::config::Policy;

    fn entry(path: &[u8], sha: Option<[u8; 32]>) -> Entry {
        Entry {
            size: 3,
            ino: 7,
            mtime_ns: 1,
            ctime_ns: 1,
            sha256: sha,
            flags: Some(0),
            ..Entry::test_file(path)
        }
    }

    fn origin() -> Origin {
        Origin {
            host: "web 1".into(),
            scan: crate::output::alert::Scan::Realtime,
            root: None,
            baseline: None,
        }
    }

    fn actor(uid: Option<u32>, container: bool, exe: bool) -> Actor {
        Actor {
            pid: 42,
            name: "vi".into(),
            thread_id: 43,
            thread_name: "vi".into(),
            executable: exe.then(|| "/usr/bin/vi".into()),
            uid,
            container: container.then(|| {
                (
                    ContainerRef {
                        id: "ab".repeat(32),
                        runtime: Some("containerd"),
                        pod_uid: Some("1234".into()),
                    },
                    Some(PodRef {
                        uid: "1234".into(),
                        name: "web-0".into(),
                        namespace: "prod".into(),
                    }),
                )
            }),
        }
    }

    /// Every kind of document, with and without a writer: the syslog fields built from the typed
    /// parts are those a reader of the finished document finds where ECS puts them. A field
    /// renamed on one side only fails here.
    #[test]
    fn structured_data_from_the_typed_parts_matches_the_document() {
        let o = origin();
        let weird = b"/srv/we\"ird]\xffname".as_slice();
        let changes = [
            Change::alert(
                Action::Updated,
                Policy::Static,
                Some(entry(weird, Some([1; 32]))),
                Some(entry(weird, Some([2; 32]))),
                vec![Attribute::Content, Attribute::Mtime],
            ),
            Change::alert(
                Action::Deleted,
                Policy::Static,
                Some(entry(b"/etc/x", None)),
                None,
                vec![],
            ),
            Change::alert(
                Action::Created,
                Policy::AppendOnly,
                None,
                Some(entry(b"/var/log/a", Some([3; 32]))),
                vec![],
            ),
            Change {
                kind: Kind::Event,
                ..Change::alert(
                    Action::Appended,
                    Policy::AppendOnly,
                    Some(entry(b"/var/log/a", None)),
                    Some(entry(b"/var/log/a", Some([4; 32]))),
                    vec![Attribute::Size],
                )
            },
        ];
        let mut alerts: Vec<Alert> = Vec::new();
        for c in &changes {
            alerts.push(Alert::change(c, &o));
            for (uid, container, exe) in [
                (Some(0), true, true),
                (None, false, false),
                (Some(1000), false, true),
            ] {
                alerts.push(Alert::change(c, &o).with_actor(
                    &actor(uid, container, exe),
                    "ebpf",
                    "vfs_write",
                    9,
                ));
            }
        }
        let problem = crate::scan::Problem {
            path: b"/etc/shadow".to_vec(),
            message: "permission denied".into(),
            subtree: false,
        };
        alerts.push(Alert::problem(&problem, &o));
        alerts.push(Alert::coverage(
            "watch_capacity_exceeded",
            b"/srv",
            "maps full",
            &o,
        ));
        alerts.push(Alert::state_store_failing(
            "disk full",
            "/var/lib/fimd/state.db",
            3,
            &o,
        ));
        alerts.push(Alert::state_store_recovered("/var/lib/fimd/state.db", 3, &o));
        for a in &alerts {
            let doc = a.document();
            assert_eq!(a.syslog_fields(), Fields::of(doc), "{doc:#}");
            assert_eq!(doc["event"]["kind"], a.kind().as_str(), "{doc:#}");
        }
        // The severities follow the kind and outcome.
        let sev: Vec<u8> = alerts[alerts.len() - 4..]
            .iter()
            .map(|a| a.syslog_fields().severity)
            .collect();
        assert_eq!(sev, [ERR, ERR, ERR, NOTICE]);
        assert_eq!(alerts[0].syslog_fields().severity, WARNING);
    }
}
