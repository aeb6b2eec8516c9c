//! `cargo xtask test`: set up, then formatting, lints, and every test (kernel tests included).
use std::process::Command;

use crate::run_cmd;

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    run_cmd(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    run_cmd(Command::new("cargo").args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    run_cmd(Command::new("cargo").args(["test", "--all-targets"]))?;
    Ok(())
}
