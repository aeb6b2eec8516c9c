//! Loading fimd's eBPF object (built by `build.rs` with aya-build and embedded in the binary).
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use monitor_common::{
    COUNTER_RB_DROPS, ChangeRecord, InodeKey, KERNEL_LAYOUT_GLOBAL, KernelLayout, PROG_SYS_ENTER,
    PROG_URING_COMPLETE, PROG_URING_FILE, PROGRAMS, WATCH_APPEND_ONLY, WATCH_IS_DIR, WatchVal,
    counter_probe_errors,
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
        "this kernel has no timestamp tracepoints (btf_trace_ctime_ns_xchg, Linux 6.13 and newer): \
         the ctime tier cannot attach"
    )]
    NoHooks,
    /// An attached tier below the ctime tracepoints did not report fimd's own test write
    /// (sensor/tier.rs), so `auto` must not rely on it.
    #[error("the eBPF hooks attached but the self-check failed: {0}")]
    SelfCheck(String),
    /// No eBPF tier loads: each one's reason, most faithful first.
    #[error("no eBPF tier works here: {}", .0.iter().map(|(t, e)| format!("{t}: {e}")).collect::<Vec<_>>().join("; "))]
    NoTier(Vec<(&'static str, EbpfError)>),
    #[error("eBPF map {name}: {reason}")]
    Map { name: &'static str, reason: String },
    /// A map is full (bpf_map_update_elem: E2BIG): the inode cannot be watched in the kernel.
    #[error(
        "the eBPF map {name} is full ({capacity} inodes): raise [realtime] max_watched_inodes \
         (about {BYTES_PER_WATCHED_INODE} bytes of kernel memory each)"
    )]
    Full { name: &'static str, capacity: u32 },
    /// This inode cannot be watched by the kernel programs (sensor/btrfs.rs).
    #[error("cannot watch {path} in the kernel: {reason}")]
    Unsupported { path: String, reason: String },
}

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

/// The running kernel's layout as the programs need it (`monitor_common::KernelLayout`):
/// member offsets from its BTF, and this architecture's system call numbers (libc's, which
/// match the kernel fimd was built for).
///
/// Errors: a struct or member the programs need is missing from the BTF (btrfs and io_uring
/// types are optional: their flags are 0 without them), or the architecture is not supported.
pub fn layout_from_btf(btf: &KernelBtf) -> Result<KernelLayout, EbpfError> {
    let btrfs = match (
        btf.member_offset("btrfs_inode", "vfs_inode"),
        btf.member_offset("btrfs_inode", "root"),
        btf.member_offset("btrfs_root", "anon_dev"),
    ) {
        (Ok(a), Ok(b), Ok(c)) => Some((a, b, c)),
        _ => None,
    };
    let (btrfs_inode_vfs_inode, btrfs_inode_root, btrfs_root_anon_dev) = btrfs.unwrap_or_default();
    let io_kiocb_file = btf.member_offset("io_kiocb", "file").ok();
    let nr = |n: libc::c_long| n as u32;
    Ok(KernelLayout {
        inode_i_sb: btf.member_offset("inode", "i_sb")?,
        inode_i_ino: btf.member_offset("inode", "i_ino")?,
        inode_i_mapping: btf.member_offset("inode", "i_mapping")?,
        inode_i_size: btf.member_offset("inode", "i_size")?,
        sb_s_dev: btf.member_offset("super_block", "s_dev")?,
        sb_s_magic: btf.member_offset("super_block", "s_magic")?,
        as_i_mmap_writable: btf.member_offset("address_space", "i_mmap_writable")?,
        btrfs: u32::from(btrfs.is_some()),
        btrfs_inode_vfs_inode,
        btrfs_inode_root,
        btrfs_root_anon_dev,
        kiocb_ki_filp: btf.member_offset("kiocb", "ki_filp")?,
        file_f_inode: btf.member_offset("file", "f_inode")?,
        file_f_mode: btf.member_offset("file", "f_mode")?,
        file_f_pos: btf.member_offset("file", "f_pos")?,
        file_f_flags: btf.member_offset("file", "f_flags")?,
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdt_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdt_fd: btf.member_offset("fdtable", "fd")?,
        io_kiocb: u32::from(io_kiocb_file.is_some()),
        io_kiocb_file: io_kiocb_file.unwrap_or(0),
        regs_args: syscall_args(btf)?,
        nr_write: nr(libc::SYS_write),
        nr_writev: nr(libc::SYS_writev),
        nr_pwrite64: nr(libc::SYS_pwrite64),
        nr_pwritev: nr(libc::SYS_pwritev),
        nr_pwritev2: nr(libc::SYS_pwritev2),
        nr_sendfile: nr(libc::SYS_sendfile),
        nr_splice: nr(libc::SYS_splice),
        nr_copy_file_range: nr(libc::SYS_copy_file_range),
        nr_fallocate: nr(libc::SYS_fallocate),
        dentry_d_parent: btf.member_offset("dentry", "d_parent")?,
        dentry_d_inode: btf.member_offset("dentry", "d_inode")?,
        inode_i_nlink: btf.member_offset("inode", "i_nlink")?,
    })
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
    /// `<program type>/<hook>` of every attached program, in attach order.
    hooks: Vec<String>,
    /// Every attached program (`monitor_common::PROG_*`), in attach order.
    programs: Vec<u32>,
    watch: HashMap<MapData, InodeKey, WatchVal>,
    armed: HashMap<MapData, InodeKey, u32>,
    violations: HashMap<MapData, InodeKey, u32>,
    counters: PerCpuArray<MapData, u64>,
    events: RingBuf<MapData>,
    /// Refuses btrfs watches when the btrfs types are unknown.
    btrfs: super::btrfs::Guard,
}

/// Ring buffer size when the configuration names none: 4 MiB, about 50,000 records.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// Kernel memory per watched inode, bytes: one WATCH and one ARMED hash map entry (a 16-byte
/// key, a 16- and a 4-byte value, and the kernel's per-element overhead), measured as the maps'
/// `memlock` in /proc/self/fdinfo on 6.18: 200,225 KiB at 1,048,576 entries against 23,585 KiB
/// at 65,536 (VIOLATIONS, and the since removed PENDING, stop growing there: an upper bound).
pub const BYTES_PER_WATCHED_INODE: u32 = 184;

/// VIOLATIONS holds the append-only files with a flag not yet taken: far fewer than the
/// watched inodes. A full VIOLATIONS makes the daemon verify a log whole.
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
    /// `attach_change` attaches one tier's change hooks and returns their names and programs
    /// (`sensor/tier.rs` chooses the tier and runs its self-check: this loader knows no tiers).
    pub fn load(
        ring_bytes: u32,
        append_hooks: bool,
        capacity: u32,
        attach_change: impl FnOnce(&mut aya::Ebpf, &KernelBtf) -> Result<(Vec<String>, Vec<u32>), EbpfError>,
    ) -> Result<EbpfSensor, EbpfError> {
        ensure_tracefs()?;
        let mut btf = KernelBtf::from_sys_fs()?;
        // btrfs built as a module: its types are in its own BTF.
        super::btrfs::add_types(&mut btf)?;
        let layout = layout_from_btf(&btf)?;
        let mut ebpf = EbpfLoader::new()
            .override_global(KERNEL_LAYOUT_GLOBAL, &layout, true)
            .map_max_entries("EVENTS", ring_bytes)
            .map_max_entries("WATCH", capacity)
            .map_max_entries("ARMED", capacity)
            // Written only for append-only inodes, which exist only with the append hooks.
            .map_max_entries(
                "VIOLATIONS",
                if append_hooks {
                    capacity.min(VIOLATIONS_MAX)
                } else {
                    1
                },
            )
            .load(OBJECT)
            .map_err(|e| {
                EbpfError::Load(format!(
                    "{e:#} (maps for {capacity} inodes need about {} MiB of kernel memory: if the kernel \
                     refused them, lower [realtime] max_watched_inodes or raise the memory limit)",
                    (u64::from(capacity) * u64::from(BYTES_PER_WATCHED_INODE)) >> 20
                ))
            })?;
        let (mut hooks, mut programs) = attach_change(&mut ebpf, &btf)?;
        let first_append = programs.len();
        if append_hooks {
            programs.extend([PROG_SYS_ENTER, PROG_URING_FILE]);
            if layout.io_kiocb != 0 {
                programs.push(PROG_URING_COMPLETE);
            }
        }
        for &p in &programs[first_append..] {
            let (program, tracepoint) = PROGRAMS[p as usize];
            attach_raw_tracepoint(&mut ebpf, program, tracepoint)?;
            hooks.push(format!("raw_tracepoint/{tracepoint}"));
        }
        let sensor = EbpfSensor {
            capacity,
            mapped_candidates: std::collections::HashMap::new(),
            mappings: super::mappings::MappedFiles::default(),
            watch: HashMap::try_from(take_map(&mut ebpf, "WATCH")?).map_err(map_err("WATCH"))?,
            armed: HashMap::try_from(take_map(&mut ebpf, "ARMED")?).map_err(map_err("ARMED"))?,
            violations: HashMap::try_from(take_map(&mut ebpf, "VIOLATIONS")?)
                .map_err(map_err("VIOLATIONS"))?,
            counters: PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?).map_err(map_err("COUNTERS"))?,
            events: RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?,
            hooks,
            programs,
            btrfs: super::btrfs::Guard::new(layout.btrfs != 0),
            _ebpf: ebpf,
        };
        Ok(sensor)
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

    /// Counter slot `slot` (`monitor_common::COUNTER_*`) summed over CPUs; 0 if unreadable.
    fn counter(&self, slot: u32) -> u64 {
        self.counters.get(&slot, 0).map_or(0, |v| v.iter().sum())
    }
}

impl super::Sensor for EbpfSensor {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn hooks(&self) -> Vec<String> {
        self.hooks.clone()
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

    fn watch(&mut self, key: InodeKey, path: &[u8], is_dir: bool) -> Result<(), super::SensorError> {
        self.btrfs.check(&key, path, is_dir)?;
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
        let _ = self.violations.remove(key);
    }

    fn rearm(&mut self, key: InodeKey) -> Result<(), super::SensorError> {
        Ok(self.armed.insert(key, 1, 0).map_err(self.full_or("ARMED"))?)
    }

    fn kernel_bytes(&self) -> u64 {
        bpf_map_memlock()
    }

    fn maps_blocked(&self) -> (usize, u64) {
        self.mappings.blocked()
    }

    /// Records the ring had no room for, plus every failed kernel read of any program: a
    /// change program that gives up may have missed a change, an append check a write, so
    /// both are losses the daemon repairs with a rescan. Reads of live kernel objects fail
    /// only on a layout mismatch, so this stays 0 in practice (tested).
    fn lost(&self) -> u64 {
        let errors: u64 = self.probe_errors().iter().map(|&(_, n)| n).sum();
        self.counter(COUNTER_RB_DROPS) + errors
    }

    fn probe_errors(&self) -> Vec<(&'static str, u64)> {
        let count = |&p: &u32| (PROGRAMS[p as usize].0, self.counter(counter_probe_errors(p)));
        self.programs.iter().map(count).collect()
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
pub(super) fn find_program<'e, P>(
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
pub(super) fn attach_raw_tracepoint(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::Sensor as _;
    use std::io::Write as _;
    use std::os::unix::fs::MetadataExt as _;

    /// Without root (or a kernel with the ctime tracepoints) the test is skipped, unless the
    /// run demands it.
    fn load() -> Option<EbpfSensor> {
        match super::super::tier::load_best(DEFAULT_RING_BYTES, true, 1024, &std::env::temp_dir()) {
            Ok(s) => Some(s),
            Err(e) if std::env::var("FIMD_REQUIRE_PRIVILEGED").as_deref() == Ok("1") => {
                panic!("FIMD_REQUIRE_PRIVILEGED=1 but the eBPF sensor does not load: {e}")
            }
            Err(e) => {
                println!("SKIPPED: the eBPF sensor does not load: {e}");
                None
            }
        }
    }

    #[test]
    fn layout_comes_from_the_running_kernels_btf() {
        let Ok(btf) = KernelBtf::from_sys_fs() else {
            println!("SKIPPED: no kernel BTF");
            return;
        };
        let layout = layout_from_btf(&btf).unwrap();
        assert_eq!(layout.inode_i_ino, btf.member_offset("inode", "i_ino").unwrap());
        assert_eq!(layout.file_f_inode, btf.member_offset("file", "f_inode").unwrap());
        assert_eq!(layout.nr_pwrite64, libc::SYS_pwrite64 as u32);
        // Distinct members of one struct have distinct offsets: no field was left unset.
        let inode = [
            layout.inode_i_sb,
            layout.inode_i_ino,
            layout.inode_i_mapping,
            layout.inode_i_size,
        ];
        let distinct: std::collections::HashSet<_> = inode.iter().collect();
        assert_eq!(distinct.len(), inode.len(), "{layout:?}");
        assert_ne!(layout, KernelLayout::UNSET);
    }

    /// The per-program probe error counters are read from the kernel's COUNTERS map for every
    /// attached program, and real changes of a watched file, reported, leave them at 0.
    #[test]
    fn probe_errors_are_read_per_attached_program() {
        let Some(mut sensor) = load() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watched");
        std::fs::write(&path, b"one").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let key = InodeKey {
            dev: kernel_dev(meta.dev()),
            _pad: 0,
            ino: meta.ino(),
        };
        sensor.watch(key, b"watched", false).unwrap();
        sensor.watch_append(key, 3).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"two")
            .unwrap();
        let mut records = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !records.iter().any(|r: &ChangeRecord| r.key == key) && std::time::Instant::now() < deadline {
            sensor.drain(&mut records);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let r = records
            .iter()
            .find(|r| r.key == key)
            .expect("a record for the watched file");
        assert_eq!(r.tgid, std::process::id());
        let errors = sensor.probe_errors();
        let names: Vec<&str> = errors.iter().map(|(p, _)| *p).collect();
        for program in [
            "fimd_ctime_xchg",
            "fimd_ctime_set",
            "fimd_dio_complete",
            "fimd_sys_enter",
        ] {
            assert!(names.contains(&program), "{program} missing: {errors:?}");
        }
        assert_eq!(errors.len(), sensor.hooks().len(), "{errors:?}");
        assert!(errors.iter().all(|(_, n)| *n == 0), "{errors:?}");
        assert_eq!(sensor.lost(), 0);
        // The metric exports what the sensor read.
        let metrics = crate::telemetry::metrics::Metrics::new();
        metrics.set_probe_errors(&errors);
        let text = metrics.encode();
        assert!(
            text.contains("fim_sensor_probe_errors_total{program=\"fimd_sys_enter\"} 0\n"),
            "{text}"
        );
    }
}
