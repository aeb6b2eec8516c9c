//! Reads the running kernel's BTF so the eBPF sensor can be told struct member offsets at load
//! time instead of hard-coding one kernel's layout. aya keeps its BTF member API private and
//! btf-rs is LGPL, hence this small reader of the raw format (kernel Documentation/bpf/btf.rst).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SYS_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Where a loaded module's BTF appears (Linux 5.11+, CONFIG_DEBUG_INFO_BTF_MODULES).
const SYS_BTF_DIR: &str = "/sys/kernel/btf";
// Kinds from include/uapi/linux/btf.h that lookups look at; the parser knows all of 1..=19.
const INT: u8 = 1;
const STRUCT: u8 = 4;
const UNION: u8 = 5;
const TYPEDEF: u8 = 8;
/// BTF_KIND_FUNC (include/uapi/linux/btf.h).
const FUNC: u8 = 12;
/// TYPEDEF, VOLATILE, CONST, RESTRICT and TYPE_TAG name another type without changing its layout.
const MODIFIERS: [u8; 5] = [TYPEDEF, 9, 10, 11, 18];
/// Longest modifier chain or anonymous-member nesting followed before the data is called cyclic.
const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF from {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("the kernel BTF has no struct or union `{0}`")]
    MissingStruct(String),
    #[error("struct `{strukt}` has no member `{member}` in the kernel BTF")]
    MissingMember { strukt: String, member: String },
    #[error("`{strukt}.{member}` is a bitfield, which has no byte offset")]
    Bitfield { strukt: String, member: String },
}

macro_rules! malformed {
    ($($what:tt)*) => { BtfError::Malformed(format!($($what)*)) };
}

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    /// Non-zero only for bitfields in structs whose kind_flag is set.
    bitfield_size: u32,
}

#[derive(Default)]
struct Type {
    kind: u8,
    size_or_type: u32,
    /// The u32 after an INT (encoding, bit offset, bit count); 0 for other kinds.
    int_info: u32,
    members: Vec<Member>,
}

/// Parsed types and string table; meant to be dropped once the offsets are resolved.
pub struct KernelBtf {
    /// Indexed by type id; id 0 is void.
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

/// Bounds-checked reads in the byte order the magic announced.
struct Reader<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl Reader<'_> {
    fn u32(&self, at: usize) -> Result<u32, BtfError> {
        let b: [u8; 4] = at
            .checked_add(4)
            .and_then(|end| self.bytes.get(at..end))
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| malformed!("4 bytes at {at} run past the end ({})", self.bytes.len()))?;
        let v = u32::from_le_bytes(b);
        Ok(if self.big_endian { v.swap_bytes() } else { v })
    }
}

fn string_at(strings: &[u8], off: u32) -> Result<&str, BtfError> {
    let tail = strings.get(off as usize..).unwrap_or_default();
    let end = tail.iter().position(|&b| b == 0);
    end.and_then(|end| std::str::from_utf8(&tail[..end]).ok())
        .ok_or_else(|| malformed!("name offset {off} is not a NUL-terminated UTF-8 string"))
}

impl KernelBtf {
    /// Parses /sys/kernel/btf/vmlinux.
    pub fn from_sys_fs() -> Result<KernelBtf, BtfError> {
        let path = Path::new(SYS_BTF);
        let bytes = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(&bytes)
    }

    /// Adds the BTF of loaded module `module` (/sys/kernel/btf/MODULE) to vmlinux's, so its
    /// types (e.g. `btrfs_inode` when btrfs is a module) can be looked up. Returns false when
    /// the kernel has no BTF for it: the module is built in, not loaded, or the kernel is older
    /// than 5.11 or built without CONFIG_DEBUG_INFO_BTF_MODULES.
    ///
    /// Errors: the file exists but cannot be read, or is not split BTF on top of this one.
    pub fn add_module(&mut self, module: &str) -> Result<bool, BtfError> {
        let path = Path::new(SYS_BTF_DIR).join(module);
        match std::fs::read(&path) {
            Ok(bytes) => self.add_split(&bytes).map(|()| true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(BtfError::Io { path, source }),
        }
    }

    /// Appends split BTF (a module's: its type ids continue after this BTF's last, its string
    /// offsets after this BTF's string section; kernel Documentation/bpf/btf.rst, "split BTF").
    pub fn add_split(&mut self, bytes: &[u8]) -> Result<(), BtfError> {
        let base = KernelBtf {
            types: std::mem::take(&mut self.types),
            strings: std::mem::take(&mut self.strings),
            by_name: std::mem::take(&mut self.by_name),
        };
        *self = Self::parse_onto(base, bytes)?;
        Ok(())
    }

    /// Parses raw BTF bytes (for tests and other files).
    pub fn parse(bytes: &[u8]) -> Result<KernelBtf, BtfError> {
        let empty = KernelBtf {
            types: vec![Type::default()], // id 0, void
            strings: Vec::new(),
            by_name: HashMap::new(),
        };
        Self::parse_onto(empty, bytes)
    }

    /// Parses `bytes` as the types and strings that follow `base`'s.
    fn parse_onto(base: KernelBtf, bytes: &[u8]) -> Result<KernelBtf, BtfError> {
        // The header is in the producer's byte order; the magic 0xeB9F tells which.
        let big_endian = match bytes.get(..2) {
            Some([0x9f, 0xeb]) => false,
            Some([0xeb, 0x9f]) => true,
            _ => return Err(malformed!("bad magic, not raw BTF")),
        };
        match bytes.get(2) {
            Some(1) => {}
            version => return Err(malformed!("unsupported BTF version {version:?}")),
        }
        let r = Reader { bytes, big_endian };
        let hdr_len = r.u32(4)? as usize;
        if hdr_len < 24 {
            return Err(malformed!("header length {hdr_len} is shorter than 24 bytes"));
        }
        // Section offsets count from the end of the header (which newer kernels may grow).
        let section = |at: usize, what: &str| -> Result<std::ops::Range<usize>, BtfError> {
            let (off, len) = (r.u32(at)? as usize, r.u32(at + 4)? as usize);
            let start = hdr_len.checked_add(off);
            match start.and_then(|s| s.checked_add(len)) {
                Some(end) if end <= bytes.len() => Ok(hdr_len + off..end),
                _ => Err(malformed!("{what} section ({off}+{len}) past the end")),
            }
        };
        let type_range = section(8, "type")?;
        let KernelBtf {
            mut types,
            mut strings,
            mut by_name,
        } = base;
        strings.extend_from_slice(&bytes[section(16, "string")?]);
        // Reads of type data must stay inside the type section.
        let r = Reader {
            bytes: &bytes[..type_range.end],
            big_endian,
        };
        let mut pos = type_range.start;
        while pos < type_range.end {
            let (id, start) = (types.len() as u32, pos);
            let (name_off, info, size_or_type) = (r.u32(pos)?, r.u32(pos + 4)?, r.u32(pos + 8)?);
            let (vlen, kind) = ((info & 0xffff) as usize, ((info >> 24) & 0x1f) as u8);
            let kind_flag = info >> 31 == 1;
            pos += 12;
            let mut t = Type {
                kind,
                size_or_type,
                ..Type::default()
            };
            // Kind-specific data after btf_type; every kind is sized so later ids stay aligned.
            let extra = match kind {
                INT => {
                    t.int_info = r.u32(pos)?;
                    4
                }
                14 | 17 => 4,              // VAR, DECL_TAG
                3 => 12,                   // ARRAY
                6 | 13 => 8 * vlen,        // ENUM, FUNC_PROTO
                15 | 19 => 12 * vlen,      // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, modifiers, FUNC, FLOAT, TYPE_TAG
                STRUCT | UNION => {
                    for i in 0..vlen {
                        let at = pos + 12 * i;
                        let offset = r.u32(at + 8)?;
                        // With kind_flag, offset is bitfield_size << 24 | bit_offset.
                        let bitfield_size = if kind_flag { offset >> 24 } else { 0 };
                        let bit_offset = if kind_flag { offset & 0xff_ffff } else { offset };
                        let (name_off, type_id) = (r.u32(at)?, r.u32(at + 4)?);
                        t.members.push(Member {
                            name_off,
                            type_id,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    12 * vlen
                }
                _ => return Err(malformed!("type {id} at byte {start}: unknown kind {kind}")),
            };
            pos += extra;
            if pos > type_range.end {
                return Err(malformed!("type {id} runs past the end of the type section"));
            }
            if name_off != 0 {
                let name = string_at(&strings, name_off)?.to_owned();
                by_name.entry(name).or_default().push(id);
            }
            types.push(t);
        }
        Ok(KernelBtf {
            types,
            strings,
            by_name,
        })
    }

    /// Byte offset of `member` in `struct strukt` (or union). `member` may be a dotted path
    /// ("i_data.i_mmap_writable" style, each step a named member of the previous member's
    /// struct type, following typedef/const/volatile) and finds members nested inside anonymous
    /// struct/union members, adding offsets. Errors if the member is a bitfield.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let missing = || BtfError::MissingMember {
            strukt: strukt.into(),
            member: member.into(),
        };
        let mut id = self.find_struct(strukt)?;
        let mut bits = 0u64;
        let mut last = None;
        for step in member.split('.') {
            let sid = self.strip(id)?;
            if !matches!(self.ty(sid)?.kind, STRUCT | UNION) {
                return Err(missing());
            }
            let (offset, m) = self.find_member(sid, step, 0)?.ok_or_else(missing)?;
            bits += offset;
            id = m.type_id;
            last = Some(m);
        }
        let m = last.ok_or_else(missing)?;
        // Without kind_flag a bitfield shows as an INT narrower than its size or bit-shifted.
        let t = self.ty(self.strip(m.type_id)?)?;
        let (int_offset, int_bits) = ((t.int_info >> 16) & 0xff, t.int_info & 0xff);
        let narrow_int =
            t.kind == INT && (int_offset != 0 || u64::from(int_bits) != u64::from(t.size_or_type) * 8);
        if !bits.is_multiple_of(8) || m.bitfield_size != 0 || narrow_int {
            return Err(BtfError::Bitfield {
                strukt: strukt.into(),
                member: member.into(),
            });
        }
        u32::try_from(bits / 8).map_err(|_| malformed!("offset of {strukt}.{member} overflows"))
    }

    /// Whether a typedef with this name exists, e.g. "btf_trace_ctime_ns_xchg".
    pub fn has_typedef(&self, name: &str) -> bool {
        let ids = self.by_name.get(name).map(Vec::as_slice).unwrap_or_default();
        ids.iter().any(|&id| self.types[id as usize].kind == TYPEDEF)
    }

    /// Whether the kernel has a function with this name that fentry can attach to, e.g.
    /// "file_modified" (pahole emits BTF_KIND_FUNC for non-inlined functions only).
    pub fn has_func(&self, name: &str) -> bool {
        let ids = self.by_name.get(name).map(Vec::as_slice).unwrap_or_default();
        ids.iter().any(|&id| self.types[id as usize].kind == FUNC)
    }

    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or_else(|| malformed!("reference to missing type id {id}"))
    }

    /// A struct or union by name: the first with a size (skipping empty duplicates), else any.
    fn find_struct(&self, name: &str) -> Result<u32, BtfError> {
        let ids = self.by_name.get(name).map(Vec::as_slice).unwrap_or_default();
        let is_struct = |id: &&u32| matches!(self.types[**id as usize].kind, STRUCT | UNION);
        let sized = ids
            .iter()
            .filter(is_struct)
            .find(|id| self.types[**id as usize].size_or_type != 0);
        sized
            .or_else(|| ids.iter().find(is_struct))
            .copied()
            .ok_or_else(|| BtfError::MissingStruct(name.into()))
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type.
    fn strip(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id)?;
            if !MODIFIERS.contains(&t.kind) {
                return Ok(id);
            }
            id = t.size_or_type;
        }
        Err(malformed!("modifier chain at type {id} is too long (a cycle?)"))
    }

    /// The named member of struct `sid`, searching anonymous members in declaration order as C
    /// does; returns its bit offset from the start of `sid`.
    fn find_member(&self, sid: u32, name: &str, depth: usize) -> Result<Option<(u64, &Member)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed!("anonymous members nest too deep at type {sid}"));
        }
        for m in &self.ty(sid)?.members {
            if m.name_off != 0 {
                if string_at(&self.strings, m.name_off)? == name {
                    return Ok(Some((m.bit_offset.into(), m)));
                }
                continue;
            }
            let inner = self.strip(m.type_id)?;
            if matches!(self.ty(inner)?.kind, STRUCT | UNION)
                && let Some((bits, found)) = self.find_member(inner, name, depth + 1)?
            {
                return Ok(Some((u64::from(m.bit_offset) + bits, found)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Without the kernel file or bpftool the test is skipped, unless the run demands it.
    fn skip<T>(why: String) -> Option<T> {
        if std::env::var("FIMD_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("FIMD_REQUIRE_PRIVILEGED=1 but {why}");
        }
        println!("SKIPPED: {why}");
        None
    }

    fn sys_btf() -> Option<Vec<u8>> {
        match std::fs::read(SYS_BTF) {
            Ok(bytes) => Some(bytes),
            Err(e) => skip(format!("cannot read {SYS_BTF}: {e}")),
        }
    }

    /// bpftool's raw dump, as the independent reference: struct name -> id, id -> members.
    #[derive(Default)]
    struct Reference {
        structs: HashMap<String, u32>,
        /// (name, type id, bit offset, bitfield) per struct or union id.
        members: HashMap<u32, Vec<(String, u32, u32, bool)>>,
    }

    fn bpftool() -> Option<Reference> {
        let out = Command::new("bpftool")
            .args(["btf", "dump", "file", SYS_BTF, "format", "raw"])
            .output();
        let out = match out {
            Ok(out) if out.status.success() => out,
            other => {
                return skip(format!(
                    "bpftool btf dump failed (apt-get install bpftool): {other:?}"
                ));
            }
        };
        let (mut r, mut current) = (Reference::default(), None);
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let field = |key: &str| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix(key)?.parse::<u32>().ok())
            };
            if let Some(id) = line
                .strip_prefix('[')
                .and_then(|l| l.split(']').next()?.parse::<u32>().ok())
            {
                // "[895] STRUCT 'inode' size=616 vlen=56"
                current = matches!(words[1], "STRUCT" | "UNION").then_some(id);
                if words[1] == "STRUCT" && words[2] != "'(anon)'" && field("size=") != Some(0) {
                    r.structs
                        .entry(words[2].trim_matches('\'').to_owned())
                        .or_insert(id);
                }
            } else if let (Some(id), Some(ty), Some(bits)) =
                (current, field("type_id="), field("bits_offset="))
            {
                // "\t'i_ino' type_id=1 bits_offset=512", with " bitfield_size=1" for bitfields
                let bitfield = field("bitfield_size=").is_some_and(|n| n != 0) || bits % 8 != 0;
                let name = words[0].trim_matches('\'').to_owned();
                r.members.entry(id).or_default().push((name, ty, bits, bitfield));
            }
        }
        Some(r)
    }

    impl Reference {
        fn find(&self, id: u32, member: &str) -> Option<u32> {
            let (_, _, bits, bitfield) = self.members.get(&id)?.iter().find(|(name, ..)| name == member)?;
            assert!(!bitfield, "{member} is a bitfield in bpftool's dump");
            Some(bits / 8)
        }
        fn direct(&self, strukt: &str, member: &str) -> u32 {
            self.find(self.structs[strukt], member)
                .unwrap_or_else(|| panic!("bpftool: no {strukt}.{member}"))
        }
        /// A member that bpftool shows inside an '(anon)' member of `strukt`.
        fn via_anon(&self, strukt: &str, member: &str) -> u32 {
            let anon = self.members[&self.structs[strukt]]
                .iter()
                .filter(|(name, ..)| name == "(anon)");
            let mut hits = anon.filter_map(|(_, ty, bits, _)| Some(bits / 8 + self.find(*ty, member)?));
            hits.next()
                .unwrap_or_else(|| panic!("bpftool: no {member} in an anonymous member of {strukt}"))
        }
    }

    #[test]
    fn offsets_match_bpftool() {
        let (Some(bytes), Some(reference)) = (sys_btf(), bpftool()) else {
            return;
        };
        let btf = KernelBtf::parse(&bytes).unwrap();
        let check = |strukt: &str, member: &str, expected: u32| {
            println!("{strukt}.{member} = {expected}");
            assert_eq!(
                btf.member_offset(strukt, member).unwrap(),
                expected,
                "{strukt}.{member}"
            );
        };
        for (strukt, member) in [
            ("inode", "i_ino"),
            ("inode", "i_sb"),
            ("inode", "i_mode"),
            ("inode", "i_generation"),
            ("super_block", "s_dev"),
            ("super_block", "s_magic"),
            ("file", "f_inode"),
            ("file", "f_mode"),
            ("task_struct", "tgid"),
            ("task_struct", "real_parent"),
        ] {
            check(strukt, member, reference.direct(strukt, member));
        }
        // Members of anonymous unions: `union { const unsigned int i_nlink; ... }` and friends.
        check("inode", "i_nlink", reference.via_anon("inode", "i_nlink"));
        check("inode", "i_fop", reference.via_anon("inode", "i_fop"));
        // Dotted paths; f_path is `const struct path` inside an anonymous union of struct file.
        let host = reference.direct("inode", "i_data") + reference.direct("address_space", "host");
        check("inode", "i_data.host", host);
        let dentry = reference.via_anon("file", "f_path") + reference.direct("path", "dentry");
        check("file", "f_path.dentry", dentry);
        assert!(matches!(
            btf.member_offset("task_struct", "sched_reset_on_fork"),
            Err(BtfError::Bitfield { .. })
        ));
    }

    /// Every named member of every struct bpftool lists: the same offset, or both call it a bitfield.
    #[test]
    fn every_struct_member_matches_bpftool() {
        let (Some(bytes), Some(reference)) = (sys_btf(), bpftool()) else {
            return;
        };
        let btf = KernelBtf::parse(&bytes).unwrap();
        let mut compared = 0;
        for (strukt, id) in &reference.structs {
            for (member, _, bits, bitfield) in reference.members[id].iter().filter(|m| m.0 != "(anon)") {
                let got = btf.member_offset(strukt, member);
                if *bitfield {
                    assert!(
                        matches!(got, Err(BtfError::Bitfield { .. })),
                        "{strukt}.{member}: {got:?}"
                    );
                } else {
                    assert_eq!(got.unwrap() * 8, *bits, "{strukt}.{member}");
                    compared += 1;
                }
            }
        }
        println!("{compared} member offsets agree with bpftool");
        assert!(compared > 10_000, "only {compared} members compared");
    }

    #[test]
    fn errors_are_returned_not_panics() {
        let Some(bytes) = sys_btf() else { return };
        let btf = KernelBtf::parse(&bytes).unwrap();
        let err = |r: Result<u32, BtfError>| r.unwrap_err().to_string();
        assert!(err(btf.member_offset("fimd_no_such_struct", "x")).contains("no struct or union"));
        assert!(err(btf.member_offset("inode", "fimd_no_such_member")).contains("no member"));
        assert!(err(btf.member_offset("inode", "i_ino.deeper")).contains("no member"));
        assert!(err(btf.member_offset("inode", "")).contains("no member"));
        for len in [0, 1, 3, 23, 24, 100, 4096, bytes.len() - 1] {
            assert!(
                matches!(KernelBtf::parse(&bytes[..len]), Err(BtfError::Malformed(_))),
                "prefix {len}"
            );
        }
        let mut wrong = bytes[..4096].to_vec();
        wrong[0] = 0x00;
        assert!(format!("{:?}", KernelBtf::parse(&wrong).err()).contains("magic"));
    }

    #[test]
    fn garbled_small_btf_never_panics() {
        // [1] INT 'int' size=4; [2] STRUCT 's' (kind_flag) {int a; int b:3 at bit 33; anon [4]};
        // [3] CONST -> [2]; [4] UNION (anon) {int c at bit 64}.
        let strings = b"\0int\0s\0a\0b\0c\0";
        #[rustfmt::skip]
        let words: [u32; 25] = [
            1, 1 << 24, 4, 32, // INT
            5, 1 << 31 | 4 << 24 | 3, 16, 7, 1, 0, 9, 1, 3 << 24 | 33, 0, 4, 0, // STRUCT
            0, 10 << 24, 2, // CONST
            0, 5 << 24 | 1, 16, 11, 1, 64, // UNION
        ];
        let types: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let (types_len, strings_len) = (types.len() as u32, strings.len() as u32);
        let header = [24, 0, types_len, types_len, strings_len];
        let mut good = vec![0x9f, 0xeb, 1, 0];
        good.extend(header.iter().flat_map(|w| w.to_le_bytes()));
        good.extend(&types);
        good.extend(strings);
        let btf = KernelBtf::parse(&good).unwrap();
        assert_eq!(btf.member_offset("s", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("s", "c").unwrap(), 8);
        assert!(matches!(
            btf.member_offset("s", "b"),
            Err(BtfError::Bitfield { .. })
        ));
        for i in 0..good.len() {
            for value in [0x00, 0x1f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = value;
                if let Ok(btf) = KernelBtf::parse(&bad) {
                    let _ = (btf.member_offset("s", "c"), btf.member_offset("s", "a.b"));
                }
            }
            assert!(KernelBtf::parse(&good[..i]).is_err(), "prefix {i}");
        }
        let mut unknown = good.clone();
        unknown[24 + 7] = 25; // kind byte of type 1
        assert!(format!("{:?}", KernelBtf::parse(&unknown).err()).contains("unknown kind 25"));
    }

    #[test]
    fn typedef_lookup() {
        let Some(bytes) = sys_btf() else { return };
        let btf = KernelBtf::parse(&bytes).unwrap();
        assert!(btf.has_typedef("btf_trace_ctime_ns_xchg"));
        assert!(!btf.has_typedef("fimd_no_such_typedef"));
        assert!(!btf.has_typedef("inode"), "a struct is not a typedef");
        assert!(btf.has_func("vfs_write"));
        assert!(!btf.has_func("fimd_no_such_function"));
        assert!(!btf.has_func("inode"), "a struct is not a function");
    }
}
