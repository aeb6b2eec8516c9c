//! Comparing a scan with the baseline: what was created, deleted, moved or changed, and how.
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::baseline::entry::{Entry, FileKind};
use crate::config::{Policy, Settings};
use crate::scan::{Problem, Scan, ScanItem};

mod attribute;
pub use attribute::{Attribute, names};

/// Which attributes count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The same filesystem as the baseline: identity (inode, ctime, link count) counts too.
    Full,
    /// A copy, an image or a snapshot of it: only what survives copying counts.
    Portable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Updated,
    Deleted,
    Moved,
    AttributesModified,
    /// Append-only: the file grew and its verified bytes are intact.
    Appended,
    /// Append-only: shorter than its verified length.
    Truncated,
    /// Append-only: a log rotated within the configured names, its content verified.
    Rotated,
}

/// Whether a change breaks the policy (`alert`) or is allowed and only recorded (`event`),
/// as ECS `event.kind` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Alert,
    Event,
}

impl Kind {
    /// Every kind, in the order metric label sets list them.
    pub const ALL: [Kind; 2] = [Kind::Alert, Kind::Event];

    /// The ECS `event.kind` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Alert => "alert",
            Kind::Event => "event",
        }
    }
}

impl Action {
    /// Every action, in the order metric label sets list them.
    pub const ALL: [Action; 8] = [
        Action::Created,
        Action::Updated,
        Action::Deleted,
        Action::Moved,
        Action::AttributesModified,
        Action::Appended,
        Action::Truncated,
        Action::Rotated,
    ];

    /// The ECS `event.action` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
            Action::Moved => "moved",
            Action::AttributesModified => "attributes_modified",
            Action::Appended => "appended",
            Action::Truncated => "truncated",
            Action::Rotated => "rotated",
        }
    }
}

/// One difference between the baseline and what is there now.
#[derive(Debug, Clone)]
pub struct Change {
    pub action: Action,
    pub kind: Kind,
    pub policy: Policy,
    /// Current state; `None` when deleted.
    pub current: Option<Entry>,
    /// Baseline state; `None` when created. For a move, holds the old path.
    pub previous: Option<Entry>,
    /// The attributes that differ.
    pub changes: Vec<Attribute>,
    /// Details under `fim.*` (what an append or rotation verified).
    pub extra: Vec<(&'static str, serde_json::Value)>,
}

impl Change {
    /// An alert for a path the baseline does not have.
    pub fn created(current: Entry, policy: Policy) -> Change {
        Change::alert(Action::Created, policy, None, Some(current), Vec::new())
    }

    /// An alert for a path of the baseline that is gone.
    pub fn deleted(previous: Entry, policy: Policy) -> Change {
        Change::alert(Action::Deleted, policy, Some(previous), None, Vec::new())
    }

    /// An alert for `previous` found as `current` at the same path, with the attributes that
    /// differ (`diff`): `updated` when content, type, size or link target differ,
    /// `attributes_modified` otherwise.
    pub fn differs(previous: Entry, current: Entry, changes: Vec<Attribute>, policy: Policy) -> Change {
        Change::alert(
            action_for(&changes),
            policy,
            Some(previous),
            Some(current),
            changes,
        )
    }

    /// An alert with every part given.
    pub fn alert(
        action: Action,
        policy: Policy,
        previous: Option<Entry>,
        current: Option<Entry>,
        changes: Vec<Attribute>,
    ) -> Change {
        Change {
            action,
            kind: Kind::Alert,
            policy,
            current,
            previous,
            changes,
            extra: Vec::new(),
        }
    }

    /// The same change as an allowed `event` of `action`, with `extra` details under `fim.*`.
    pub fn into_event(mut self, action: Action, extra: Vec<(&'static str, serde_json::Value)>) -> Change {
        self.action = action;
        self.kind = Kind::Event;
        self.extra.extend(extra);
        self
    }

    pub fn path(&self) -> &[u8] {
        self.current
            .as_ref()
            .or(self.previous.as_ref())
            .map(|e| &e.path[..])
            .unwrap_or_default()
    }
}

/// The outcome of one full comparison.
#[derive(Default)]
pub struct Comparison {
    pub changes: Vec<Change>,
    pub problems: Vec<Problem>,
    /// Entries seen in this scan.
    pub scanned: u64,
    /// Paths of files larger than `scan.max_file_size`, compared by metadata only.
    pub metadata_only: Vec<Vec<u8>>,
}

/// The attributes of `new` that differ from `old`, in the order of [`Attribute::ALL`].
pub fn diff(old: &Entry, new: &Entry, mode: Mode) -> Vec<Attribute> {
    let mut out = Vec::new();
    if old.kind != new.kind {
        out.push(Attribute::Type);
    }
    let is_dir = new.kind == FileKind::Directory;
    let is_link = new.kind == FileKind::Symlink;
    // A file whose content the baseline could not hash is unverified until it is accepted;
    // one unreadable now is reported as a problem by the scan.
    if new.sha256.is_some() && old.sha256 != new.sha256 && old.kind == new.kind {
        out.push(Attribute::Content);
    }
    // A directory's size and times follow its entries, which are compared one by one.
    if !is_dir && !is_link && old.size != new.size {
        out.push(Attribute::Size);
    }
    if old.link_target != new.link_target {
        out.push(Attribute::LinkTarget);
    }
    if !is_link && old.mode != new.mode {
        out.push(Attribute::Mode);
    }
    if old.uid != new.uid {
        out.push(Attribute::Uid);
    }
    if old.gid != new.gid {
        out.push(Attribute::Gid);
    }
    if old.xattrs != new.xattrs {
        out.push(Attribute::Xattr);
    }
    // Like content: flags that could not be read now (the scan reports why) are not a change;
    // flags the baseline could not record are, until accepted.
    if new.flags.is_some() && old.flags != new.flags {
        out.push(Attribute::Flags);
    }
    if !is_dir && old.mtime_ns != new.mtime_ns {
        out.push(Attribute::Mtime);
    }
    if mode == Mode::Full {
        // The same number handed to a new inode (birth time or generation differ) is another
        // inode too.
        if old.ino != new.ino || crate::moves::reborn(old, new) {
            out.push(Attribute::Inode);
        }
        if !is_dir && old.nlink != new.nlink {
            out.push(Attribute::Nlink);
        }
        if !is_dir && old.ctime_ns != new.ctime_ns {
            out.push(Attribute::Ctime);
        }
    }
    out
}

fn action_for(changes: &[Attribute]) -> Action {
    if changes.iter().any(|c| c.is_content()) {
        Action::Updated
    } else {
        Action::AttributesModified
    }
}

/// What a comparison runs against: the baseline, and whoever wants every scanned entry.
pub trait Against {
    /// The baseline, sorted by path, one entry per path.
    fn baseline(&self) -> &[Entry];
    /// Sees every scanned entry, before it is compared (the daemon learns and arms it). It may
    /// change what holds the baseline, not the baseline itself.
    fn found(&mut self, e: &Entry);
}

/// A baseline slice and a callback: what `check` and `accept` compare against.
struct Plain<'a, F> {
    baseline: &'a [Entry],
    on_entry: F,
}

impl<F: FnMut(&Entry)> Against for Plain<'_, F> {
    fn baseline(&self) -> &[Entry] {
        self.baseline
    }

    fn found(&mut self, e: &Entry) {
        (self.on_entry)(e)
    }
}

/// Runs `scan` to completion against `baseline` (sorted by path, one entry per path, borrowed:
/// never copied whole); `on_entry` sees every scanned entry.
pub fn compare(
    settings: &Settings,
    baseline: &[Entry],
    scan: &mut Scan,
    mode: Mode,
    on_entry: impl FnMut(&Entry),
) -> Comparison {
    compare_against(settings, &mut Plain { baseline, on_entry }, scan, mode)
}

/// [`compare`] against what `against` holds: the baseline is borrowed anew for each entry,
/// so `against.found` may change what holds it (the daemon's seen paths hold the baseline).
pub fn compare_against(
    settings: &Settings,
    against: &mut impl Against,
    scan: &mut Scan,
    mode: Mode,
) -> Comparison {
    let mut out = Comparison::default();
    let mut created = Vec::new();
    // A sorted vector and a seen-bit per entry: no second copy of every path in a hash map.
    let mut seen = vec![false; against.baseline().len()];
    let policy_of = |path: &[u8]| settings.policy_of(path);
    while let Some(item) = scan.next_item() {
        let entry = match item {
            ScanItem::Entry(e) => e,
            ScanItem::MetadataOnly(e) => {
                out.metadata_only.push(e.path.clone());
                e
            }
            ScanItem::Unstable(e) => {
                out.problems.push(Problem {
                    path: e.path.clone(),
                    message:
                        "changed while being hashed (every attempt); its hash may be of no state it ever had"
                            .into(),
                    subtree: false,
                });
                e
            }
            ScanItem::Problem(p) => {
                out.problems.push(p);
                continue;
            }
        };
        out.scanned += 1;
        against.found(&entry);
        let baseline = against.baseline();
        match baseline.binary_search_by(|e| e.path.as_slice().cmp(&entry.path)) {
            Ok(i) if !seen[i] => {
                seen[i] = true;
                let changes = diff(&baseline[i], &entry, mode);
                if !changes.is_empty() {
                    let policy = policy_of(&entry.path);
                    out.changes
                        .push(Change::differs(baseline[i].clone(), entry, changes, policy));
                }
            }
            // Seen twice (a nested watch overlapping): the first report stands.
            Ok(_) => {}
            Err(_) => created.push(entry),
        }
    }
    // What the baseline has under the current watches but the scan did not find is gone,
    // unless it lies where the scan could not look.
    let unread: Vec<&[u8]> = out
        .problems
        .iter()
        .filter(|p| p.subtree)
        .map(|p| &p.path[..])
        .collect();
    let in_unread = |path: &[u8]| unread.iter().any(|u| is_under(path, u));
    let mut deleted: Vec<Entry> = against
        .baseline()
        .iter()
        .zip(seen)
        .filter(|(e, seen)| {
            !seen && !in_unread(&e.path) && settings.covers(Path::new(std::ffi::OsStr::from_bytes(&e.path)))
        })
        .map(|(e, _)| e.clone())
        .collect();

    if mode == Mode::Full {
        // The same file at a new path is a move (`crate::moves` says when it is the same file).
        let pairing = crate::moves::pair(deleted, created);
        for (old, new) in pairing.moved {
            let policy = policy_of(&new.path);
            out.changes.push(moved(old, new, mode, policy));
        }
        deleted = pairing.deleted;
        created = pairing.created;
    }
    for c in created {
        let policy = policy_of(&c.path);
        out.changes.push(Change::created(c, policy));
    }
    for d in deleted {
        let policy = policy_of(&d.path);
        out.changes.push(Change::deleted(d, policy));
    }
    out.changes.sort_by(|a, b| a.path().cmp(b.path()));
    out.problems.sort_by(|a, b| a.path.cmp(&b.path));
    out.metadata_only.sort();
    out
}

/// The change for a file that moved from `old` to `new` (see `crate::moves`): `path` and
/// whatever else differs.
pub fn moved(old: Entry, new: Entry, mode: Mode, policy: Policy) -> Change {
    let mut changes = diff(&old, &new, mode);
    changes.insert(0, Attribute::Path);
    Change::alert(Action::Moved, policy, Some(old), Some(new), changes)
}

/// Kept for callers that name it `compare::is_under`; the one home is [`crate::paths`].
pub use crate::paths::is_under;

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Entry {
        Entry {
            size: 3,
            ino: 7,
            mtime_ns: 1,
            ctime_ns: 1,
            sha256: Some([1; 32]),
            flags: Some(0),
            birth_ns: Some(5),
            generation: Some(9),
            ..Entry::test_file(b"/etc/x")
        }
    }

    #[test]
    fn portable_mode_ignores_identity() {
        let a = file();
        let mut b = file();
        b.ino = 99;
        b.ctime_ns = 5;
        b.nlink = 2;
        assert!(diff(&a, &b, Mode::Portable).is_empty());
        assert_eq!(
            diff(&a, &b, Mode::Full),
            vec![Attribute::Inode, Attribute::Nlink, Attribute::Ctime]
        );
        b.sha256 = Some([2; 32]);
        assert_eq!(action_for(&diff(&a, &b, Mode::Portable)), Action::Updated);
        let mut c = file();
        c.mode = 0o4755;
        assert_eq!(diff(&a, &c, Mode::Full), vec![Attribute::Mode]);
        assert_eq!(action_for(&diff(&a, &c, Mode::Full)), Action::AttributesModified);
        let mut unhashed = file();
        unhashed.sha256 = None;
        assert_eq!(diff(&unhashed, &a, Mode::Portable), vec![Attribute::Content]);
        assert!(diff(&a, &unhashed, Mode::Portable).is_empty());
        let mut immutable = file();
        immutable.flags = Some(crate::scan::flags::IMMUTABLE);
        for mode in [Mode::Full, Mode::Portable] {
            assert_eq!(diff(&a, &immutable, mode), vec![Attribute::Flags]);
            assert_eq!(diff(&immutable, &a, mode), vec![Attribute::Flags]);
        }
        assert_eq!(
            action_for(&diff(&a, &immutable, Mode::Full)),
            Action::AttributesModified
        );
        // Flags that cannot be read now are not a change (the scan says why); ones the baseline
        // could not record are, until accepted.
        let mut unread = file();
        unread.flags = None;
        assert!(diff(&a, &unread, Mode::Full).is_empty());
        assert_eq!(diff(&unread, &a, Mode::Full), vec![Attribute::Flags]);
        assert!(is_under(b"/etc/x", b"/etc") && is_under(b"/etc", b"/etc/") && is_under(b"/a", b"/"));
        assert!(!is_under(b"/etcx", b"/etc"));
    }

    #[test]
    fn constructors_build_what_the_literals_did() {
        let a = file();
        let mut b = file();
        b.sha256 = Some([2; 32]);
        let c = Change::created(a.clone(), Policy::Static);
        assert_eq!(
            (c.action, c.kind, c.path()),
            (Action::Created, Kind::Alert, &b"/etc/x"[..])
        );
        assert!(c.previous.is_none() && c.changes.is_empty());
        let d = Change::deleted(a.clone(), Policy::AppendOnly);
        assert_eq!((d.action, d.policy), (Action::Deleted, Policy::AppendOnly));
        assert!(d.current.is_none() && d.previous.is_some());
        let u = Change::differs(a.clone(), b.clone(), diff(&a, &b, Mode::Full), Policy::Static);
        assert_eq!(
            (u.action, u.changes.clone()),
            (Action::Updated, vec![Attribute::Content])
        );
        let mut m = file();
        m.mode = 0o600;
        let am = Change::differs(a.clone(), m.clone(), diff(&a, &m, Mode::Full), Policy::Static);
        assert_eq!(am.action, Action::AttributesModified);
        let e = u.into_event(
            Action::Appended,
            vec![("append", serde_json::json!({ "appended_bytes": 1 }))],
        );
        assert_eq!(
            (e.action, e.kind, e.extra.len()),
            (Action::Appended, Kind::Event, 1)
        );
        let mut moved_to = file();
        moved_to.path = b"/etc/y".to_vec();
        let mv = moved(a, moved_to, Mode::Full, Policy::Static);
        assert_eq!(
            (mv.action, mv.changes[0], mv.path()),
            (Action::Moved, Attribute::Path, &b"/etc/y"[..])
        );
    }

    #[test]
    fn every_attribute_has_its_wire_name_once() {
        let names: Vec<&str> = Attribute::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(
            names,
            [
                "path",
                "type",
                "content",
                "size",
                "link_target",
                "mode",
                "uid",
                "gid",
                "xattr",
                "flags",
                "mtime",
                "inode",
                "nlink",
                "ctime"
            ]
        );
        let mut distinct = Attribute::ALL.to_vec();
        distinct.sort_by_key(|a| a.as_str());
        distinct.dedup();
        assert_eq!(distinct.len(), Attribute::ALL.len(), "a variant listed twice");
        let mut wire: Vec<&str> = names.clone();
        wire.sort_unstable();
        wire.dedup();
        assert_eq!(wire.len(), names.len(), "two variants with one name");
        for a in Attribute::ALL {
            // Serialised as its name, in JSON and in text.
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
            assert_eq!(a.to_string(), a.as_str());
            // Back from its name to itself: no other variant answers to it.
            let back: Vec<Attribute> = Attribute::ALL
                .into_iter()
                .filter(|b| b.as_str() == a.as_str())
                .collect();
            assert_eq!(back, [a]);
        }
        let content: Vec<&str> = Attribute::ALL
            .iter()
            .filter(|a| a.is_content())
            .map(|a| a.as_str())
            .collect();
        assert_eq!(content, ["type", "content", "size", "link_target"]);
    }
}
