//! A whole-baseline replacement (`init`): one transaction, and the seal computed from the
//! entries as they were inserted, not read back.
use std::path::PathBuf;

use rusqlite::Transaction;

use super::entry::Entry;
use super::error::StoreError;
use super::rows::{GENERATION, HistoryRow, insert_entry, insert_history, set_meta};
use super::seal::Key;
use super::sealed::{encode_entry, write_seal, write_seal_from};

/// The most memory, in bytes, a replacement keeps of its entries' seal encodings (the arena
/// and its index, as allocated) so that the commit need not read every entry back to seal it.
/// An entry costs [`SLOT_BYTES`] (16) of index plus its encoding: 83 to 131 bytes, then its
/// path, link target and extended attributes; /usr's 138k entries took 196 bytes each (27 MB).
/// Past the cap the arena is dropped and the commit reads the entries back, as `accept` does.
/// 64 MiB keeps /usr twice over; a baseline of a million entries reads back instead, so that
/// `init` of a large tree stays small (it peaks at the cap, then frees it).
pub(super) const SEAL_ARENA_CAP: usize = 64 << 20;

/// Bytes of index per entry kept in the arena.
const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// Where an entry's encoding lies in the arena. Its path follows the tag and the path's
/// 8-byte length (`sealed::encode_entry`, `Entry::encode_into`).
#[derive(Clone, Copy)]
struct Slot {
    start: usize,
    len: u32,
    path_len: u32,
}

/// Offset of the path in an entry's encoding: the tag byte, the 8-byte length.
const PATH_AT: usize = 1 + 8;

/// The seal encodings of the entries inserted so far, in insertion order, in one buffer.
struct SealArena {
    bytes: Vec<u8>,
    slots: Vec<Slot>,
    /// [`SEAL_ARENA_CAP`], or smaller in tests.
    cap: usize,
}

impl SealArena {
    fn new(cap: usize) -> SealArena {
        SealArena {
            bytes: Vec::new(),
            slots: Vec::new(),
            cap,
        }
    }

    /// Keeps `encoded` (one [`encode_entry`] of an entry at `path_len` bytes of path);
    /// false when the arena and its index would outgrow the cap.
    fn push(&mut self, encoded: &[u8], path_len: usize) -> bool {
        let (Ok(len), Ok(path_len)) = (u32::try_from(encoded.len()), u32::try_from(path_len)) else {
            return false;
        };
        if !self.make_room(encoded.len()) {
            return false;
        }
        self.slots.push(Slot {
            start: self.bytes.len(),
            len,
            path_len,
        });
        self.bytes.extend_from_slice(encoded);
        true
    }

    /// Grows the buffers (doubling, never past the cap counting both as allocated) so that
    /// `more` bytes and one slot fit without another allocation; false when they cannot.
    fn make_room(&mut self, more: usize) -> bool {
        fn grow<T>(v: &mut Vec<T>, more: usize, budget: usize) -> bool {
            let need = v.len() + more;
            if need <= v.capacity() {
                return true;
            }
            if need > budget {
                return false;
            }
            let target = (v.capacity() * 2)
                .max(need)
                .max(4096 / std::mem::size_of::<T>())
                .min(budget);
            v.reserve_exact(target - v.len());
            true
        }
        let slots_budget = self.cap.saturating_sub(self.bytes.capacity()) / SLOT_BYTES;
        if !grow(&mut self.slots, 1, slots_budget) {
            return false;
        }
        let bytes_budget = self.cap.saturating_sub(self.slots.capacity() * SLOT_BYTES);
        grow(&mut self.bytes, more, bytes_budget)
    }

    /// The encodings in SQLite's `ORDER BY path` and one per path, the last inserted (`INSERT
    /// OR REPLACE` kept that one). SQLite compares BLOBs with `memcmp()` over the shorter
    /// length, then the shorter first (<https://www.sqlite.org/datatype3.html> §4.1,
    /// `sqlite3BlobCompare` in vdbeaux.c): what `Ord` for `[u8]` does.
    fn sorted(&mut self) -> impl Iterator<Item = &[u8]> {
        let SealArena { bytes, slots, .. } = self;
        let bytes: &[u8] = bytes;
        let path = move |s: &Slot| &bytes[s.start + PATH_AT..s.start + PATH_AT + s.path_len as usize];
        // Of equal paths, the last inserted (the greatest start) ends its run, as a stable
        // sort would leave it, without the stable sort's buffer of half the index.
        slots.sort_unstable_by(|a, b| path(a).cmp(path(b)).then(a.start.cmp(&b.start)));
        let slots: &[Slot] = slots;
        slots
            .iter()
            .enumerate()
            .filter(move |&(i, s)| slots.get(i + 1).is_none_or(|next| path(next) != path(s)))
            .map(move |(_, s)| &bytes[s.start..s.start + s.len as usize])
    }
}

/// A whole-baseline replacement in progress (one SQLite transaction). Each entry's seal
/// encoding is kept as it is inserted (up to [`SEAL_ARENA_CAP`]), so that [`Replace::commit`]
/// seals without reading every entry back.
pub struct Replace<'c> {
    tx: Transaction<'c>,
    path: PathBuf,
    /// The generation the new baseline gets: one more than the one it replaces.
    generation: u64,
    /// Scratch space: an entry's seal encoding.
    scratch: Vec<u8>,
    /// `None` once over its cap: the commit reads the entries back.
    arena: Option<SealArena>,
}

impl<'c> Replace<'c> {
    /// A replacement in `tx`, the entries, meta, history, ledger and alerted tables emptied.
    pub(super) fn new(tx: Transaction<'c>, path: PathBuf, generation: u64, arena_cap: usize) -> Replace<'c> {
        Replace {
            tx,
            path,
            generation,
            scratch: Vec::with_capacity(512),
            arena: Some(SealArena::new(arena_cap)),
        }
    }

    /// Inserts `e`, replacing an entry inserted before at its path.
    pub fn insert(&mut self, e: &Entry) -> Result<(), StoreError> {
        insert_entry(&self.tx, e).map_err(|err| StoreError::Sqlite {
            path: self.path.clone(),
            err,
        })?;
        if let Some(arena) = &mut self.arena {
            self.scratch.clear();
            encode_entry(e, &mut self.scratch);
            if !arena.push(&self.scratch, e.path.len()) {
                self.arena = None;
            }
        }
        Ok(())
    }

    /// The generation this baseline will have.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the commit will seal from the kept encodings (false: over the cap, it reads
    /// the entries back).
    #[cfg(test)]
    fn keeps_encodings(&self) -> bool {
        self.arena.is_some()
    }

    /// Writes `meta` (and the generation) and `history`, seals, and commits: the new
    /// baseline replaces the old at once.
    pub fn commit(
        self,
        key: &Key,
        meta: &[(&str, String)],
        history: &[HistoryRow],
    ) -> Result<(), StoreError> {
        let Replace {
            tx,
            path,
            generation,
            arena,
            ..
        } = self;
        let sql = |err| StoreError::Sqlite {
            path: path.clone(),
            err,
        };
        set_meta(&tx, meta).map_err(sql)?;
        set_meta(&tx, &[(GENERATION, generation.to_string())]).map_err(sql)?;
        insert_history(&tx, history).map_err(sql)?;
        match arena {
            Some(mut arena) => write_seal_from(&tx, &path, key, Some(&mut arena.sorted()))?,
            None => write_seal(&tx, &path, key)?,
        }
        tx.commit().map_err(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::entry::FileKind;
    use crate::baseline::store::Store;

    /// Entries of every shape the encoding has: absent and present hashes, link targets,
    /// extended attributes, flags, birth times and generations, paths that are not UTF-8 or
    /// prefixes of others; and a path inserted twice, differently.
    fn entries() -> (Vec<Entry>, Entry) {
        let mut out = vec![
            Entry::test_file(b"/a"),
            Entry {
                kind: FileKind::Directory,
                sha256: None,
                flags: Some(0x10),
                ..Entry::test_file(b"/a/")
            },
            Entry {
                kind: FileKind::Symlink,
                sha256: None,
                link_target: Some(b"../\xfe\xff".to_vec()),
                ..Entry::test_file(b"/a/l")
            },
            Entry {
                xattrs: vec![
                    (b"security.capability".to_vec(), vec![1, 0, 0, 2]),
                    (b"user.\xff".to_vec(), Vec::new()),
                ],
                birth_ns: Some(-5),
                generation: Some(7),
                sha256: Some([0xab; 32]),
                size: u64::MAX,
                ino: 1 << 63,
                ..Entry::test_file(b"/a/x")
            },
            Entry::test_file(b"/\xff\xfe/\x80name"),
            Entry::test_file(b"/ab"),
            Entry {
                link_target: Some(Vec::new()),
                kind: FileKind::Symlink,
                sha256: None,
                ..Entry::test_file(b"/a\x00b")
            },
            Entry {
                sha256: None,
                ..Entry::test_file(b"/dup")
            },
        ];
        for i in 0..50u8 {
            out.push(Entry {
                mtime_ns: i64::from(i) * 1_000_000_007,
                ..Entry::test_file(&[b'/', b'z', i, 0xc3])
            });
        }
        // The second insert of /dup wins, as INSERT OR REPLACE keeps it.
        let dup = Entry {
            size: 4096,
            sha256: Some([7; 32]),
            xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
            ..Entry::test_file(b"/dup")
        };
        // Shuffled: a fixed permutation (multiplying by a unit mod the length), /dup's second
        // version last.
        let n = out.len();
        let mut shuffled: Vec<Entry> = (0..n).map(|i| out[(i * 37 + 11) % n].clone()).collect();
        assert!(n % 37 != 0, "37 is prime: a unit mod {n} unless it divides it");
        shuffled.push(dup.clone());
        (shuffled, dup)
    }

    /// Inits a baseline of `entries` in a new state directory under `dir` keyed by `key`,
    /// keeping at most `cap` bytes of encodings; returns whether they were kept, the stored
    /// seal, and the store.
    fn init(
        dir: &std::path::Path,
        name: &str,
        key_path: &std::path::Path,
        entries: &[Entry],
        cap: usize,
    ) -> (bool, String, Store) {
        let state = dir.join(name);
        let mut store = Store::open(&state, Some(key_path), true).unwrap();
        let key = Key::load(&state, Some(key_path), true).unwrap();
        let mut replace = store.replace_capped(cap).unwrap();
        for e in entries {
            replace.insert(e).unwrap();
        }
        let kept = replace.keeps_encodings();
        let meta = [
            ("created_at", "2026-01-01T00:00:00Z".to_string()),
            ("host", "h".to_string()),
        ];
        let history = [HistoryRow {
            at: "2026-01-01T00:00:00Z".into(),
            actor: "root".into(),
            action: "init".into(),
            path: Some(b"/\xff".to_vec()),
            detail: "d".into(),
        }];
        replace.commit(&key, &meta, &history).unwrap();
        let seal = store.stored_seal().unwrap().unwrap();
        // The load reads every entry back and verifies the seal over them.
        let loaded = store.load(&key).unwrap();
        let mut expected: Vec<Entry> = entries.to_vec();
        expected.reverse();
        expected.sort_by(|a, b| a.path.cmp(&b.path));
        expected.dedup_by(|a, b| a.path == b.path);
        assert_eq!(loaded.entries, expected);
        (kept, seal, store)
    }

    #[test]
    fn seal_from_kept_encodings_is_the_readback_seal() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("key");
        let (entries, dup) = entries();
        let (kept, from_arena, arena_store) = init(dir.path(), "arena", &key_path, &entries, SEAL_ARENA_CAP);
        assert!(kept);
        let (kept, from_readback, _) = init(dir.path(), "readback", &key_path, &entries, 0);
        assert!(!kept);
        assert_eq!(from_arena, from_readback);
        let key = Key::load(&dir.path().join("arena"), Some(&key_path), false).unwrap();
        let loaded = arena_store.load(&key).unwrap();
        assert_eq!(loaded.entries.iter().find(|e| e.path == b"/dup"), Some(&dup));
        // The seal covers the entries: a different last insert seals differently.
        let mut other = entries.clone();
        other.last_mut().unwrap().size += 1;
        let (_, changed, _) = init(dir.path(), "other", &key_path, &other, SEAL_ARENA_CAP);
        assert_ne!(changed, from_arena);
    }

    #[test]
    fn arena_over_its_cap_is_dropped_and_the_commit_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("key");
        let (entries, _) = entries();
        let (_, full, _) = init(dir.path(), "full", &key_path, &entries, SEAL_ARENA_CAP);
        // Room for a few entries, not all: dropped mid-way, and the seal is the same.
        let (kept, capped, _) = init(dir.path(), "capped", &key_path, &entries, 8192);
        assert!(!kept);
        assert_eq!(capped, full);
        let mut arena = SealArena::new(8192);
        let mut pushed = 0;
        let mut buf = Vec::new();
        for e in &entries {
            buf.clear();
            encode_entry(e, &mut buf);
            if !arena.push(&buf, e.path.len()) {
                break;
            }
            pushed += 1;
            assert!(arena.bytes.capacity() + arena.slots.capacity() * SLOT_BYTES <= 8192);
        }
        assert!(pushed > 0 && pushed < entries.len(), "{pushed}");
    }
}
