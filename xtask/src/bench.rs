//! `cargo xtask bench …`: fimd side by side with its peers, printing ratios.
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Which {
    /// `fimd init`/`check` against `aide --init`/`--check` on one tree.
    Baseline,
}

pub fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Baseline => anyhow::bail!("not written yet"),
    }
}
