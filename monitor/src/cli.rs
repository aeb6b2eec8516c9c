//! Command-line interface: parse, dispatch, and map errors to exit status 2.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{self, EXIT_CLEAN, EXIT_ERROR, check::Target};
use crate::config::Settings;

#[derive(Parser)]
#[command(
    name = "fimd",
    version,
    about = "File integrity monitor: baseline, compare, alert"
)]
struct Cli {
    /// Configuration file.
    #[arg(short, long, global = true, default_value = "/etc/fimd/fimd.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build and seal the baseline.
    Init {
        /// Read a mounted golden image or snapshot whose contents stand for the host's paths.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Compare the host with the baseline (exit 0 clean, 1 differences, 2 error).
    Check {
        /// One JSON alert object per line.
        #[arg(long)]
        json: bool,
    },
    /// Compare a read-only snapshot or mounted image with the baseline, writing nothing to it.
    Verify {
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Take approved changes (all, or under the paths given) into the baseline.
    Accept {
        /// Why, recorded in the baseline's history.
        #[arg(long)]
        reason: Option<String>,
        paths: Vec<PathBuf>,
    },
    /// Print the baseline.
    Baseline {
        #[command(subcommand)]
        what: BaselineCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// The realtime daemon: report each change of a watched file as it happens, with who made it.
    Run,
    /// Evidence for an auditor: every full comparison (when, how many files, what was found,
    /// which baseline), its integrity chain verified, and whether one is overdue.
    Report {
        /// One JSON object per comparison.
        #[arg(long)]
        json: bool,
    },
    /// Load and attach the sensor `fimd run` would use here, change a file in a temporary
    /// directory from child processes, and show each change arriving with the writer's pid.
    /// Exit 2 with the reason when no realtime sensor can work on this host.
    Selftest,
}

#[derive(Subcommand)]
enum BaselineCommand {
    /// JSON lines, one per entry.
    Show,
    /// `sha256sum -c` compatible lines.
    Export,
    /// The baseline's history (init and every accepted change: when, who, why) as JSON lines.
    History,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and exit.
    Check,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fimd: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    raise_fd_limit();
    if let Command::Selftest = cli.command {
        // The configured sensor choice when a configuration is there to read, else `auto`.
        let choice = if cli.config.exists() {
            Settings::load(&cli.config)?.sensor
        } else {
            crate::config::SensorChoice::default()
        };
        let report = crate::sensor::selftest::run(choice)?;
        println!("sensor: {}", report.sensor);
        println!("hooks:  {}", report.hooks.join(", "));
        for o in &report.observed {
            println!(
                "{:<9} by {} (pid {}): record from pid {} ({}) via {} after {:.1} ms{}",
                o.action,
                o.program,
                o.pid,
                o.record_pid,
                o.comm,
                o.hook,
                o.latency.as_secs_f64() * 1e3,
                if o.violations & monitor_common::VIOLATION_WRITE_BELOW != 0 {
                    ", flagged below the verified length"
                } else if o.violations & monitor_common::VIOLATION_UNSEEN != 0 {
                    ", offsets unseen: appends are verified by reading the whole file"
                } else {
                    ""
                }
            );
        }
        println!(
            "realtime sensor OK: `fimd run` will use {} on this host",
            report.sensor
        );
        return Ok(ExitCode::from(EXIT_CLEAN));
    }
    let settings = Settings::load(&cli.config)?;
    match cli.command {
        Command::Init { root } => commands::init::run(&settings, root.as_deref().unwrap_or(Path::new("/"))),
        Command::Run => commands::run::run(&settings),
        Command::Report { json } => commands::report::run(&settings, json),
        Command::Check { json } => commands::check::run(&settings, Target::Host, json),
        Command::Verify { root, json } => commands::check::run(&settings, Target::Image(&root), json),
        Command::Accept { reason, paths } => commands::accept::run(&settings, &paths, reason.as_deref()),
        Command::Baseline { what } => match what {
            BaselineCommand::Show => commands::baseline::show(&settings),
            BaselineCommand::Export => commands::baseline::export(&settings),
            BaselineCommand::History => commands::baseline::history(&settings),
        },
        Command::Config {
            what: ConfigCommand::Check,
        } => {
            settings.check_paths_exist(Path::new("/"))?;
            println!(
                "{}: valid, {} watches, state in {}",
                settings.source.display(),
                settings.watches.len(),
                settings.state_dir.display()
            );
            for w in settings.watches.iter().filter(|w| !w.exclude.own.is_empty()) {
                let own: Vec<String> = w.exclude.own.iter().map(|o| o.describe()).collect();
                println!(
                    "  watch {} leaves out fimd's own files: {}",
                    w.path.display(),
                    own.join(", ")
                );
            }
            Ok(ExitCode::from(EXIT_CLEAN))
        }
        Command::Selftest => unreachable!("handled above"),
    }
}

/// The walk holds one descriptor per open directory: allow as many as the hard limit.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(1 << 20), hard);
    }
}
