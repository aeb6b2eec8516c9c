//! The eBPF sensor's tiers: which kernel hooks feed the change programs on this kernel, chosen
//! by attaching them (never by reading the kernel version), and the self-check that proves an
//! attached tier reports a change before `auto` settles on it.
//!
//! From the most to the least faithful (docs/sensor-design.md §4b):
//! - `Ctime`: the `ctime_ns_xchg` and `inode_set_ctime_to_ts` tracepoints (Linux 6.13 and later);
//! - `Fentry`: fentry programs on the VFS write path and the atime filter, kprobes on
//!   `current_time` and `inode_set_ctime_current` (5.10 to 6.12, BPF trampolines);
//! - `Kprobe`: the same functions as kprobes, where the kernel has no BPF trampolines.
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::programs::{FEntry, FExit, KProbe};
use monitor_common::{
    ChangeRecord, InodeKey, PROG_CTIME_SET, PROG_CTIME_XCHG, PROG_DIO_COMPLETE, PROG_VFS_ATIME,
    PROG_VFS_CTIME_CURRENT, PROG_VFS_CURRENT_TIME, PROG_VFS_D_DELETE, PROG_VFS_D_INSTANTIATE,
    PROG_VFS_FILE_MODIFIED, PROG_VFS_FILE_UPDATE_TIME, PROG_VFS_KIOCB_MODIFIED, PROG_VFS_POST_SETXATTR,
    PROG_VFS_WRITE_CHECKS, PROGRAMS,
};

use super::btf::KernelBtf;
use super::ebpf::{EbpfError, EbpfSensor, attach_raw_tracepoint, find_program, kernel_dev};

/// One way to feed the change programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Ctime,
    Fentry,
    Kprobe,
}

impl Tier {
    /// Every tier, most faithful first: the order `auto` and `ebpf` try them in.
    pub const ALL: [Tier; 3] = [Tier::Ctime, Tier::Fentry, Tier::Kprobe];

    /// The tier's name, as `FIMD_EBPF_TIER` and the start-up log spell it.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Ctime => "ctime",
            Tier::Fentry => "fentry",
            Tier::Kprobe => "kprobe",
        }
    }

    /// The tiers to try: all of them, or the one `FIMD_EBPF_TIER` names (`ctime`, `fentry`,
    /// `kprobe`). That variable is a test setting, not configuration: it lets the realtime suite
    /// run a lower tier on a kernel where a higher one loads.
    ///
    /// Errors: the variable names no tier.
    pub fn to_try() -> Result<Vec<Tier>, EbpfError> {
        Tier::from_setting(std::env::var("FIMD_EBPF_TIER").ok().as_deref())
    }

    /// `to_try` for the value `setting` of `FIMD_EBPF_TIER` (`None`: unset).
    fn from_setting(setting: Option<&str>) -> Result<Vec<Tier>, EbpfError> {
        match setting {
            None | Some("") => Ok(Tier::ALL.to_vec()),
            Some("ctime") => Ok(vec![Tier::Ctime]),
            Some("fentry") => Ok(vec![Tier::Fentry]),
            Some("kprobe") => Ok(vec![Tier::Kprobe]),
            Some(other) => Err(EbpfError::Load(format!(
                "FIMD_EBPF_TIER={other:?} names no eBPF tier: use ctime, fentry or kprobe"
            ))),
        }
    }
}

/// The VFS functions of the fentry and kprobe tiers: (`PROG_VFS_*`, kernel function, fentry
/// program, kprobe program, returns a struct). fentry cannot attach to a function that returns
/// a struct (`current_time` and `inode_set_ctime_current` return `struct timespec64`; the
/// verifier says "return type STRUCT is unsupported" on 5.10 to 6.12), so the fentry tier
/// attaches those two as kprobes.
const VFS_HOOKS: [(u32, &str, &str, &str, bool); 9] = [
    (
        PROG_VFS_CURRENT_TIME,
        "current_time",
        "",
        "fimd_kp_current_time",
        true,
    ),
    (
        PROG_VFS_CTIME_CURRENT,
        "inode_set_ctime_current",
        "",
        "fimd_kp_ctime_current",
        true,
    ),
    (
        PROG_VFS_FILE_UPDATE_TIME,
        "file_update_time",
        "fimd_fe_file_update_time",
        "fimd_kp_file_update_time",
        false,
    ),
    (
        PROG_VFS_FILE_MODIFIED,
        "file_modified",
        "fimd_fe_file_modified",
        "fimd_kp_file_modified",
        false,
    ),
    (
        PROG_VFS_KIOCB_MODIFIED,
        "kiocb_modified",
        "fimd_fe_kiocb_modified",
        "fimd_kp_kiocb_modified",
        false,
    ),
    (
        PROG_VFS_D_DELETE,
        "d_delete",
        "fimd_fe_d_delete",
        "fimd_kp_d_delete",
        false,
    ),
    (
        PROG_VFS_WRITE_CHECKS,
        "generic_write_checks",
        "fimd_fe_write_checks",
        "fimd_kp_write_checks",
        false,
    ),
    (
        PROG_VFS_D_INSTANTIATE,
        "d_instantiate",
        "fimd_fe_d_instantiate",
        "fimd_kp_d_instantiate",
        false,
    ),
    // Absent in a kernel built without CONFIG_SECURITY (a static inline then): attached where
    // it exists.
    (
        PROG_VFS_POST_SETXATTR,
        "security_inode_post_setxattr",
        "fimd_fe_post_setxattr",
        "fimd_kp_post_setxattr",
        false,
    ),
];

/// The functions a VFS tier cannot work without: the write path's entry points (with
/// `generic_write_checks` for xfs's FMODE_NOCMTIME writers), the atime filter (without it every
/// read of a watched file would be a change), `d_delete` (rmdir's parent directory on 5.10 and
/// 6.1) and `d_instantiate` (tmpfs link's directory).
const REQUIRED: [&str; 7] = [
    "file_update_time",
    "file_modified",
    "generic_write_checks",
    "atime_needs_update",
    "touch_atime",
    "d_delete",
    "d_instantiate",
];

/// Attaches the change hooks of `tier` and returns their names (`<type>/<hook>`) and programs
/// (`PROG_*`, for the probe error counters).
///
/// Errors: `NoHooks` when the ctime tracepoints are missing (`Ctime`), `Attach` or `Load`
/// when a hook the tier needs does not attach.
pub(super) fn attach_change_hooks(
    ebpf: &mut Ebpf,
    btf: &KernelBtf,
    tier: Tier,
) -> Result<(Vec<String>, Vec<u32>), EbpfError> {
    let mut hooks = Vec::new();
    let mut programs = Vec::new();
    if tier == Tier::Ctime {
        if !btf.has_typedef("btf_trace_ctime_ns_xchg") {
            return Err(EbpfError::NoHooks);
        }
        for p in [PROG_CTIME_XCHG, PROG_CTIME_SET, PROG_DIO_COMPLETE] {
            let (program, tracepoint) = PROGRAMS[p as usize];
            attach_raw_tracepoint(ebpf, program, tracepoint)?;
            hooks.push(format!("raw_tracepoint/{tracepoint}"));
            programs.push(p);
        }
        return Ok((hooks, programs));
    }
    for f in REQUIRED {
        if !btf.has_func(f) {
            return Err(EbpfError::Load(format!(
                "the kernel has no out-of-line {f}() (no BTF FUNC), which the {} tier needs",
                tier.name()
            )));
        }
    }
    let aya_btf =
        aya::Btf::from_sys_fs().map_err(|e| EbpfError::Load(format!("reading the kernel's BTF: {e}")))?;
    for (p, function, fentry, kprobe, struct_return) in VFS_HOOKS {
        if !btf.has_func(function) {
            continue;
        }
        programs.push(p);
        if tier == Tier::Fentry && !struct_return {
            attach_fentry(ebpf, &aya_btf, fentry, function)?;
            hooks.push(format!("fentry/{function}"));
        } else {
            attach_kprobe(ebpf, kprobe, function)?;
            hooks.push(format!("kprobe/{function}"));
        }
    }
    // The atime filter: entry marks the reading task, exit clears it.
    programs.push(PROG_VFS_ATIME);
    match tier {
        Tier::Fentry => {
            attach_fentry(ebpf, &aya_btf, "fimd_fe_atime_enter", "atime_needs_update")?;
            attach_fexit(ebpf, &aya_btf, "fimd_fx_atime_exit", "atime_needs_update")?;
            attach_fexit(ebpf, &aya_btf, "fimd_fx_touch_atime", "touch_atime")?;
            hooks.extend([
                "fentry/atime_needs_update".into(),
                "fexit/atime_needs_update".into(),
                "fexit/touch_atime".into(),
            ]);
        }
        _ => {
            attach_kprobe(ebpf, "fimd_kp_atime_enter", "atime_needs_update")?;
            attach_kprobe(ebpf, "fimd_kr_atime_exit", "atime_needs_update")?;
            attach_kprobe(ebpf, "fimd_kr_touch_atime", "touch_atime")?;
            hooks.extend([
                "kprobe/atime_needs_update".into(),
                "kretprobe/atime_needs_update".into(),
                "kretprobe/touch_atime".into(),
            ]);
        }
    }
    // Direct I/O lands after its time update; the tracepoint exists from 6.12 (§4b).
    if btf.has_typedef("btf_trace_iomap_dio_complete") {
        let (program, tracepoint) = PROGRAMS[PROG_DIO_COMPLETE as usize];
        attach_raw_tracepoint(ebpf, program, tracepoint)?;
        hooks.push(format!("raw_tracepoint/{tracepoint}"));
        programs.push(PROG_DIO_COMPLETE);
    }
    Ok((hooks, programs))
}

fn attach_fentry(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    program: &'static str,
    function: &'static str,
) -> Result<(), EbpfError> {
    let prog: &mut FEntry = find_program(ebpf, program, "fentry", function)?;
    prog.load(function, btf)
        .map_err(|e| EbpfError::Load(format!("{program} (fentry/{function}): {e:#}")))?;
    prog.attach()
        .map_err(|e| attach_err(program, "fentry", function, e))?;
    Ok(())
}

fn attach_fexit(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    program: &'static str,
    function: &'static str,
) -> Result<(), EbpfError> {
    let prog: &mut FExit = find_program(ebpf, program, "fexit", function)?;
    prog.load(function, btf)
        .map_err(|e| EbpfError::Load(format!("{program} (fexit/{function}): {e:#}")))?;
    prog.attach()
        .map_err(|e| attach_err(program, "fexit", function, e))?;
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf, program: &'static str, function: &'static str) -> Result<(), EbpfError> {
    let prog: &mut KProbe = find_program(ebpf, program, "kprobe", function)?;
    prog.load()
        .map_err(|e| EbpfError::Load(format!("{program} (kprobe/{function}): {e:#}")))?;
    prog.attach(function, 0)
        .map_err(|e| attach_err(program, "kprobe", function, e))?;
    Ok(())
}

fn attach_err(
    program: &'static str,
    category: &'static str,
    name: &'static str,
    e: aya::programs::ProgramError,
) -> EbpfError {
    EbpfError::Attach {
        program,
        category,
        name,
        reason: format!("{e:#}"),
    }
}

/// Loads the most faithful eBPF tier that works here, of `Tier::to_try()`: the ctime
/// tracepoints as they are; a lower tier only once it passed `self_check` (in `scratch`, a
/// writable directory: see `SensorSpec::scratch`).
///
/// Errors: `NoTier` with each tier's reason.
pub fn load_best(
    ring_bytes: u32,
    append_hooks: bool,
    capacity: u32,
    scratch: &std::path::Path,
) -> Result<EbpfSensor, EbpfError> {
    let mut failures: Vec<(&'static str, EbpfError)> = Vec::new();
    for tier in Tier::to_try()? {
        let loaded = EbpfSensor::load(ring_bytes, append_hooks, capacity, |ebpf, btf| {
            attach_change_hooks(ebpf, btf, tier)
        })
        .and_then(|mut s| {
            if tier != Tier::Ctime {
                self_check(&mut s, scratch)?;
            }
            Ok(s)
        });
        match loaded {
            Ok(s) => {
                // Why the more faithful tiers were passed over, for the start-up log.
                for (t, e) in &failures {
                    eprintln!("fimd: eBPF tier {t} not used: {e}");
                }
                return Ok(s);
            }
            Err(e) => failures.push((tier.name(), e)),
        }
    }
    Err(EbpfError::NoTier(failures))
}

/// How long the self-check waits for its own write's record.
const SELF_CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// Proves the attached hooks report: watches a fresh file in `scratch` (unlinked at once),
/// writes to it, and waits for the record naming this process. The file is gone afterwards.
///
/// Errors: `SelfCheck` when no record arrives within `SELF_CHECK_DEADLINE` or it names
/// another process; `Load` when the temporary file cannot be made.
pub(super) fn self_check(sensor: &mut EbpfSensor, scratch: &std::path::Path) -> Result<(), EbpfError> {
    use super::Sensor as _;
    let template = scratch.join(".fimd-self-check-XXXXXX");
    let (fd, path) = nix::unistd::mkstemp(&template).map_err(|e| {
        EbpfError::Load(format!(
            "self-check: creating a file like {}: {e}",
            template.display()
        ))
    })?;
    // Unnamed at once: only this descriptor reaches it, and nothing is left behind.
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| EbpfError::Load(format!("self-check: fstat: {e}")))?;
    let key = InodeKey {
        dev: kernel_dev(meta.dev()),
        _pad: 0,
        ino: meta.ino(),
    };
    sensor
        .watch(key, b"(self-check)", false)
        .map_err(|e| EbpfError::Load(format!("self-check: watching the temporary file: {e}")))?;
    let result = (|| {
        file.write_all(b"fimd self-check\n")
            .map_err(|e| EbpfError::Load(format!("self-check: writing the temporary file: {e}")))?;
        let start = Instant::now();
        let mut records: Vec<ChangeRecord> = Vec::new();
        while start.elapsed() < SELF_CHECK_DEADLINE {
            records.clear();
            sensor.drain(&mut records);
            if let Some(r) = records.iter().find(|r| r.key == key) {
                return if r.tgid == std::process::id() {
                    Ok(())
                } else {
                    Err(EbpfError::SelfCheck(format!(
                        "the record of fimd's own write names pid {}, not {}",
                        r.tgid,
                        std::process::id()
                    )))
                };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(EbpfError::SelfCheck(format!(
            "a write to a watched file gave no record within {SELF_CHECK_DEADLINE:?}"
        )))
    })();
    sensor.unwatch(&key);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tier_setting_names_one_tier_or_all() {
        assert_eq!(Tier::from_setting(None).unwrap(), Tier::ALL.to_vec());
        assert_eq!(Tier::from_setting(Some("")).unwrap(), Tier::ALL.to_vec());
        for t in Tier::ALL {
            assert_eq!(Tier::from_setting(Some(t.name())).unwrap(), vec![t]);
        }
        let e = Tier::from_setting(Some("fexit")).unwrap_err().to_string();
        assert!(
            e.contains("FIMD_EBPF_TIER") && e.contains("ctime, fentry or kprobe"),
            "{e}"
        );
    }

    #[test]
    fn every_vfs_hook_names_its_programs_and_counter_slot() {
        for (p, function, fentry, kprobe, struct_return) in VFS_HOOKS {
            // The counter slot's label is the program attached by the fentry tier.
            let label = if struct_return { kprobe } else { fentry };
            assert_eq!(PROGRAMS[p as usize], (label, function));
            assert!(kprobe.starts_with("fimd_kp_"), "{kprobe}");
            assert_eq!(fentry.is_empty(), struct_return, "{function}");
        }
        assert_eq!(PROGRAMS[PROG_VFS_ATIME as usize].1, "atime_needs_update");
    }
}
