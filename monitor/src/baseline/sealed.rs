//! The seal over the whole baseline: one HMAC over the canonical encoding of its metadata,
//! entries and history, written on every change and checked on every load.
use std::collections::HashMap;
use std::path::Path;

use hmac::Mac;
use rusqlite::{Connection, OptionalExtension};

use super::entry::Entry;
use super::error::StoreError;
use super::rows::{HistoryRow, hex, row_to_entry, set_meta, unhex};
use super::seal::{Key, Sealer};

const SEAL_DOMAIN: &[u8] = b"fimd-baseline-seal-v1\0";

/// Seals the baseline as it stands in `conn`, reading every entry back.
pub(super) fn write_seal(conn: &Connection, path: &Path, key: &Key) -> Result<(), StoreError> {
    write_seal_from(conn, path, key, None)
}

/// Seals the baseline: meta and history are read from `conn`; the entries too when
/// `encoded` is `None`, else `encoded` yields each entry's [`encode_entry`] bytes in path
/// order (SQLite's, as `ORDER BY path` returns them), one per path: exactly what reading them
/// back would feed, without the read.
pub(super) fn write_seal_from(
    conn: &Connection,
    path: &Path,
    key: &Key,
    encoded: Option<&mut dyn Iterator<Item = &[u8]>>,
) -> Result<(), StoreError> {
    let sql = sql_error(path);
    conn.execute("DELETE FROM meta WHERE key = 'seal'", [])
        .map_err(&sql)?;
    let mut mac = key.sealer();
    feed(conn, path, &mut mac, encoded, |_| {})?;
    let seal = hex(&mac.finalize().into_bytes());
    set_meta(conn, &[("seal", seal)]).map_err(&sql)
}

/// Appends to `buf` what the seal covers of entry `e`: a tag, then its canonical encoding.
pub(super) fn encode_entry(e: &Entry, buf: &mut Vec<u8>) {
    buf.push(b'E');
    e.encode_into(buf);
}

pub(super) type MetaAndHistory = (HashMap<String, String>, Vec<HistoryRow>);

/// Reads everything the seal covers, hands each entry to `visit`, and checks the seal.
pub(super) fn read_sealed(
    conn: &Connection,
    path: &Path,
    key: &Key,
    key_desc: &str,
    visit: impl FnMut(Entry),
) -> Result<MetaAndHistory, StoreError> {
    let sql = |err| StoreError::Sqlite {
        path: path.to_owned(),
        err,
    };
    let stored: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'seal'", [], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    let mut mac = key.sealer();
    let (meta, history) = feed(conn, path, &mut mac, None, visit)?;
    let ok = stored
        .as_deref()
        .and_then(unhex)
        .is_some_and(|s| mac.verify_slice(&s).is_ok());
    if !ok {
        return Err(StoreError::SealMismatch {
            path: path.to_owned(),
            key: key_desc.to_owned(),
        });
    }
    Ok((meta, history))
}

/// Feeds the canonical encoding of meta (but the seal), entries and history into `mac`: the
/// entries read back and each handed to `visit`, or, given `encoded`, those bytes (see
/// [`write_seal_from`]) and `visit` never called.
fn feed(
    conn: &Connection,
    path: &Path,
    mac: &mut Sealer,
    encoded: Option<&mut dyn Iterator<Item = &[u8]>>,
    visit: impl FnMut(Entry),
) -> Result<MetaAndHistory, StoreError> {
    let mut buf = Vec::with_capacity(512);
    mac.update(SEAL_DOMAIN);
    let meta = feed_meta(conn, path, mac, &mut buf)?;
    match encoded {
        None => feed_entries(conn, path, mac, &mut buf, visit)?,
        Some(entries) => entries.for_each(|e| mac.update(e)),
    }
    let history = feed_history(conn, path, mac, &mut buf)?;
    Ok((meta, history))
}

fn sql_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    |err| StoreError::Sqlite {
        path: path.to_owned(),
        err,
    }
}

fn put(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
    buf.extend_from_slice(b);
}

/// Feeds the metadata but the seal, by key; returns it.
fn feed_meta(
    conn: &Connection,
    path: &Path,
    mac: &mut Sealer,
    buf: &mut Vec<u8>,
) -> Result<HashMap<String, String>, StoreError> {
    let sql = sql_error(path);
    let mut meta = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT key, value FROM meta WHERE key <> 'seal' ORDER BY key")
        .map_err(&sql)?;
    let mut rows = stmt.query([]).map_err(&sql)?;
    while let Some(r) = rows.next().map_err(&sql)? {
        let (k, v): (String, String) = (r.get(0).map_err(&sql)?, r.get(1).map_err(&sql)?);
        buf.clear();
        buf.push(b'M');
        put(buf, k.as_bytes());
        put(buf, v.as_bytes());
        mac.update(buf);
        meta.insert(k, v);
    }
    Ok(meta)
}

/// Feeds the entries read back by path, handing each to `visit`.
fn feed_entries(
    conn: &Connection,
    path: &Path,
    mac: &mut Sealer,
    buf: &mut Vec<u8>,
    mut visit: impl FnMut(Entry),
) -> Result<(), StoreError> {
    let sql = sql_error(path);
    let mut stmt = conn
        .prepare(
            "SELECT path, kind, size, mode, uid, gid, ino, dev, nlink, mtime_ns, ctime_ns, sha256, link_target, xattrs,
                    flags, birth_ns, generation FROM entries ORDER BY path",
        )
        .map_err(&sql)?;
    let mut rows = stmt.query([]).map_err(&sql)?;
    while let Some(r) = rows.next().map_err(&sql)? {
        let e = row_to_entry(r, path, 14)?;
        buf.clear();
        encode_entry(&e, buf);
        mac.update(buf);
        visit(e);
    }
    Ok(())
}

/// Feeds the history by id; returns it.
fn feed_history(
    conn: &Connection,
    path: &Path,
    mac: &mut Sealer,
    buf: &mut Vec<u8>,
) -> Result<Vec<HistoryRow>, StoreError> {
    let sql = sql_error(path);
    let mut history = Vec::new();
    let mut stmt = conn
        .prepare("SELECT id, at, actor, action, path, detail FROM history ORDER BY id")
        .map_err(&sql)?;
    let mut rows = stmt.query([]).map_err(&sql)?;
    while let Some(r) = rows.next().map_err(&sql)? {
        let id: i64 = r.get(0).map_err(&sql)?;
        let h = HistoryRow {
            at: r.get(1).map_err(&sql)?,
            actor: r.get(2).map_err(&sql)?,
            action: r.get(3).map_err(&sql)?,
            path: r.get(4).map_err(&sql)?,
            detail: r.get(5).map_err(&sql)?,
        };
        buf.clear();
        buf.push(b'H');
        buf.extend_from_slice(&id.to_le_bytes());
        for f in [
            h.at.as_bytes(),
            h.actor.as_bytes(),
            h.action.as_bytes(),
            h.detail.as_bytes(),
        ] {
            put(buf, f);
        }
        match &h.path {
            Some(p) => {
                buf.push(1);
                put(buf, p);
            }
            None => buf.push(0),
        }
        mac.update(buf);
        history.push(h);
    }
    Ok(history)
}
