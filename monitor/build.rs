//! Builds the eBPF object (monitor-ebpf) with aya-build so `cargo build` yields one binary,
//! using the dated nightly pinned in `ebpf-toolchain.toml`, never whatever "nightly" is today.
use anyhow::Context as _;

#[path = "ebpf_toolchain.rs"]
mod ebpf_toolchain;

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("monitor/ has no parent directory")?;
    let ebpf_dir = root.join("monitor-ebpf");
    let common_dir = root.join("monitor-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join(ebpf_toolchain::FILE).display()
    );
    let pin = ebpf_toolchain::EbpfToolchain::load(root)?;
    let ebpf_dir = ebpf_dir.to_str().context("workspace path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "monitor-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&pin.nightly),
    )
    .with_context(|| {
        format!(
            "building the eBPF programs with {} (run `cargo xtask setup`: it installs that toolchain \
             and bpf-linker {} for LLVM {})",
            pin.nightly, pin.bpf_linker, pin.llvm
        )
    })
}
