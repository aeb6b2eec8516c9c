//! Rows of the baseline database as Rust values and back: entries, history, metadata, and
//! the hex form of MACs and seals.
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::entry::{Entry, FileKind, decode_xattrs, encode_xattrs};
use super::error::StoreError;

/// The metadata key of the baseline's generation (decimal).
pub(super) const GENERATION: &str = "generation";

/// One line of the baseline's history: inits and accepted changes, with when and by whom.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    #[serde(skip)]
    pub path: Option<Vec<u8>>,
    pub detail: String,
}

pub(super) fn insert_entry(conn: &Connection, e: &Entry) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO entries
         (path, kind, size, mode, uid, gid, ino, dev, nlink, mtime_ns, ctime_ns, sha256, link_target, xattrs, flags,
          birth_ns, generation)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?;
    // SQLite integers are i64: u64 values are stored bit for bit.
    stmt.execute(params![
        e.path,
        e.kind as i64,
        e.size as i64,
        e.mode,
        e.uid,
        e.gid,
        e.ino as i64,
        e.dev as i64,
        e.nlink as i64,
        e.mtime_ns,
        e.ctime_ns,
        e.sha256.as_ref().map(|h| &h[..]),
        e.link_target,
        encode_xattrs(&e.xattrs),
        e.flags,
        e.birth_ns,
        e.generation,
    ])?;
    Ok(())
}

/// The generation in the metadata as stored, unverified; 0 when there is none.
pub(super) fn stored_generation(conn: &Connection) -> rusqlite::Result<u64> {
    let g: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [GENERATION], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(g.and_then(|g| g.parse().ok()).unwrap_or(0))
}

pub(super) fn insert_history(conn: &Connection, rows: &[HistoryRow]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO history (at, actor, action, path, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for h in rows {
        stmt.execute(params![h.at, h.actor, h.action, h.path, h.detail])?;
    }
    Ok(())
}

pub(super) fn set_meta(conn: &Connection, meta: &[(&str, String)]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
    for (k, v) in meta {
        stmt.execute(params![k, v])?;
    }
    Ok(())
}

/// An entry from columns 0..=13 in `entries` order, its flags from column `flags_col`, its
/// birth time and generation from the two columns after it.
pub(super) fn row_to_entry(
    r: &rusqlite::Row<'_>,
    path: &Path,
    flags_col: usize,
) -> Result<Entry, StoreError> {
    let bad = |what: &str| StoreError::Malformed {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    let sql = |err| StoreError::Sqlite {
        path: path.to_owned(),
        err,
    };
    let kind: i64 = r.get(1).map_err(sql)?;
    let sha: Option<Vec<u8>> = r.get(11).map_err(sql)?;
    let xattrs: Vec<u8> = r.get(13).map_err(sql)?;
    Ok(Entry {
        path: r.get(0).map_err(sql)?,
        kind: FileKind::try_from(kind).map_err(|k| bad(&format!("file kind {k}")))?,
        size: r.get::<_, i64>(2).map_err(sql)? as u64,
        mode: r.get(3).map_err(sql)?,
        uid: r.get(4).map_err(sql)?,
        gid: r.get(5).map_err(sql)?,
        ino: r.get::<_, i64>(6).map_err(sql)? as u64,
        dev: r.get::<_, i64>(7).map_err(sql)? as u64,
        nlink: r.get::<_, i64>(8).map_err(sql)? as u64,
        mtime_ns: r.get(9).map_err(sql)?,
        ctime_ns: r.get(10).map_err(sql)?,
        sha256: match sha {
            None => None,
            Some(v) => Some(v.try_into().map_err(|_| bad("sha256 length"))?),
        },
        link_target: r.get(12).map_err(sql)?,
        xattrs: decode_xattrs(&xattrs).ok_or_else(|| bad("xattrs"))?,
        flags: r.get(flags_col).map_err(sql)?,
        birth_ns: r.get(flags_col + 1).map_err(sql)?,
        generation: r.get(flags_col + 2).map_err(sql)?,
    })
}

pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

pub(super) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
