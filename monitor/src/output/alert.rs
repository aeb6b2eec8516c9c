//! Where an alert was found (its origin), the time stamps of ECS documents, and an alert's
//! one-line human form. The documents themselves are built from typed parts in
//! [`super::typed::Alert`].
use serde_json::{Map, Value};

use crate::baseline::entry::Entry;
use crate::compare::{Action, Change};
use crate::config::Policy;
use crate::paths::path_text;

pub use super::ecs::rfc3339_ns;

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

pub fn now_rfc3339() -> String {
    rfc3339_ns(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
    )
}

/// The ECS `file.*` fields of an entry, whole (xattr names and raw path bytes included), as
/// JSON: a baseline listing's object for one entry.
pub fn file_fields(e: &Entry) -> Map<String, Value> {
    let fields = super::ecs::FileFields::of(e);
    match serde_json::to_value(fields.object(true)) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
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
