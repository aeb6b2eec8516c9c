//! Developer tasks: `cargo xtask setup | demo | test | bench …`.
mod bench;
mod demo;
#[path = "../../monitor/ebpf_toolchain.rs"]
mod ebpf_toolchain;
mod faults;
mod kernel;
mod setup;
mod test;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every prerequisite on a fresh Debian machine (idempotent).
    Setup,
    /// Set up, build, and show fimd catching a change in a sample tree.
    Demo,
    /// Set up, then run formatting, lints, every test and the QEMU kernel matrix.
    Test {
        /// Only the guest checks on these kernels (5.10, 6.1, 6.12), under QEMU.
        #[arg(long)]
        kernel: Vec<String>,
    },
    /// Inject faults into a running `fimd run` while changing its tree; count lost changes.
    Faults {
        /// The fimd binary to test (default: build the release one).
        #[arg(long)]
        fimd: Option<PathBuf>,
    },
    /// The demo's intruder: makes the changes named on stdin under DIR (run by `demo`).
    #[command(hide = true)]
    DemoWriter { dir: PathBuf },
    /// Benchmarks against peers, side by side.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Demo => demo::run(),
        Task::Test { kernel } => test::run(&kernel),
        Task::Faults { fimd } => faults::run(fimd),
        Task::DemoWriter { dir } => demo::writer(&dir),
        Task::Bench { which } => bench::run(which),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_owned()
}

/// Runs a command in the workspace root, echoing it, failing on a non-zero exit.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: $ {}", show(cmd));
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(())
}

pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Builds the release `fimd` and returns its path.
pub fn build_fimd() -> anyhow::Result<PathBuf> {
    run_cmd(Command::new("cargo").args(["build", "--release", "--quiet", "-p", "monitor", "--bin", "fimd"]))?;
    Ok(root().join("target/release/fimd"))
}
