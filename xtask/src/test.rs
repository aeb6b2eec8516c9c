//! `cargo xtask test`: set up, then formatting, lints, every test (kernel tests included), the
//! fault suite (`cargo xtask faults`) and the QEMU kernel matrix; `--kernel V` runs only the
//! guest checks on kernel V.
use std::process::Command;

use crate::run_cmd;

pub fn run(kernels: &[String]) -> anyhow::Result<()> {
    crate::setup::run()?;
    if !kernels.is_empty() {
        return crate::kernel::run(kernels);
    }
    run_cmd(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    run_cmd(Command::new("cargo").args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    run_cmd(Command::new("cargo").args(["test", "--all-targets"]))?;
    // Faults injected into a running daemon: zero changes lost, SIGTERM always works.
    crate::faults::run(None)?;
    crate::kernel::run(&[])
}
