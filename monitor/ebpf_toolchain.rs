//! The pinned eBPF toolchain, read from `ebpf-toolchain.toml` at the workspace root.
//!
//! One definition for its two readers: `monitor/build.rs` (which nightly aya-build runs) and
//! `cargo xtask setup` (what it installs and checks). Included by path, not a crate, because a
//! build script cannot depend on the crate it builds.
use std::path::Path;

use anyhow::Context as _;

/// The file's name, at the workspace root.
pub const FILE: &str = "ebpf-toolchain.toml";

/// What `ebpf-toolchain.toml` pins.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EbpfToolchain {
    /// A dated rustup toolchain, e.g. `nightly-2026-05-20`: never the floating `nightly`.
    pub nightly: String,
    /// The LLVM major shared by that nightly, Debian's `llvm-<N>-dev` and bpf-linker's
    /// `llvm-<N>` cargo feature: bpf-linker reads the nightly's bitcode only when they agree.
    pub llvm: u32,
    /// The bpf-linker release installed with `cargo install`.
    pub bpf_linker: String,
}

impl EbpfToolchain {
    /// Reads and checks `<root>/ebpf-toolchain.toml`.
    ///
    /// Errors: the file is missing or unreadable, is not valid TOML with exactly these keys, or
    /// names a floating toolchain (`nightly` without a date).
    pub fn load(root: &Path) -> anyhow::Result<EbpfToolchain> {
        let path = root.join(FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let pin: EbpfToolchain = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let date = pin.nightly.strip_prefix("nightly-").unwrap_or("");
        let dated = date.len() == 10
            && date.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        if !dated {
            anyhow::bail!(
                "{}: nightly = {:?}: name a dated nightly such as \"nightly-2026-05-20\"; the floating \
                 \"nightly\" changes its LLVM without notice and bpf-linker then cannot read its bitcode",
                path.display(),
                pin.nightly
            );
        }
        Ok(pin)
    }
}
