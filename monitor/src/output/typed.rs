//! The typed alert: one document fimd emits, held as typed parts (a change, a path that could
//! not be compared, a loss of sight, a state-store episode, and the writer the kernel named) and
//! serialised from them once, by [`Alert`]'s `Serialize` (keys in byte order: `output::ecs`).
//! The syslog header and structured data are built from the same parts, never read back out of
//! the JSON, and the daemon counts alerts by [`EventKind`], not by a field of the document.
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::doc::{ERR, Fields, NOTICE, WARNING, is_rfc5424_time, printable};
use super::ecs::{FileFields, Object, Part};
use crate::attribution::Actor;
use crate::compare::{Action, Attribute, Change};
use crate::config::Policy;
use crate::output::alert::{BaselineRef, Origin, Scan, human_line, now_rfc3339};
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

/// ECS `event.*` (`event.module` is always `fimd`).
#[derive(Debug, Clone)]
struct Event {
    action: String,
    /// `event.category`, one value: `file` or `database`.
    category: &'static str,
    /// `event.type`, one value: `creation`, `deletion`, `change`, `info` or `error`.
    kind_of: &'static str,
    outcome: Option<Outcome>,
    reason: Option<String>,
}

/// `file.*`: a whole entry, or only the path of a file fimd could not read or watch.
#[derive(Debug, Clone)]
enum File {
    Entry(Box<FileFields>),
    /// A change with neither state (none is made): `file` is `{}`.
    Empty,
    /// `file.path`, and the raw bytes (`fim.path_bytes_b64`) when they are not UTF-8.
    Path(String, Option<String>),
}

/// What a change adds under `fim.*`.
#[derive(Debug, Clone)]
struct ChangeFim {
    policy: Policy,
    changes: Vec<Attribute>,
    /// `fim.previous`: the baseline's state (for a deletion, the same as `file`).
    previous: Option<Box<FileFields>>,
    /// What an append or a rotation verified (`fim.append`, `fim.rotation`, …).
    extra: Vec<(&'static str, Value)>,
}

/// `fim.state`: the state store at `database` and its queued (`queued_writes`) or stored
/// again (`landed_writes`) writes.
#[derive(Debug, Clone)]
struct StateFim {
    database: String,
    writes: (&'static str, usize),
}

/// The writer the kernel named: ECS `process.*`, `user.id`, `container.*` (and
/// `orchestrator.*`, `kubernetes.*`) from [`Actor::ecs`], and `fim.kernel`.
#[derive(Debug, Clone)]
struct Writer {
    actor: Actor,
    sensor: String,
    /// The kernel function or tracepoint that saw the write.
    hook: String,
    cgroup_id: u64,
}

/// One document fimd emits (see the module doc).
#[derive(Debug, Clone)]
pub struct Alert {
    kind: EventKind,
    /// `@timestamp`, RFC 3339.
    timestamp: String,
    /// `host.name`.
    host: String,
    event: Event,
    file: Option<File>,
    /// `error.message`.
    error: Option<String>,
    /// `fim.scan`, `fim.root` and `fim.baseline`, where the document has them.
    scan: Option<Scan>,
    root: Option<String>,
    baseline: Option<BaselineRef>,
    change: Option<ChangeFim>,
    state: Option<StateFim>,
    writer: Option<Writer>,
    /// `message`: one readable line.
    message: Option<String>,
}

impl Alert {
    fn new(kind: EventKind, event: Event, host: &str) -> Alert {
        Alert {
            kind,
            timestamp: now_rfc3339(),
            host: host.to_owned(),
            event,
            file: None,
            error: None,
            scan: None,
            root: None,
            baseline: None,
            change: None,
            state: None,
            writer: None,
            message: None,
        }
    }

    /// A document about a path of `origin`'s scan: `fim.scan` and `fim.baseline` set.
    fn found(mut self, origin: &Origin) -> Alert {
        self.scan = Some(origin.scan);
        self.baseline = origin.baseline.clone();
        self
    }

    /// The document for a change (an alert, or an allowed event such as `appended`).
    pub fn change(c: &Change, origin: &Origin) -> Alert {
        let event = Event {
            action: c.action.as_str().to_owned(),
            category: "file",
            kind_of: match c.action {
                Action::Created => "creation",
                Action::Deleted => "deletion",
                _ => "change",
            },
            outcome: None,
            reason: None,
        };
        let mut a = Alert::new(c.kind, event, &origin.host).found(origin);
        a.root = origin.root.clone();
        a.file = Some(match c.current.as_ref().or(c.previous.as_ref()) {
            Some(e) => File::Entry(Box::new(FileFields::of(e))),
            None => File::Empty,
        });
        a.change = Some(ChangeFim {
            policy: c.policy,
            changes: c.changes.clone(),
            previous: c.previous.as_ref().map(|p| Box::new(FileFields::of(p))),
            extra: c.extra.clone(),
        });
        a.message = Some(human_line(c));
        a
    }

    /// The event for a path the scan could not compare (`not_compared`).
    pub fn problem(p: &crate::scan::Problem, origin: &Origin) -> Alert {
        let event = Event {
            action: "not_compared".into(),
            category: "file",
            kind_of: "error",
            outcome: Some(Outcome::Failure),
            reason: None,
        };
        let (text, raw) = path_text(&p.path);
        let mut a = Alert::new(EventKind::Event, event, &origin.host).found(origin);
        a.file = Some(File::Path(text, raw));
        a.error = Some(p.message.clone());
        a
    }

    /// The alert that fimd cannot watch `path` (`action`, e.g. `watch_capacity_exceeded`): not
    /// a change of the file, but a loss of sight an operator must know of. `reason` says what
    /// and what covers it meanwhile.
    pub fn coverage(action: &str, path: &[u8], reason: &str, origin: &Origin) -> Alert {
        let event = Event {
            action: action.to_owned(),
            category: "file",
            kind_of: "info",
            outcome: Some(Outcome::Failure),
            reason: None,
        };
        let (text, raw) = path_text(path);
        let mut a = Alert::new(EventKind::Alert, event, &origin.host).found(origin);
        a.message = Some(format!("{action} {text}: {reason}"));
        a.file = Some(File::Path(text, raw));
        a.error = Some(reason.to_owned());
        a
    }

    /// The alert that the state store at `database` is failing (`state_store_failing`), once
    /// per episode; `reason` is the store's error, `queued` the writes waiting.
    pub fn state_store_failing(reason: &str, database: &str, queued: usize, origin: &Origin) -> Alert {
        let event = Event {
            action: "state_store_failing".into(),
            category: "database",
            kind_of: "error",
            outcome: Some(Outcome::Failure),
            reason: Some(reason.to_owned()),
        };
        let mut a = Alert::new(EventKind::Alert, event, &origin.host);
        a.error = Some(reason.to_owned());
        a.state = Some(StateFim {
            database: database.to_owned(),
            writes: ("queued_writes", queued),
        });
        a.message = Some(format!(
            "state_store_failing {database}: {reason}; detection and alerting go on, evidence and \
             ledger writes are queued in memory and retried"
        ));
        a
    }

    /// The event that `landed` queued writes were stored again (`state_store_recovered`).
    pub fn state_store_recovered(database: &str, landed: usize, origin: &Origin) -> Alert {
        let event = Event {
            action: "state_store_recovered".into(),
            category: "database",
            kind_of: "change",
            outcome: Some(Outcome::Success),
            reason: None,
        };
        let mut a = Alert::new(EventKind::Event, event, &origin.host);
        a.state = Some(StateFim {
            database: database.to_owned(),
            writes: ("landed_writes", landed),
        });
        a.message = Some(format!(
            "state_store_recovered {database}: {landed} queued writes stored"
        ));
        a
    }

    /// Names the writer the kernel reported: ECS `process.*`, `user.id`, `container.*` (and
    /// `orchestrator.*`, `kubernetes.*`), and `fim.kernel` (`sensor`, `hook`: the kernel
    /// function or tracepoint that saw the write, `cgroup_id`).
    pub fn with_actor(mut self, actor: &Actor, sensor: &str, hook: &str, cgroup_id: u64) -> Alert {
        self.writer = Some(Writer {
            actor: actor.clone(),
            sensor: sensor.to_owned(),
            hook: hook.to_owned(),
            cgroup_id,
        });
        self
    }

    /// The same document stamped at `timestamp` (RFC 3339), for documents pinned in tests.
    pub fn at(mut self, timestamp: &str) -> Alert {
        self.timestamp = timestamp.to_owned();
        self
    }

    /// ECS `event.kind`.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The ECS document as JSON, serialised once from the typed parts.
    pub fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }

    /// The ECS document as a `Value`, for tests and tools that look into it.
    pub fn document(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// `file.path` and `file.hash.sha256`, where the document has them.
    fn path_and_hash(&self) -> (Option<&str>, Option<&str>) {
        match &self.file {
            Some(File::Entry(f)) => (Some(&f.path), f.sha256.as_deref()),
            Some(File::Path(p, _)) => (Some(p), None),
            Some(File::Empty) | None => (None, None),
        }
    }

    /// The syslog header and structured data, from the typed parts.
    pub(crate) fn syslog_fields(&self) -> Fields {
        let e = &self.event;
        let failure = e.outcome == Some(Outcome::Failure) || e.action == "not_compared";
        let severity = if failure {
            ERR
        } else if self.kind == EventKind::Alert {
            WARNING
        } else {
            NOTICE
        };
        let (path, sha256) = self.path_and_hash();
        let actor = self.writer.as_ref().map(|w| &w.actor);
        let mut params: Vec<(&'static str, String)> = vec![
            ("action", e.action.clone()),
            ("kind", self.kind.as_str().to_owned()),
        ];
        let mut put = |name: &'static str, v: Option<String>| params.extend(v.map(|v| (name, v)));
        put("outcome", e.outcome.map(|o| o.as_str().to_owned()));
        put("path", path.map(str::to_owned));
        put("sha256", sha256.map(str::to_owned));
        put(
            "policy",
            self.change.as_ref().map(|c| c.policy.as_str().to_owned()),
        );
        put(
            "changes",
            self.change
                .as_ref()
                .filter(|c| !c.changes.is_empty())
                .map(|c| crate::compare::names(&c.changes, ",")),
        );
        put("pid", actor.map(|a| a.pid.to_string()));
        put("exe", actor.and_then(|a| a.executable.clone()));
        put("uid", actor.and_then(|a| a.uid).map(|u| u.to_string()));
        put(
            "container",
            actor
                .and_then(|a| a.container.as_ref())
                .map(|(c, _)| c.id.clone()),
        );
        Fields {
            severity,
            timestamp: Some(self.timestamp.clone()).filter(|t| is_rfc5424_time(t)),
            hostname: Some(printable(&self.host, 255)),
            msgid: Some(printable(&e.action, 32)),
            params,
        }
    }
}

impl Serialize for Alert {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = &self.event;
        let mut event = Object::new();
        event.put("kind", Part::Str(self.kind.as_str()));
        event.put("category", Part::Strs(std::slice::from_ref(&e.category)));
        event.put("type", Part::Strs(std::slice::from_ref(&e.kind_of)));
        event.put("action", Part::Str(&e.action));
        event.put_opt("outcome", e.outcome.map(|o| Part::Str(o.as_str())));
        event.put_opt("reason", e.reason.as_deref().map(Part::Str));
        event.put("module", Part::Str("fimd"));

        let mut fim = Object::new();
        let mut doc = Object::new();
        doc.put("@timestamp", Part::Str(&self.timestamp));
        doc.put("event", Part::Obj(event));
        match &self.file {
            Some(File::Entry(f)) => {
                doc.put("file", Part::Obj(f.object(false)));
                fim.put_opt("path_bytes_b64", f.path_bytes_b64.as_deref().map(Part::Str));
                if !f.xattrs.is_empty() {
                    fim.put("xattrs", Part::Texts(&f.xattrs));
                }
            }
            Some(File::Path(p, raw)) => {
                doc.put("file", Part::Obj(Object(vec![("path", Part::Str(p))])));
                fim.put_opt("path_bytes_b64", raw.as_deref().map(Part::Str));
            }
            Some(File::Empty) => doc.put("file", Part::Obj(Object::new())),
            None => {}
        }
        if let Some(m) = &self.error {
            doc.put("error", Part::Obj(Object(vec![("message", Part::Str(m))])));
        }
        fim.put_opt("scan", self.scan.map(|s| Part::Str(s.as_str())));
        fim.put_opt("root", self.root.as_deref().map(Part::Str));
        if let Some(b) = &self.baseline {
            let baseline = vec![
                ("generation", Part::U64(b.generation)),
                ("seal", Part::Str(&b.seal)),
            ];
            fim.put("baseline", Part::Obj(Object(baseline)));
        }
        if let Some(c) = &self.change {
            fim.put("policy", Part::Str(c.policy.as_str()));
            fim.put("changes", Part::Attrs(&c.changes));
            if let Some(p) = &c.previous {
                fim.put("previous", Part::Obj(p.object(true)));
            }
            for (k, v) in &c.extra {
                fim.put(k, Part::Json(v));
            }
        }
        if let Some(st) = &self.state {
            let state = vec![
                ("database", Part::Str(&st.database)),
                (st.writes.0, Part::U64(st.writes.1 as u64)),
            ];
            fim.put("state", Part::Obj(Object(state)));
        }
        let ecs = self.writer.as_ref().map(|w| w.actor.ecs()).unwrap_or_default();
        if let Some(w) = &self.writer {
            let kernel = vec![
                ("sensor", Part::Str(&w.sensor)),
                ("hook", Part::Str(&w.hook)),
                ("cgroup_id", Part::U64(w.cgroup_id)),
            ];
            fim.put("kernel", Part::Obj(Object(kernel)));
        }
        for (k, v) in &ecs {
            doc.put(k, Part::Json(v));
        }
        doc.put("fim", Part::Obj(fim));
        doc.put("host", Part::Obj(Object(vec![("name", Part::Str(&self.host))])));
        doc.put_opt("message", self.message.as_deref().map(Part::Str));
        doc.serialize(s)
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
            let doc = &a.document();
            assert_eq!(a.syslog_fields(), Fields::of(doc), "{doc:#}");
            // Written from the typed parts byte for byte as serde_json writes the same document
            // held as a `Value` (every object's keys in byte order).
            assert_eq!(a.json().unwrap(), serde_json::to_string(doc).unwrap());
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
