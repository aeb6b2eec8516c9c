//! `cargo xtask bench realtime --kernel VERSION…`: the writer overhead of each fimd sensor tier
//! inside QEMU guests booted on Debian's kernels (the harness of `cargo xtask test --kernel`,
//! xtask/src/kernel.rs), as ratios only: under software emulation absolute times mean nothing,
//! but a writer's time under fimd over its time without fimd, measured minutes apart in the same
//! guest, does.
//!
//! The guest (`guest.sh`) times four workloads of `workload.c` on an ext4 filesystem: 1-byte
//! writes to an unwatched file, the same to a watched file, 1-byte reads of the watched file,
//! and creations + unlinks in the watched directory. It runs them with no fimd, then under
//! `fimd run` with the fentry tier, the kprobe tier (both `sensor = "ebpf"`, chosen with
//! `FIMD_EBPF_TIER`) and forced fanotify, in rounds whose order alternates (none first, then
//! none last). Each tier's ratio is taken against the no-fimd run of its own round, and the
//! median over the rounds is printed, with the kernel records fimd drained during each
//! workload and the alerts per run, which prove the tier was active.
//!
//! A kernel that does not boot, a tier that does not load or attaches another sensor than
//! asked, a workload that fails, or a tier that drained no record at all is an error: the
//! other kernels are still measured, then the command fails naming them.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{Tier, load_average};
use crate::kernel::{self, Payload};

/// The workloads, as the guest names them, and their row titles.
const WORKLOADS: &[(&str, &str)] = &[
    ("unwatched", "1-byte writes, unwatched file"),
    ("watched", "1-byte writes, watched file"),
    ("read", "1-byte reads, watched file"),
    ("create", "create + unlink, watched dir"),
];

/// The guest's tiers (`none` is the baseline): (guest name, column title).
const TIERS: &[(&str, &str)] = &[
    ("fentry", "ebpf (fentry)"),
    ("kprobe", "ebpf (kprobe)"),
    ("fanotify", "fanotify"),
];

/// Each workload's duration without fimd, in guest time (ns; 62.5 million instructions at
/// `ICOUNT`'s 8 ns each): enough for rounds to agree within a few percent, and a kernel's whole
/// run (3 rounds of 4 conditions × 4 workloads, 3 daemon starts per round) stays a few minutes.
const TARGET_NS: u64 = 500_000_000;

/// The hang guard of one kernel's run: instruction counting runs the guest on one host thread,
/// and under a host load of 6 on 2 cores a kernel took more than 5 minutes.
const GUEST_WITHIN: Duration = Duration::from_secs(900);

/// One vCPU and QEMU's instruction counting: the guest's clock advances 2^3 ns per instruction
/// executed, and with real time only while the guest idles (`sleep=on`), so the host's load
/// cannot stretch a measurement; it only makes the run take longer. Measured with the guest's
/// wall clock on 2 vCPUs instead, rounds disagreed by up to 9x under a host load of 6. The
/// ratios are ratios of instructions executed, not of time on real hardware, where cache misses
/// and the like weigh too. One vCPU, because instructions on any vCPU advance the one clock:
/// the writer's CPU time then counts its own instructions only, and its elapsed time adds the
/// daemon's, as on a one-CPU machine.
const ICOUNT: &[&str] = &["-smp", "1", "-icount", "shift=3,sleep=on"];

/// Runs the guest benchmark on each of `versions` with `rounds` rounds and the fimd tiers
/// `--sensor` selects (`ebpf` or `auto`: fentry and kprobe; `fanotify`), printing one table per
/// kernel. Errors: any kernel that fails to download, boot, load a tier or finish.
pub(in crate::bench) fn run(versions: &[String], rounds: usize, sensors: &[Tier]) -> anyhow::Result<()> {
    let kernels = kernel::chosen(versions)?;
    let tiers: Vec<(&str, &str)> = TIERS
        .iter()
        .copied()
        .filter(|(name, _)| {
            sensors.iter().any(|s| match s {
                Tier::Auto | Tier::Ebpf => *name != "fanotify",
                Tier::Fanotify => *name == "fanotify",
            })
        })
        .collect();
    let fimd = crate::build_fimd()?;
    let apt = kernel::Apt::open()?;
    let payload = Payload {
        name: "bench",
        init: include_str!("guest.sh")
            .replace("@ROUNDS@", &rounds.to_string())
            .replace("@TARGET_NS@", &TARGET_NS.to_string())
            .replace(
                "TIERS=\"none fentry kprobe fanotify\"",
                &format!(
                    "TIERS=\"none {}\"",
                    tiers.iter().map(|t| t.0).collect::<Vec<_>>().join(" ")
                ),
            )
            .replace(
                "REVERSED=\"fanotify kprobe fentry none\"",
                &format!(
                    "REVERSED=\"{} none\"",
                    tiers.iter().rev().map(|t| t.0).collect::<Vec<_>>().join(" ")
                ),
            ),
        programs: &[("workload", include_str!("workload.c"))],
        disks: false,
        qemu: ICOUNT,
        within: GUEST_WITHIN,
    };
    let mut failed = Vec::new();
    for k in kernels {
        let started = Instant::now();
        let load_before = load_average();
        let result = kernel::boot_payload(&apt, k, &fimd, &payload).and_then(|log| {
            let text = kernel::strip_escapes(&String::from_utf8_lossy(&log));
            let parsed = Parsed::read(&text);
            parsed.check(&tiers).map(|()| parsed)
        });
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(parsed) => print(
                k.version,
                &parsed,
                &tiers,
                rounds,
                seconds,
                &load_before,
                &load_average(),
            ),
            Err(e) => {
                eprintln!("xtask: kernel {}: FAILED ({seconds:.1} s): {e:#}", k.version);
                failed.push(k.version);
            }
        }
    }
    if !failed.is_empty() {
        bail!("the guest benchmark failed on {}", failed.join(", "));
    }
    Ok(())
}

/// What the guest printed.
#[derive(Default)]
struct Parsed {
    /// `uname -r`.
    kernel: String,
    /// Workload → its count.
    counts: BTreeMap<String, u64>,
    /// Tier → its start-up line.
    sensors: BTreeMap<String, String>,
    /// (round, condition, workload) → (elapsed, the writer's CPU) ns.
    times: BTreeMap<(u32, String, String), (u64, u64)>,
    /// (round, tier, workload) → kernel records drained during it.
    records: BTreeMap<(u32, String, String), i64>,
    /// (round, tier) → alert lines of that run.
    alerts: BTreeMap<(u32, String), u64>,
    /// The guest's FAIL lines.
    failures: Vec<String>,
    /// `@@ exit=N`.
    exit: Option<u32>,
    /// Every `@@` line, for the error message.
    lines: Vec<String>,
}

impl Parsed {
    /// Reads the `@@` lines of `serial` (escape sequences already stripped); others are ignored.
    /// A marker may follow other output on its line (the firmware's, without a newline).
    fn read(serial: &str) -> Parsed {
        let mut p = Parsed::default();
        for line in serial.lines() {
            let line = line.trim_end_matches('\r');
            let Some(rest) = line.find("@@ ").map(|at| &line[at + 3..]) else {
                continue;
            };
            p.lines.push(rest.to_owned());
            let w: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| w.get(i).and_then(|s| s.parse::<i64>().ok());
            match w.as_slice() {
                ["kernel", release, ..] => p.kernel = (*release).to_owned(),
                ["count", workload, _] => {
                    if let Some(n) = num(2) {
                        p.counts.insert((*workload).to_owned(), n.unsigned_abs());
                    }
                }
                ["sensor", tier, ..] => {
                    let line = rest.split_once(tier).map_or("", |(_, l)| l.trim());
                    p.sensors.insert((*tier).to_owned(), line.to_owned());
                }
                ["time", round, cond, workload, _, _] => {
                    if let (Ok(r), Some(wall), Some(cpu)) = (round.parse(), num(4), num(5)) {
                        p.times.insert(
                            (r, (*cond).to_owned(), (*workload).to_owned()),
                            (wall.unsigned_abs(), cpu.unsigned_abs()),
                        );
                    }
                }
                ["records", round, tier, workload, _] => {
                    if let (Ok(r), Some(n)) = (round.parse(), num(4)) {
                        p.records
                            .insert((r, (*tier).to_owned(), (*workload).to_owned()), n);
                    }
                }
                ["alerts", round, tier, _] => {
                    if let (Ok(r), Some(n)) = (round.parse(), num(3)) {
                        p.alerts.insert((r, (*tier).to_owned()), n.unsigned_abs());
                    }
                }
                ["FAIL", ..] => p.failures.push(rest.to_owned()),
                _ => {
                    if let Some(n) = rest.strip_prefix("exit=") {
                        p.exit = n.trim().parse().ok();
                    }
                }
            }
        }
        p
    }

    /// The run is usable: the guest finished with no failure, every tier started and drained
    /// kernel records, and every (tier, workload) has at least one ratio.
    fn check(&self, tiers: &[(&str, &str)]) -> anyhow::Result<()> {
        let log = || self.lines.join("\n   ");
        match self.exit {
            None => bail!(
                "the guest printed no verdict (did it boot?); its @@ lines:\n   {}",
                log()
            ),
            Some(0) if self.failures.is_empty() => {}
            Some(n) => bail!("{n} failure(s) in the guest:\n   {}", self.failures.join("\n   ")),
        }
        for (tier, _) in tiers {
            if !self.sensors.contains_key(*tier) {
                bail!("tier {tier} never started; the guest's @@ lines:\n   {}", log());
            }
            let drained: i64 = self
                .records
                .iter()
                .filter(|((_, t, _), _)| t == tier)
                .map(|(_, n)| n)
                .sum();
            if drained <= 0 {
                bail!("tier {tier} drained no kernel record over all its workloads: it was not active");
            }
            for (w, _) in WORKLOADS {
                if self.ratios(tier, w, Clock::Wall).is_empty() {
                    bail!("no timing of workload {w} under tier {tier} and without fimd in one round");
                }
            }
        }
        Ok(())
    }

    /// The ratios tier/none of `workload` on `clock`, one per round holding both.
    fn ratios(&self, tier: &str, workload: &str, clock: Clock) -> Vec<f64> {
        let pick = |t: (u64, u64)| match clock {
            Clock::Wall => t.0,
            Clock::Cpu => t.1,
        };
        self.times
            .iter()
            .filter(|((_, c, w), _)| c == tier && w == workload)
            .filter_map(|((r, _, _), &t)| {
                let base = *self.times.get(&(*r, "none".to_owned(), workload.to_owned()))?;
                Some(pick(t) as f64 / pick(base).max(1) as f64)
            })
            .collect()
    }

    /// The largest spread over the rounds of one cell's ratios on `clock` (max / min − 1), any
    /// tier and workload: how far the rounds disagree.
    fn spread(&self, tiers: &[(&str, &str)], clock: Clock) -> f64 {
        let mut worst: f64 = 0.0;
        for (t, _) in tiers {
            for (w, _) in WORKLOADS {
                let r = self.ratios(t, w, clock);
                let lo = r.iter().copied().fold(f64::MAX, f64::min);
                let hi = r.iter().copied().fold(0.0, f64::max);
                if !r.is_empty() {
                    worst = worst.max(hi / lo.max(1e-9) - 1.0);
                }
            }
        }
        worst
    }

    /// The median of `tier`'s records during `workload` over the rounds.
    fn records_median(&self, tier: &str, workload: &str) -> Option<f64> {
        median(
            self.records
                .iter()
                .filter(|((_, t, w), _)| t == tier && w == workload)
                .map(|(_, &n)| n as f64)
                .collect(),
        )
    }
}

/// Which of the workload's two times.
#[derive(Clone, Copy)]
enum Clock {
    /// Elapsed guest time: the writer's work and, on the guest's one CPU, the daemon's.
    Wall,
    /// The writer's own CPU time: its system calls and the hooks run in its context.
    Cpu,
}

/// The median (the upper one of an even count), or `None` when `v` is empty.
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Width of the row titles and of one tier's column.
const ROW: usize = 30;
const COL: usize = 22;

/// Prints one kernel's table.
fn print(
    version: &str,
    p: &Parsed,
    tiers: &[(&str, &str)],
    rounds: usize,
    seconds: f64,
    load_before: &str,
    load_after: &str,
) {
    println!();
    println!(
        "Kernel {version} ({}), guest under QEMU TCG with -icount, one vCPU: writer's time under fimd / \
         without fimd",
        p.kernel
    );
    println!(
        "   ratios only: emulated time means nothing in absolute terms. Median of {rounds} interleaved round(s), \
         each against its own round's run without fimd;"
    );
    println!(
        "   cpu = the writer's CPU time (its system calls and the hooks in its context), wall = elapsed \
         (plus the daemon's work on the one CPU);"
    );
    println!("   recs = kernel records fimd drained during the workload (median)");
    let head: Vec<String> = tiers.iter().map(|(_, t)| format!("{t:^COL$}")).collect();
    println!("   {:<ROW$}{:>9} |{}", "workload", "count", head.join("|"));
    let sub = format!("{:>6} {:>6} {:>6}", "cpu", "wall", "recs");
    let subs: Vec<String> = tiers.iter().map(|_| format!("{sub:^COL$}")).collect();
    println!("   {:<ROW$}{:>9} |{}", "", "", subs.join("|"));
    for (w, title) in WORKLOADS {
        let cells: Vec<String> = tiers
            .iter()
            .map(|(t, _)| {
                let ratio =
                    |clock| median(p.ratios(t, w, clock)).map_or("-".to_owned(), |m| format!("{m:.2}x"));
                let recs = p
                    .records_median(t, w)
                    .map_or("-".to_owned(), |n| format!("{n:.0}"));
                format!(
                    "{:^COL$}",
                    format!("{:>6} {:>6} {recs:>6}", ratio(Clock::Cpu), ratio(Clock::Wall))
                )
            })
            .collect();
        let count = p.counts.get(*w).map_or("-".to_owned(), u64::to_string);
        println!("   {title:<ROW$}{count:>9} |{}", cells.join("|"));
    }
    let alerts: Vec<String> = tiers
        .iter()
        .map(|(t, _)| {
            let a = median(
                p.alerts
                    .iter()
                    .filter(|((_, tier), _)| tier == t)
                    .map(|(_, &n)| n as f64)
                    .collect(),
            );
            format!("{:^COL$}", a.map_or("-".to_owned(), |n| format!("{n:.0}")))
        })
        .collect();
    println!(
        "   {:<ROW$}{:>9} |{}",
        "alerts per run (median)",
        "",
        alerts.join("|")
    );
    println!(
        "   the rounds agree within {:.1}% on cpu and {:.1}% on wall (the largest max/min - 1 of a cell; wall \
         varies with how the daemon's work falls)",
        p.spread(tiers, Clock::Cpu) * 100.0,
        p.spread(tiers, Clock::Wall) * 100.0
    );
    for (t, _) in tiers {
        if let Some(line) = p.sensors.get(*t) {
            println!("   {t}: {line}");
        }
    }
    println!(
        "   guest run {seconds:.0} s on the host; host load average (1, 5, 15 min) {load_before} before, \
         {load_after} after"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERIAL: &str = "junk\nSeaBIOS c@@ kernel 6.1.0-57-cloud-amd64\r\n@@ count watched 1000\n\
        @@ sensor fentry fimd run: ebpf sensor attached (hooks: fentry/file_modified); ready\n\
        @@ time 1 none watched 100 50\n@@ time 1 fentry watched 150 60\n\
        @@ time 2 fentry watched 240 110\n@@ time 2 none watched 200 100\n\
        @@ time 3 fentry watched 999 999\n\
        @@ records 1 fentry watched 7\n@@ records 2 fentry watched 9\n@@ records 1 fentry read 0\n\
        @@ alerts 1 fentry 3\n@@ exit=0\n";

    #[test]
    fn ratios_pair_each_tier_with_its_own_rounds_baseline() {
        let p = Parsed::read(SERIAL);
        assert_eq!(p.kernel, "6.1.0-57-cloud-amd64");
        assert_eq!(p.counts.get("watched"), Some(&1000));
        assert!(p.sensors["fentry"].starts_with("fimd run: ebpf sensor attached"));
        // Round 3 has no baseline: it gives no ratio.
        let mut r = p.ratios("fentry", "watched", Clock::Wall);
        r.sort_by(f64::total_cmp);
        assert_eq!(r, [1.2, 1.5]);
        let mut r = p.ratios("fentry", "watched", Clock::Cpu);
        r.sort_by(f64::total_cmp);
        assert_eq!(r, [1.1, 1.2]);
        let tiers = [("fentry", "ebpf (fentry)")];
        let spread = p.spread(&tiers, Clock::Wall);
        assert!((spread - 0.25).abs() < 1e-9, "{spread}");
        let spread = p.spread(&tiers, Clock::Cpu);
        assert!((spread - 1.2 / 1.1 + 1.0).abs() < 1e-9, "{spread}");
        assert_eq!(p.records_median("fentry", "watched"), Some(9.0));
        assert_eq!(p.records_median("fentry", "read"), Some(0.0));
        assert_eq!(p.exit, Some(0));
    }

    #[test]
    fn failures_and_idle_tiers_are_errors() {
        let tiers = [("fentry", "ebpf (fentry)")];
        // Only the watched workload was timed: the others are missing.
        let e = Parsed::read(SERIAL).check(&tiers).unwrap_err().to_string();
        assert!(e.contains("no timing of workload unwatched"), "{e}");
        let e = Parsed::read("@@ FAIL kprobe/run: exited: EPERM\n@@ exit=1\n")
            .check(&tiers)
            .unwrap_err()
            .to_string();
        assert!(e.contains("kprobe/run: exited: EPERM"), "{e}");
        let e = Parsed::read("Kernel panic\n")
            .check(&tiers)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no verdict"), "{e}");
        let idle = "@@ sensor fentry x\n@@ records 1 fentry watched 0\n@@ exit=0\n";
        let e = Parsed::read(idle).check(&tiers).unwrap_err().to_string();
        assert!(e.contains("drained no kernel record"), "{e}");
        let e = Parsed::read("@@ exit=0\n").check(&tiers).unwrap_err().to_string();
        assert!(e.contains("never started"), "{e}");
    }
}
