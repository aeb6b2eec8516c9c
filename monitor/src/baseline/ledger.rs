//! The ledger: what a policy advanced after the seal (an append verified, a rotation judged),
//! one row per path, each with its own MAC, so a change costs one small write and not a reseal
//! of the whole baseline. It holds the hash state of each append-only file's verified content.
use std::path::Path;

use hmac::Mac;
use rusqlite::{Connection, params};

use super::entry::{Entry, encode_xattrs};
use super::error::{StoreError, sqlite};
use super::rows::row_to_entry;
use super::seal::Key;

const LEDGER_DOMAIN: &[u8] = b"fimd-ledger-v1\0";

/// What is known of an append-only file's verified content: what `crate::append::state`
/// verifies appends from, and what the ledger keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendState {
    /// Bytes verified, and their SHA-256.
    pub len: u64,
    pub sha256: [u8; 32],
    /// The serialised hash state after the first `at` bytes (`at` a multiple of
    /// `crate::append::state::CHECKPOINT_ALIGN`, at most `len`).
    pub at: u64,
    pub state: Vec<u8>,
}

/// What a policy advanced after the seal, for one path: its new state (`None`: deleted, as
/// rotation retires old logs) and, for an append-only file, the hash state of its content.
#[derive(Debug, Clone)]
pub struct LedgerRow {
    pub path: Vec<u8>,
    pub entry: Option<Entry>,
    pub append: Option<AppendState>,
}

/// Writes `rows` in one transaction, each with its own MAC (the caller chooses how soon it is
/// synced).
pub(super) fn put(conn: &Connection, path: &Path, key: &Key, rows: &[LedgerRow]) -> Result<(), StoreError> {
    let sql = sqlite(path);
    let tx = conn.unchecked_transaction().map_err(&sql)?;
    for row in rows {
        let mac = ledger_mac(key, row);
        let e = row.entry.as_ref();
        tx.prepare_cached(
            "INSERT OR REPLACE INTO ledger
             (path, kind, size, mode, uid, gid, ino, dev, nlink, mtime_ns, ctime_ns, sha256, link_target,
              xattrs, deleted, append_at, append_state, mac, flags, birth_ns, generation)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                     ?20, ?21)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                row.path,
                e.map(|e| e.kind as i64),
                e.map(|e| e.size as i64),
                e.map(|e| e.mode),
                e.map(|e| e.uid),
                e.map(|e| e.gid),
                e.map(|e| e.ino as i64),
                e.map(|e| e.dev as i64),
                e.map(|e| e.nlink as i64),
                e.map(|e| e.mtime_ns),
                e.map(|e| e.ctime_ns),
                e.and_then(|e| e.sha256.as_ref().map(|h| h.to_vec())),
                e.and_then(|e| e.link_target.clone()),
                e.map(|e| encode_xattrs(&e.xattrs)),
                i64::from(e.is_none()),
                row.append.as_ref().map(|a| a.at as i64),
                row.append.as_ref().map(|a| a.state.clone()),
                mac,
                e.and_then(|e| e.flags),
                e.and_then(|e| e.birth_ns),
                e.and_then(|e| e.generation),
            ])
        })
        .map_err(&sql)?;
    }
    tx.commit().map_err(&sql)
}

/// Every ledger row, by path, each MAC checked: the first that fails is `LedgerMismatch`.
pub(super) fn read(conn: &Connection, path: &Path, key: &Key) -> Result<Vec<LedgerRow>, StoreError> {
    let sql = sqlite(path);
    let mut stmt = conn
        .prepare(
            "SELECT path, kind, size, mode, uid, gid, ino, dev, nlink, mtime_ns, ctime_ns, sha256,
                    link_target, xattrs, deleted, append_at, append_state, mac, flags, birth_ns, generation
             FROM ledger ORDER BY path",
        )
        .map_err(&sql)?;
    let mut rows = stmt.query([]).map_err(&sql)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(&sql)? {
        let row_path: Vec<u8> = r.get(0).map_err(&sql)?;
        let deleted: i64 = r.get(14).map_err(&sql)?;
        let entry = if deleted != 0 {
            None
        } else {
            Some(row_to_entry(r, path, 18)?)
        };
        let at: Option<i64> = r.get(15).map_err(&sql)?;
        let state: Option<Vec<u8>> = r.get(16).map_err(&sql)?;
        let append = match (at, state, &entry) {
            (Some(at), Some(state), Some(e)) => e.sha256.map(|sha256| AppendState {
                len: e.size,
                sha256,
                at: at as u64,
                state,
            }),
            _ => None,
        };
        let mac: Vec<u8> = r.get(17).map_err(&sql)?;
        let row = LedgerRow {
            path: row_path,
            entry,
            append,
        };
        if ledger_mac(key, &row) != mac {
            return Err(StoreError::LedgerMismatch {
                path: path.to_owned(),
                row: crate::paths::path_text(&row.path).0,
            });
        }
        out.push(row);
    }
    Ok(out)
}

fn ledger_mac(key: &Key, row: &LedgerRow) -> Vec<u8> {
    let mut mac = key.sealer();
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(LEDGER_DOMAIN);
    buf.extend_from_slice(&(row.path.len() as u64).to_le_bytes());
    buf.extend_from_slice(&row.path);
    match &row.entry {
        Some(e) => {
            buf.push(1);
            e.encode_into(&mut buf);
        }
        None => buf.push(0),
    }
    if let Some(a) = &row.append {
        buf.extend_from_slice(&a.at.to_le_bytes());
        buf.extend_from_slice(&(a.state.len() as u64).to_le_bytes());
        buf.extend_from_slice(&a.state);
    }
    mac.update(&buf);
    mac.finalize().into_bytes().to_vec()
}
