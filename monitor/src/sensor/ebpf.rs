//! Loading fimd's eBPF object (built by `build.rs` with aya-build and embedded in the binary).
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use monitor_common::{
    BTRFS_ENABLED, COUNTER_RB_DROPS, COUNTERS_LEN, ChangeRecord, InodeKey, NR_GLOBALS,
    OFF_AS_I_MMAP_WRITABLE, OFF_BTRFS_INODE_ROOT, OFF_BTRFS_INODE_VFS_INODE, OFF_BTRFS_ROOT_ANON_DEV,
    OFF_FDT_FD, OFF_FDT_MAX_FDS, OFF_FILE_F_FLAGS, OFF_FILE_F_INODE, OFF_FILE_F_MODE, OFF_FILE_F_POS,
    OFF_FILES_FDT, OFF_INODE_I_INO, OFF_INODE_I_MAPPING, OFF_INODE_I_SB, OFF_INODE_I_SIZE, OFF_IO_KIOCB_FILE,
    OFF_KIOCB_KI_FILP, OFF_REGS_ARGS, OFF_SB_S_DEV, OFF_SB_S_MAGIC, OFF_TASK_FILES, Pending,
    WATCH_APPEND_ONLY, WATCH_IS_DIR, WatchVal,
};

use super::btf::KernelBtf;

/// The object compiled from monitor-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "cannot load the eBPF programs: {0}; fimd needs root, or CAP_BPF and CAP_PERFMON \
         (plus CAP_DAC_READ_SEARCH to read every watched file), and a kernel with BTF \
         (/sys/kernel/btf/vmlinux)"
    )]
    Load(String),
    #[error("cannot attach {program} to {category}/{name}: {reason}")]
    Attach {
        program: &'static str,
        category: &'static str,
        name: &'static str,
        reason: String,
    },
    #[error("cannot read struct layouts from the kernel's BTF: {0}")]
    Btf(#[from] super::btf::BtfError),
    #[error(
        "this kernel has no timestamp tracepoints (btf_trace_ctime_ns_xchg): the realtime sensor needs \
         Linux 6.13 or newer; use `fimd check` on a schedule instead"
    )]
    NoHooks,
    #[error("eBPF map {name}: {reason}")]
    Map { name: &'static str, reason: String },
    /// A map is full (bpf_map_update_elem: E2BIG): the inode cannot be watched in the kernel.
    #[error(
        "the eBPF map {name} is full ({capacity} inodes): raise [realtime] max_watched_inodes \
         (about {BYTES_PER_WATCHED_INODE} bytes of kernel memory each)"
    )]
    Full { name: &'static str, capacity: u32 },
}

/// Member offsets of this kernel's structs, passed to the programs as globals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub inode_i_sb: u32,
    pub inode_i_ino: u32,
    pub sb_s_dev: u32,
    pub inode_i_mapping: u32,
    pub as_i_mmap_writable: u32,
    pub sb_s_magic: u32,
    /// `btrfs_inode.vfs_inode`, `btrfs_inode.root`, `btrfs_root.anon_dev`; `None` when the
    /// kernel's BTF has no btrfs types (btrfs not built in), so no btrfs inode can be watched.
    pub btrfs: Option<(u32, u32, u32)>,
    pub kiocb_ki_filp: u32,
    pub file_f_inode: u32,
    pub file_f_mode: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_pos: u32,
    /// `io_kiocb.file`; `None` when the kernel's BTF has no io_uring types.
    pub io_kiocb_file: Option<u32>,
    pub file_f_flags: u32,
    pub inode_i_size: u32,
    /// `struct pt_regs` offsets of the six system call arguments.
    pub syscall_args: [u32; 6],
}

/// This architecture's numbers for the write-family system calls, in `NR_GLOBALS` order.
const WRITE_SYSCALLS: [libc::c_long; 9] = [
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_sendfile,
    libc::SYS_splice,
    libc::SYS_copy_file_range,
    libc::SYS_fallocate,
];

/// Where the syscall arguments live in `struct pt_regs`, by architecture.
fn syscall_args(btf: &KernelBtf) -> Result<[u32; 6], EbpfError> {
    let mut out = [0u32; 6];
    if cfg!(target_arch = "x86_64") {
        for (o, reg) in out.iter_mut().zip(["di", "si", "dx", "r10", "r8", "r9"]) {
            *o = btf.member_offset("pt_regs", reg)?;
        }
    } else if cfg!(target_arch = "aarch64") {
        let regs = btf.member_offset("pt_regs", "regs")?;
        for (i, o) in out.iter_mut().enumerate() {
            *o = regs + 8 * i as u32;
        }
    } else {
        return Err(EbpfError::Load(format!(
            "the append-only write checks know the system call registers of x86_64 and aarch64 only, not {}",
            std::env::consts::ARCH
        )));
    }
    Ok(out)
}

impl Offsets {
    pub fn from_btf(btf: &KernelBtf) -> Result<Offsets, EbpfError> {
        Ok(Offsets {
            inode_i_sb: btf.member_offset("inode", "i_sb")?,
            inode_i_ino: btf.member_offset("inode", "i_ino")?,
            sb_s_dev: btf.member_offset("super_block", "s_dev")?,
            inode_i_mapping: btf.member_offset("inode", "i_mapping")?,
            as_i_mmap_writable: btf.member_offset("address_space", "i_mmap_writable")?,
            sb_s_magic: btf.member_offset("super_block", "s_magic")?,
            btrfs: match (
                btf.member_offset("btrfs_inode", "vfs_inode"),
                btf.member_offset("btrfs_inode", "root"),
                btf.member_offset("btrfs_root", "anon_dev"),
            ) {
                (Ok(a), Ok(b), Ok(c)) => Some((a, b, c)),
                _ => None,
            },
            kiocb_ki_filp: btf.member_offset("kiocb", "ki_filp")?,
            file_f_inode: btf.member_offset("file", "f_inode")?,
            file_f_mode: btf.member_offset("file", "f_mode")?,
            task_files: btf.member_offset("task_struct", "files")?,
            files_fdt: btf.member_offset("files_struct", "fdt")?,
            fdt_max_fds: btf.member_offset("fdtable", "max_fds")?,
            fdt_fd: btf.member_offset("fdtable", "fd")?,
            file_f_pos: btf.member_offset("file", "f_pos")?,
            io_kiocb_file: btf.member_offset("io_kiocb", "file").ok(),
            file_f_flags: btf.member_offset("file", "f_flags")?,
            inode_i_size: btf.member_offset("inode", "i_size")?,
            syscall_args: syscall_args(btf)?,
        })
    }
}

/// The kernel's `dev_t` for a userspace `st_dev` (the two encode major and minor differently).
pub fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    (major << 20) | (minor & 0xfffff)
}

/// The loaded change sensor: its programs stay attached while this lives.
pub struct EbpfSensor {
    _ebpf: Ebpf,
    /// Entries WATCH and ARMED hold.
    capacity: u32,
    /// Watched files a record said were mapped shared and writable.
    mapped_candidates: std::collections::HashMap<InodeKey, ()>,
    mappings: super::mappings::MappedFiles,
    /// `raw_tracepoint/<name>` of every attached program, in attach order.
    hooks: Vec<&'static str>,
    watch: HashMap<MapData, InodeKey, WatchVal>,
    armed: HashMap<MapData, InodeKey, u32>,
    pending: HashMap<MapData, InodeKey, Pending>,
    violations: HashMap<MapData, InodeKey, u32>,
    counters: PerCpuArray<MapData, u64>,
    events: RingBuf<MapData>,
}

/// Ring buffer size when the configuration names none: 4 MiB, about 50,000 records.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// Kernel memory per watched inode, bytes: one WATCH and one ARMED hash map entry (a 16-byte
/// key, a 16- and a 4-byte value, and the kernel's per-element overhead), measured as the maps'
/// `memlock` in /proc/self/fdinfo on 6.18: 200,225 KiB at 1,048,576 entries against 23,585 KiB
/// at 65,536 (PENDING and VIOLATIONS stop growing there).
pub const BYTES_PER_WATCHED_INODE: u32 = 184;

/// PENDING holds the inodes changed again before the daemon re-armed them, VIOLATIONS the
/// append-only files with a flag not yet taken: both far fewer than the watched inodes. A full
/// PENDING loses only a count; a full VIOLATIONS makes the daemon verify a log whole.
const PENDING_MAX: u32 = 16_384;
const VIOLATIONS_MAX: u32 = 65_536;

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, EbpfError> {
    ebpf.take_map(name).ok_or_else(|| EbpfError::Map {
        name,
        reason: "not in the object".into(),
    })
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |e| EbpfError::Map {
        name,
        reason: e.to_string(),
    }
}

impl EbpfSensor {
    /// Loads and attaches the change programs, with offsets from the running kernel's BTF.
    /// `ring_bytes` is the ring buffer's size: a power of two, at least a page. `append_hooks`
    /// attaches the write-offset checks of the append-only policy (they run on every write
    /// syscall of the host, so only when some watch needs them).
    /// `capacity` is how many inodes WATCH and ARMED hold (entries).
    pub fn load(ring_bytes: u32, append_hooks: bool, capacity: u32) -> Result<EbpfSensor, EbpfError> {
        ensure_tracefs()?;
        let btf = KernelBtf::from_sys_fs()?;
        if !btf.has_typedef("btf_trace_ctime_ns_xchg") {
            return Err(EbpfError::NoHooks);
        }
        let off = Offsets::from_btf(&btf)?;
        let btrfs = off.btrfs.unwrap_or_default();
        let nrs: Vec<u32> = WRITE_SYSCALLS.iter().map(|&n| n as u32).collect();
        let mut loader = EbpfLoader::new();
        for (name, value) in NR_GLOBALS.iter().zip(&nrs) {
            loader.override_global(name, value, true);
        }
        for (name, value) in OFF_REGS_ARGS.iter().zip(&off.syscall_args) {
            loader.override_global(name, value, true);
        }
        let mut ebpf = loader
            .map_max_entries("EVENTS", ring_bytes)
            .map_max_entries("WATCH", capacity)
            .map_max_entries("ARMED", capacity)
            .map_max_entries("PENDING", capacity.min(PENDING_MAX))
            // Written only for append-only inodes, which exist only with the append hooks.
            .map_max_entries(
                "VIOLATIONS",
                if append_hooks {
                    capacity.min(VIOLATIONS_MAX)
                } else {
                    1
                },
            )
            .override_global(OFF_INODE_I_SB, &off.inode_i_sb, true)
            .override_global(OFF_INODE_I_INO, &off.inode_i_ino, true)
            .override_global(OFF_SB_S_DEV, &off.sb_s_dev, true)
            .override_global(OFF_INODE_I_MAPPING, &off.inode_i_mapping, true)
            .override_global(OFF_AS_I_MMAP_WRITABLE, &off.as_i_mmap_writable, true)
            .override_global(OFF_SB_S_MAGIC, &off.sb_s_magic, true)
            .override_global(BTRFS_ENABLED, &u32::from(off.btrfs.is_some()), true)
            .override_global(OFF_BTRFS_INODE_VFS_INODE, &btrfs.0, true)
            .override_global(OFF_BTRFS_INODE_ROOT, &btrfs.1, true)
            .override_global(OFF_BTRFS_ROOT_ANON_DEV, &btrfs.2, true)
            .override_global(OFF_KIOCB_KI_FILP, &off.kiocb_ki_filp, true)
            .override_global(OFF_FILE_F_INODE, &off.file_f_inode, true)
            .override_global(OFF_FILE_F_MODE, &off.file_f_mode, true)
            .override_global(OFF_TASK_FILES, &off.task_files, true)
            .override_global(OFF_FILES_FDT, &off.files_fdt, true)
            .override_global(OFF_FDT_MAX_FDS, &off.fdt_max_fds, true)
            .override_global(OFF_FDT_FD, &off.fdt_fd, true)
            .override_global(OFF_FILE_F_POS, &off.file_f_pos, true)
            .override_global(OFF_IO_KIOCB_FILE, &off.io_kiocb_file.unwrap_or(0), true)
            .override_global(OFF_FILE_F_FLAGS, &off.file_f_flags, true)
            .override_global(OFF_INODE_I_SIZE, &off.inode_i_size, true)
            .load(OBJECT)
            .map_err(|e| {
                EbpfError::Load(format!(
                    "{e:#} (maps for {capacity} inodes need about {} MiB of kernel memory: if the kernel \
                     refused them, lower [realtime] max_watched_inodes or raise the memory limit)",
                    (u64::from(capacity) * u64::from(BYTES_PER_WATCHED_INODE)) >> 20
                ))
            })?;
        let mut programs = vec![
            ("fimd_ctime_xchg", "ctime_ns_xchg"),
            ("fimd_ctime_set", "inode_set_ctime_to_ts"),
            ("fimd_dio_complete", "iomap_dio_complete"),
        ];
        if append_hooks {
            programs.extend([
                ("fimd_sys_enter", "sys_enter"),
                ("fimd_uring_file", "io_uring_file_get"),
            ]);
            if off.io_kiocb_file.is_some() {
                programs.push(("fimd_uring_complete", "io_uring_complete"));
            }
        }
        let mut hooks = Vec::with_capacity(programs.len());
        for (program, tracepoint) in programs {
            attach_raw_tracepoint(&mut ebpf, program, tracepoint)?;
            hooks.push(tracepoint);
        }
        Ok(EbpfSensor {
            capacity,
            mapped_candidates: std::collections::HashMap::new(),
            mappings: super::mappings::MappedFiles::default(),
            watch: HashMap::try_from(take_map(&mut ebpf, "WATCH")?).map_err(map_err("WATCH"))?,
            armed: HashMap::try_from(take_map(&mut ebpf, "ARMED")?).map_err(map_err("ARMED"))?,
            pending: HashMap::try_from(take_map(&mut ebpf, "PENDING")?).map_err(map_err("PENDING"))?,
            violations: HashMap::try_from(take_map(&mut ebpf, "VIOLATIONS")?)
                .map_err(map_err("VIOLATIONS"))?,
            counters: PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?).map_err(map_err("COUNTERS"))?,
            events: RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?,
            hooks,
            _ebpf: ebpf,
        })
    }

    /// `Full` when an insert into `name` failed because the map is full (E2BIG, as
    /// kernel/bpf/hashtab.c returns it), else `Map`.
    fn full_or(&self, name: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
        let capacity = self.capacity;
        move |e| match &e {
            aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG) => {
                EbpfError::Full { name, capacity }
            }
            _ => map_err(name)(e),
        }
    }

    /// Kernel counters summed over CPUs, indexed by `monitor_common::COUNTER_*`.
    pub fn counters(&self) -> [u64; COUNTERS_LEN as usize] {
        let mut out = [0; COUNTERS_LEN as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(v) = self.counters.get(&(i as u32), 0) {
                *slot = v.iter().sum();
            }
        }
        out
    }
}

impl super::Sensor for EbpfSensor {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn hooks(&self) -> Vec<String> {
        self.hooks.iter().map(|t| format!("raw_tracepoint/{t}")).collect()
    }

    fn ready_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.events.as_fd()
    }

    fn drain(&mut self, out: &mut Vec<ChangeRecord>) {
        while let Some(item) = self.events.next() {
            if item.len() >= std::mem::size_of::<ChangeRecord>() {
                // SAFETY: ChangeRecord is plain integers (any bytes are valid) and the item holds
                // at least its size; read_unaligned needs no alignment.
                let r = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ChangeRecord>()) };
                if r.flags & monitor_common::RECORD_MMAP_WRITABLE != 0 {
                    self.mapped_candidates.insert(r.key, ());
                }
                out.push(r);
            }
        }
        // A page of a tmpfs file stays writable once faulted (writeback never write-protects
        // it), so later stores raise no ctime change: files once reported mapped writable are
        // looked for in /proc while they stay mapped, and dropped once they are not.
        if self.mappings.poll(&self.mapped_candidates, out).is_some() {
            let mappings = &self.mappings;
            self.mapped_candidates.retain(|k, ()| mappings.is_mapped(k));
        }
    }

    fn watch(&mut self, key: InodeKey, _path: &[u8], is_dir: bool) -> Result<(), super::SensorError> {
        let val = WatchVal {
            flags: if is_dir { WATCH_IS_DIR } else { 0 },
            _pad: 0,
            verified_len: 0,
        };
        self.watch.insert(key, val, 0).map_err(self.full_or("WATCH"))?;
        self.rearm(key)
    }

    fn watch_append(&mut self, key: InodeKey, verified_len: u64) -> Result<(), super::SensorError> {
        let val = WatchVal {
            flags: WATCH_APPEND_ONLY,
            _pad: 0,
            verified_len,
        };
        Ok(self.watch.insert(key, val, 0).map_err(self.full_or("WATCH"))?)
    }

    fn take_violations(&mut self, key: &InodeKey) -> u32 {
        // Read, then delete: a flag set in between is lost only if the same kind of write
        // raced the verification that this read starts.
        let v = self.violations.get(key, 0).unwrap_or(0);
        if v != 0 {
            let _ = self.violations.remove(key);
        }
        v
    }

    fn unwatch(&mut self, key: &InodeKey) {
        self.mapped_candidates.remove(key);
        self.mappings.forget(key);
        let _ = self.watch.remove(key);
        let _ = self.armed.remove(key);
        let _ = self.pending.remove(key);
        let _ = self.violations.remove(key);
    }

    fn rearm(&mut self, key: InodeKey) -> Result<(), super::SensorError> {
        // What piled up since the record is superseded by the rescan that follows.
        let _ = self.pending.remove(&key);
        Ok(self.armed.insert(key, 1, 0).map_err(self.full_or("ARMED"))?)
    }

    fn kernel_bytes(&self) -> u64 {
        bpf_map_memlock()
    }

    fn maps_blocked(&self) -> (usize, u64) {
        self.mappings.blocked()
    }

    fn lost(&self) -> u64 {
        // A full PENDING map loses only the best-effort count; the record still goes out.
        self.counters()[COUNTER_RB_DROPS as usize]
    }
}

/// The `memlock` bytes of every BPF map this process holds, from /proc/self/fdinfo (a map's
/// fdinfo has `map_type:` and `memlock:` lines: kernel/bpf/syscall.c, bpf_map_show_fdinfo).
fn bpf_map_memlock() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| info.contains("map_type:"))
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Tracepoints attach through tracefs; mount it where the kernel documents it if nobody has.
fn ensure_tracefs() -> Result<(), EbpfError> {
    let dir = std::path::Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() || std::path::Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        dir,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        EbpfError::Load(format!(
            "tracefs is not mounted and mounting it on {} failed: {e}",
            dir.display()
        ))
    })
}

fn attach_error(
    program: &'static str,
    category: &'static str,
    name: &'static str,
) -> impl Fn(String) -> EbpfError {
    move |reason| EbpfError::Attach {
        program,
        category,
        name,
        reason,
    }
}

/// The program `program` of the object, as its expected type.
fn find_program<'e, P>(
    ebpf: &'e mut Ebpf,
    program: &'static str,
    category: &'static str,
    name: &'static str,
) -> Result<&'e mut P, EbpfError>
where
    &'e mut P: TryFrom<&'e mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let err = attach_error(program, category, name);
    ebpf.program_mut(program)
        .ok_or_else(|| err("not in the object".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| err(e.to_string()))
}

/// Loads `program` (a raw tracepoint program of the object) and attaches it to `tracepoint`.
fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
    tracepoint: &'static str,
) -> Result<(), EbpfError> {
    let err = attach_error(program, "raw_tracepoint", tracepoint);
    let prog: &mut RawTracePoint = find_program(ebpf, program, "raw_tracepoint", tracepoint)?;
    prog.load()
        .map_err(|e| EbpfError::Load(format!("{program}: {e:#}")))?;
    prog.attach(tracepoint).map_err(|e| err(format!("{e}")))?;
    Ok(())
}
