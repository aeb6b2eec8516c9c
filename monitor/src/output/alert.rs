//! Alerts as Elastic Common Schema JSON objects, and their one-line human form.
use serde_json::{Map, Value, json};

use crate::baseline::entry::{Entry, FileKind};
use crate::baseline::store::hex;
use crate::compare::{Action, Change};
use crate::config::Policy;
use crate::paths::path_text;

/// What found a change (`fim.scan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// `fimd check`.
    Check,
    /// `fimd verify`.
    Verify,
    /// `fimd run`.
    Realtime,
}

impl Scan {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scan::Check => "check",
            Scan::Verify => "verify",
            Scan::Realtime => "realtime",
        }
    }
}

/// Where a change was found.
#[derive(Debug, Clone)]
pub struct Origin {
    pub host: String,
    pub scan: Scan,
    /// The tree that was read, when it is not the host's own `/`.
    pub root: Option<String>,
    /// The baseline the finding was judged against (`fim.baseline`).
    pub baseline: Option<BaselineRef>,
}

/// Which baseline: its generation (1 at the first `init`, +1 on every `init` and `accept`)
/// and its seal, the hex HMAC-SHA256 over its content. A sealed older copy put back carries a
/// lower generation than the alerts already sent: that is how a rollback shows.
#[derive(Debug, Clone)]
pub struct BaselineRef {
    pub generation: u64,
    pub seal: String,
}

impl BaselineRef {
    /// `fim.baseline`: `{"generation": N, "seal": "hex"}`.
    pub fn to_json(&self) -> Value {
        json!({ "generation": self.generation, "seal": self.seal })
    }
}

pub fn now_rfc3339() -> String {
    rfc3339_ns(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
    )
}

pub fn rfc3339_ns(ns: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

fn event_type(a: Action) -> &'static str {
    match a {
        Action::Created => "creation",
        Action::Deleted => "deletion",
        Action::Appended => "change",
        _ => "change",
    }
}

/// The ECS `file.*` fields of an entry (also used for `fim.previous`).
pub fn file_fields(e: &Entry) -> Map<String, Value> {
    let (text, raw) = path_text(&e.path);
    let mut f = Map::new();
    f.insert("path".into(), json!(text));
    if let Some(name) = e.path.rsplit(|&b| b == b'/').next() {
        f.insert("name".into(), json!(path_text(name).0));
    }
    f.insert("type".into(), json!(e.kind.as_str()));
    f.insert("inode".into(), json!(e.ino.to_string()));
    f.insert("mode".into(), json!(format!("{:04o}", e.mode)));
    f.insert("uid".into(), json!(e.uid.to_string()));
    f.insert("gid".into(), json!(e.gid.to_string()));
    if e.kind != FileKind::Directory {
        f.insert("size".into(), json!(e.size));
    }
    f.insert("mtime".into(), json!(rfc3339_ns(e.mtime_ns)));
    f.insert("ctime".into(), json!(rfc3339_ns(e.ctime_ns)));
    if let Some(h) = &e.sha256 {
        f.insert("hash".into(), json!({ "sha256": hex(h) }));
    }
    if let Some(t) = &e.link_target {
        let (t, _) = path_text(t);
        f.insert("target_path".into(), json!(t));
    }
    // ECS file.attributes: the inode flags by name (immutable, append, …), [] for none set;
    // absent when the filesystem has none to record.
    if let Some(flags) = e.flags {
        f.insert("attributes".into(), json!(crate::scan::flags::names(flags)));
    }
    // Extended attribute names have no ECS field: `fim.xattrs` (moved there by `to_json`).
    if !e.xattrs.is_empty() {
        let names: Vec<String> = e.xattrs.iter().map(|(k, _)| path_text(k).0).collect();
        f.insert("xattrs".into(), json!(names));
    }
    if let Some(raw) = raw {
        f.insert("path_bytes_b64".into(), json!(raw));
    }
    f
}

/// The ECS document for one change.
pub fn to_json(c: &Change, origin: &Origin) -> Value {
    let kind = c.kind.as_str();
    let mut file = match (&c.current, &c.previous) {
        (Some(e), _) | (None, Some(e)) => file_fields(e),
        (None, None) => Map::new(),
    };
    let raw_path = file.remove("path_bytes_b64");
    let xattrs = file.remove("xattrs");
    let mut fim = Map::new();
    fim.insert("policy".into(), json!(c.policy.as_str()));
    fim.insert("changes".into(), json!(c.changes));
    fim.insert("scan".into(), json!(origin.scan.as_str()));
    if let Some(raw) = raw_path {
        fim.insert("path_bytes_b64".into(), raw);
    }
    if let Some(x) = xattrs {
        fim.insert("xattrs".into(), x);
    }
    if let (Some(_), Some(prev)) = (&c.current, &c.previous) {
        fim.insert("previous".into(), Value::Object(file_fields(prev)));
    } else if c.current.is_none()
        && let Some(prev) = &c.previous
    {
        fim.insert("previous".into(), Value::Object(file_fields(prev)));
    }
    if let Some(root) = &origin.root {
        fim.insert("root".into(), json!(root));
    }
    if let Some(b) = &origin.baseline {
        fim.insert("baseline".into(), b.to_json());
    }
    for (k, v) in &c.extra {
        fim.insert((*k).into(), v.clone());
    }
    json!({
        "@timestamp": now_rfc3339(),
        "event": {
            "kind": kind,
            "category": ["file"],
            "type": [event_type(c.action)],
            "action": c.action.as_str(),
            "module": "fimd",
        },
        "file": file,
        "fim": fim,
        "host": { "name": origin.host },
        "message": human_line(c),
    })
}

/// `fim.*` of a document that is not a file's change: the scan, the raw path bytes when the
/// path is not UTF-8, and the baseline's generation and seal.
fn origin_fim(raw: Option<String>, origin: &Origin) -> Map<String, Value> {
    let mut fim = Map::new();
    fim.insert("scan".into(), json!(origin.scan.as_str()));
    if let Some(raw) = raw {
        fim.insert("path_bytes_b64".into(), json!(raw));
    }
    if let Some(b) = &origin.baseline {
        fim.insert("baseline".into(), b.to_json());
    }
    fim
}

/// An ECS event for a path the scan could not compare (unreadable, unstable, unreachable).
pub fn problem_json(p: &crate::scan::Problem, origin: &Origin) -> Value {
    let (text, raw) = path_text(&p.path);
    let fim = origin_fim(raw, origin);
    json!({
        "@timestamp": now_rfc3339(),
        "event": {
            "kind": "event",
            "category": ["file"],
            "type": ["error"],
            "action": "not_compared",
            "outcome": "failure",
            "module": "fimd",
        },
        "file": { "path": text },
        "error": { "message": p.message },
        "fim": fim,
        "host": { "name": origin.host },
    })
}

/// An alert about fimd's own ability to watch `path` (e.g. `watch_capacity_exceeded`): not a
/// change of the file, but a loss of sight an operator must know of. `reason` says what and
/// what covers it meanwhile.
pub fn coverage_alert(action: &str, path: &[u8], reason: &str, origin: &Origin) -> Value {
    let (text, raw) = path_text(path);
    let fim = origin_fim(raw, origin);
    json!({
        "@timestamp": now_rfc3339(),
        "event": {
            "kind": "alert",
            "category": ["file"],
            "type": ["info"],
            "action": action,
            "outcome": "failure",
            "module": "fimd",
        },
        "file": { "path": text },
        "error": { "message": reason },
        "fim": fim,
        "host": { "name": origin.host },
        "message": format!("{action} {text}: {reason}"),
    })
}

/// One readable line: action, path, what changed.
pub fn human_line(c: &Change) -> String {
    let (path, _) = path_text(c.path());
    let mut line = format!("{:<19} {}", c.action.as_str(), path);
    if c.kind == crate::compare::Kind::Event {
        line = format!("{:<19} {}", format!("({})", c.action.as_str()), path);
    }
    if c.action == Action::Moved
        && let Some(prev) = &c.previous
    {
        line.push_str(&format!(" (from {})", path_text(&prev.path).0));
    }
    if !c.changes.is_empty() {
        line.push_str(&format!("  [{}]", crate::compare::names(&c.changes, ", ")));
    }
    if c.changes.contains(&crate::compare::Attribute::Flags)
        && let (Some(old), Some(new)) = (&c.previous, &c.current)
    {
        use crate::scan::flags::letters;
        line.push_str(&format!(
            "  flags {} -> {}",
            letters(old.flags),
            letters(new.flags)
        ));
    }
    if c.policy != Policy::Static {
        line.push_str(&format!("  policy={}", c.policy.as_str()));
    }
    line
}

/// The host's name; in a Kubernetes pod, the node's (`NODE_NAME` from the downward API), not
/// the pod's.
pub fn hostname() -> String {
    if let Ok(node) = std::env::var("NODE_NAME")
        && !node.is_empty()
    {
        return node;
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
