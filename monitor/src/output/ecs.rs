//! The typed parts of an ECS document and how they are written. Every object is written with
//! its keys in byte order, the order serde_json gives a `Value` object (a `BTreeMap` without
//! the `preserve_order` feature): documents built from typed parts are byte for byte those
//! that were built as `Value`s (`tests/sinks.rs` pins them whole).
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use crate::baseline::entry::{Entry, FileKind};
use crate::baseline::store::hex;
use crate::compare::Attribute;
use crate::paths::path_text;

/// `ns` since the epoch as RFC 3339 UTC with milliseconds (`2024-05-01T10:00:00.123Z`), the
/// form of `@timestamp` and of `file.mtime`/`file.ctime`; the epoch for a time out of range.
pub fn rfc3339_ns(ns: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

/// One value of an object being written: a typed part borrowed from the document.
pub(crate) enum Part<'a> {
    Str(&'a str),
    Text(String),
    U64(u64),
    /// A list of text (`["file"]`, xattr names, flag names).
    Strs(&'a [&'a str]),
    Texts(&'a [String]),
    Attrs(&'a [Attribute]),
    /// A part that is JSON already (the writer's fields, the details of an append or rotation).
    Json(&'a Value),
    Obj(Object<'a>),
}

/// An object: its entries in any order; written sorted by key, the last of equal keys winning
/// (as inserting into a map would).
pub(crate) struct Object<'a>(pub Vec<(&'a str, Part<'a>)>);

impl<'a> Object<'a> {
    pub fn new() -> Object<'a> {
        Object(Vec::new())
    }

    pub fn put(&mut self, key: &'a str, part: Part<'a>) {
        self.0.push((key, part));
    }

    pub fn put_opt(&mut self, key: &'a str, part: Option<Part<'a>>) {
        if let Some(p) = part {
            self.0.push((key, p));
        }
    }
}

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut order: Vec<usize> = (0..self.0.len()).collect();
        // Stable: of equal keys the one put last stays last, and is the one kept.
        order.sort_by(|&a, &b| self.0[a].0.cmp(self.0[b].0));
        order.dedup_by(|later, earlier| {
            let same = self.0[*later].0 == self.0[*earlier].0;
            if same {
                *earlier = *later;
            }
            same
        });
        let mut m = s.serialize_map(Some(order.len()))?;
        for i in order {
            let (k, v) = &self.0[i];
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for Part<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Part::Str(t) => s.serialize_str(t),
            Part::Text(t) => s.serialize_str(t),
            Part::U64(n) => s.serialize_u64(*n),
            Part::Strs(l) => seq(s, l.iter()),
            Part::Texts(l) => seq(s, l.iter()),
            Part::Attrs(l) => seq(s, l.iter()),
            Part::Json(v) => v.serialize(s),
            Part::Obj(o) => o.serialize(s),
        }
    }
}

fn seq<S: Serializer, T: Serialize>(
    s: S,
    items: impl ExactSizeIterator<Item = T>,
) -> Result<S::Ok, S::Error> {
    let mut q = s.serialize_seq(Some(items.len()))?;
    for i in items {
        q.serialize_element(&i)?;
    }
    q.end()
}

/// ECS `file.*` of one entry, as text where ECS wants text (inode, mode, ids) and with the
/// times as RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFields {
    /// `file.path`: UTF-8, other bytes as `\xNN`.
    pub path: String,
    pub name: Option<String>,
    pub kind: FileKind,
    pub inode: u64,
    /// Permission bits, written as 4 octal digits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes; none for a directory.
    pub size: Option<u64>,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// `file.hash.sha256`, hex.
    pub sha256: Option<String>,
    pub target_path: Option<String>,
    /// `file.attributes`: the inode flags by name, `[]` for none set; none when the filesystem
    /// records none.
    pub attributes: Option<Vec<String>>,
    /// Extended attribute names (no ECS field: `fim.xattrs`).
    pub xattrs: Vec<String>,
    /// The path's bytes, base64, when they are not UTF-8 (`fim.path_bytes_b64`).
    pub path_bytes_b64: Option<String>,
}

impl FileFields {
    pub fn of(e: &Entry) -> FileFields {
        let (path, raw) = path_text(&e.path);
        FileFields {
            path,
            name: e.path.rsplit(|&b| b == b'/').next().map(|n| path_text(n).0),
            kind: e.kind,
            inode: e.ino,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            size: (e.kind != FileKind::Directory).then_some(e.size),
            mtime_ns: e.mtime_ns,
            ctime_ns: e.ctime_ns,
            sha256: e.sha256.as_ref().map(|h| hex(h)),
            target_path: e.link_target.as_ref().map(|t| path_text(t).0),
            attributes: e.flags.map(crate::scan::flags::names),
            xattrs: e.xattrs.iter().map(|(k, _)| path_text(k).0).collect(),
            path_bytes_b64: raw,
        }
    }

    /// The object: with `whole`, the xattr names and raw path bytes too (`fim.previous`, a
    /// baseline listing); without, those are left for `fim.*` (`file`).
    pub(crate) fn object(&self, whole: bool) -> Object<'_> {
        let mut o = Object::new();
        o.put("path", Part::Str(&self.path));
        o.put_opt("name", self.name.as_deref().map(Part::Str));
        o.put("type", Part::Str(self.kind.as_str()));
        o.put("inode", Part::Text(self.inode.to_string()));
        o.put("mode", Part::Text(format!("{:04o}", self.mode)));
        o.put("uid", Part::Text(self.uid.to_string()));
        o.put("gid", Part::Text(self.gid.to_string()));
        o.put_opt("size", self.size.map(Part::U64));
        o.put("mtime", Part::Text(rfc3339_ns(self.mtime_ns)));
        o.put("ctime", Part::Text(rfc3339_ns(self.ctime_ns)));
        if let Some(h) = &self.sha256 {
            o.put("hash", Part::Obj(Object(vec![("sha256", Part::Str(h))])));
        }
        o.put_opt("target_path", self.target_path.as_deref().map(Part::Str));
        o.put_opt("attributes", self.attributes.as_deref().map(Part::Texts));
        if whole {
            if !self.xattrs.is_empty() {
                o.put("xattrs", Part::Texts(&self.xattrs));
            }
            o.put_opt("path_bytes_b64", self.path_bytes_b64.as_deref().map(Part::Str));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_are_written_in_key_order_and_the_last_of_a_key_wins() {
        let v = json!({ "b": 1 });
        let mut o = Object::new();
        o.put("zeta", Part::U64(1));
        o.put("@timestamp", Part::Str("t"));
        o.put("path_bytes_b64", Part::Str("x"));
        o.put("path", Part::Strs(&["a", "b"]));
        o.put("mid", Part::Json(&v));
        o.put("zeta", Part::U64(2));
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"@timestamp":"t","mid":{"b":1},"path":["a","b"],"path_bytes_b64":"x","zeta":2}"#
        );
        assert_eq!(serde_json::to_string(&Object::new()).unwrap(), "{}");
    }
}
