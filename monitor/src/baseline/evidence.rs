//! The evidence log: one record per comparison (when, what, outcome) in a MAC chain, each MAC
//! covering the previous one, so a record cannot be dropped or edited unseen.
use std::path::Path;

use hmac::Mac;
use rusqlite::{Connection, OptionalExtension, params};

use super::error::{StoreError, sqlite};
use super::seal::Key;

const EVIDENCE_DOMAIN: &[u8] = b"fimd-evidence-v1\0";

/// Appends an evidence record (a comparison: when, what, outcome) to a MAC chain: each
/// record's MAC covers the previous one, so a record cannot be dropped or edited unseen.
pub(super) fn append(
    conn: &Connection,
    path: &Path,
    key: &Key,
    record: &serde_json::Value,
) -> Result<(), StoreError> {
    let sql = sqlite(path);
    let tx = conn.unchecked_transaction().map_err(&sql)?;
    let last: Option<(i64, Vec<u8>)> = tx
        .query_row("SELECT id, mac FROM evidence ORDER BY id DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(&sql)?;
    let (id, prev) = last.map_or((1, Vec::new()), |(id, mac)| (id + 1, mac));
    let text = record.to_string();
    let mac = evidence_mac(key, &prev, id, &text);
    tx.execute(
        "INSERT INTO evidence (id, record, mac) VALUES (?1, ?2, ?3)",
        params![id, text, mac],
    )
    .map_err(&sql)?;
    tx.commit().map_err(&sql)
}

/// Every evidence record, oldest first, each with whether the chain verifies up to it.
pub(super) fn read(
    conn: &Connection,
    path: &Path,
    key: &Key,
) -> Result<Vec<(i64, serde_json::Value, bool)>, StoreError> {
    let sql = sqlite(path);
    let mut stmt = conn
        .prepare("SELECT id, record, mac FROM evidence ORDER BY id")
        .map_err(&sql)?;
    let mut rows = stmt.query([]).map_err(&sql)?;
    let mut out = Vec::new();
    let mut prev = Vec::new();
    let mut intact = true;
    while let Some(r) = rows.next().map_err(&sql)? {
        let (id, text, mac): (i64, String, Vec<u8>) = (
            r.get(0).map_err(&sql)?,
            r.get(1).map_err(&sql)?,
            r.get(2).map_err(&sql)?,
        );
        intact &= evidence_mac(key, &prev, id, &text) == mac;
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        out.push((id, value, intact));
        prev = mac;
    }
    Ok(out)
}

fn evidence_mac(key: &Key, prev: &[u8], id: i64, text: &str) -> Vec<u8> {
    let mut mac = key.sealer();
    mac.update(EVIDENCE_DOMAIN);
    mac.update(&(prev.len() as u64).to_le_bytes());
    mac.update(prev);
    mac.update(&id.to_le_bytes());
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().to_vec()
}
