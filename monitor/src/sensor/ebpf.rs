//! Loading fimd's eBPF object (built by `build.rs` with aya-build and embedded in the binary).
use aya::maps::Array;
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use monitor_common::{SELFTEST_SLOT, SELFTEST_TGID_GLOBAL};

/// The object compiled from monitor-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "cannot load the eBPF programs: {0}; fimd needs root, or CAP_BPF, CAP_PERFMON and \
         CAP_SYS_RESOURCE, and a kernel with BTF (/sys/kernel/btf/vmlinux)"
    )]
    Load(String),
    #[error("cannot attach {program} to {category}/{name}: {reason}")]
    Attach {
        program: &'static str,
        category: &'static str,
        name: &'static str,
        reason: String,
    },
    #[error("eBPF self-test failed: {0}")]
    Selftest(String),
}

fn load(tgid: u32) -> Result<Ebpf, EbpfError> {
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(EbpfError::Load(
            "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing)".into(),
        ));
    }
    EbpfLoader::new()
        .override_global(SELFTEST_TGID_GLOBAL, &tgid, true)
        .load(OBJECT)
        .map_err(|e| EbpfError::Load(format!("{e:#}")))
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

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
    category: &'static str,
    name: &'static str,
) -> Result<(), EbpfError> {
    let err = |reason: String| EbpfError::Attach {
        program,
        category,
        name,
        reason,
    };
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| err("not in the object".into()))?
        .try_into()
        .map_err(|e| err(format!("{e}")))?;
    prog.load()
        .map_err(|e| EbpfError::Load(format!("{program}: {e:#}")))?;
    prog.attach(category, name).map_err(|e| err(format!("{e}")))?;
    Ok(())
}

/// Proves the whole pipeline: the embedded object loads, passes the verifier, attaches to a
/// syscall tracepoint, and counts this process's calls in a map userspace reads.
pub fn selftest() -> Result<u64, EbpfError> {
    let tgid = std::process::id();
    ensure_tracefs()?;
    let mut ebpf = load(tgid)?;
    attach_tracepoint(&mut ebpf, "fimd_selftest", "syscalls", "sys_enter_fchmodat")?;
    const CALLS: u64 = 3;
    for _ in 0..CALLS {
        // A path that does not exist: the tracepoint fires on entry, nothing is changed.
        // SAFETY: plain system call with a valid NUL-terminated path.
        unsafe {
            libc::syscall(
                libc::SYS_fchmodat,
                libc::AT_FDCWD,
                c"/nonexistent/fimd-selftest".as_ptr(),
                0o644,
            );
        }
    }
    let map = ebpf
        .map("SELFTEST_HITS")
        .ok_or_else(|| EbpfError::Selftest("map SELFTEST_HITS is missing".into()))?;
    let hits: Array<_, u64> = Array::try_from(map).map_err(|e| EbpfError::Selftest(e.to_string()))?;
    let n = hits
        .get(&SELFTEST_SLOT, 0)
        .map_err(|e| EbpfError::Selftest(e.to_string()))?;
    if n != CALLS {
        return Err(EbpfError::Selftest(format!(
            "counted {n} fchmodat calls, made {CALLS}"
        )));
    }
    Ok(n)
}
