//! What `bench realtime` prints: a column per fimd sensor tier, auditd's beside them in the
//! writer overhead table.
use std::fs;
use std::path::Path;
use std::time::Duration;

use super::super::verdict;
use super::{
    AUDITD_ISSUE_PCT, Audit, Column, Condition, LATENCY_P99_GOAL_MS, Latency, MAX_MISSING_IN_A_ROW, Overhead,
    Realtime, STORM_BOUND, Sample, TierRun, UNWATCHED, UNWATCHED_GOAL_PCT, WATCHED, WATCHED_GOAL_PCT,
    load_average,
};

pub(super) struct Report<'a> {
    pub(super) dir: &'a Path,
    pub(super) changes: usize,
    pub(super) writes: u64,
    pub(super) runs: usize,
    pub(super) load_start: String,
    pub(super) tiers: &'a [TierRun],
    pub(super) overhead: &'a Overhead,
    pub(super) audit: &'a Audit,
}

pub(super) fn print(r: &Report) {
    header(r);
    latency(r);
    overhead(r);
    storm(r);
    println!();
    println!("load average at the end: {}", load_average());
}

fn header(r: &Report) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!();
    println!(
        "fimd run vs auditd in {}: Linux {}, {cores} cores; load average at the start {}",
        r.dir.display(),
        kernel.trim(),
        r.load_start
    );
    for t in r.tiers {
        let label = format!("fimd {}:", t.tier);
        match &t.result {
            Ok(rt) => {
                let line = rt.ready.strip_prefix("fimd run: ").unwrap_or(&rt.ready);
                println!("   {label:<15}{}", line.strip_suffix("; ready").unwrap_or(line));
            }
            Err(why) => {
                println!("   {label:<15}ERROR, no figures in this column:");
                for l in why.lines() {
                    println!("   {:<15}  {l}", "");
                }
            }
        }
    }
}

/// Width of a table's row names, and of a tier's cells.
const NAME: usize = 36;
const CELL: usize = 16;

/// One row of a table with a column per fimd tier: its name and how a tier's cell reads.
type TierRow<'a> = (String, &'a dyn Fn(&Realtime) -> String);

/// A table with a column per fimd tier; a tier that did not run shows `error` in every row.
fn tier_table(tiers: &[TierRun], rows: &[TierRow]) {
    let mut head = format!("   {:<NAME$}", "");
    for t in tiers {
        head.push_str(&format!("{:>CELL$}", format!("fimd {}", t.tier)));
    }
    println!("{head}");
    for (name, cell) in rows {
        let mut line = format!("   {name:<NAME$}");
        for t in tiers {
            let v = t.result.as_ref().map_or_else(|_| "error".to_owned(), cell);
            line.push_str(&format!("{v:>CELL$}"));
        }
        println!("{line}");
    }
}

/// Percentiles over the changes; a missing alert counts as slower than any.
struct LatencyStats {
    changes: usize,
    p50: Option<Duration>,
    p99: Option<Duration>,
    max: Option<Duration>,
    mean: Option<Duration>,
    missing: usize,
}

impl LatencyStats {
    fn of(lat: &Latency) -> LatencyStats {
        let mut sorted = lat.samples.clone();
        // None (missing) sorts last.
        sorted.sort_by_key(|s| s.unwrap_or(Duration::MAX));
        let found: Vec<Duration> = sorted.iter().flatten().copied().collect();
        LatencyStats {
            changes: sorted.len(),
            p50: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            max: found.last().copied(),
            mean: (!found.is_empty()).then(|| found.iter().sum::<Duration>() / found.len() as u32),
            missing: sorted.len() - found.len(),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Option<Duration>], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency(r: &Report) {
    println!();
    println!(
        "1. Latency, writer's close() to its alert line: {} sequential changes to one watched file",
        r.changes
    );
    println!("   (open O_TRUNC, one write of a distinct size, close; alert matched by path and size)");
    let stats = |rt: &Realtime| LatencyStats::of(&rt.latency);
    let per_change = |rt: &Realtime| rt.latency.samples.len().max(1) as f64;
    tier_table(
        r.tiers,
        &[
            ("p50".into(), &|rt| ms(stats(rt).p50)),
            ("p99".into(), &|rt| ms(stats(rt).p99)),
            ("max".into(), &|rt| ms(stats(rt).max)),
            ("mean".into(), &|rt| ms(stats(rt).mean)),
            ("missing".into(), &|rt| {
                let s = stats(rt);
                format!("{} of {}", s.missing, s.changes)
            }),
            (format!("goal p99 < {LATENCY_P99_GOAL_MS:.0} ms"), &|rt| {
                verdict(
                    stats(rt)
                        .p99
                        .is_some_and(|d| d.as_secs_f64() * 1e3 < LATENCY_P99_GOAL_MS),
                )
                .into()
            }),
            ("alert lines on the file per change".into(), &|rt| {
                format!("{:.2}", rt.latency.lines as f64 / per_change(rt))
            }),
            ("fimd CPU per change".into(), &|rt| {
                format!("{:.2} ms", rt.latency.fimd_cpu * 1e3 / per_change(rt))
            }),
        ],
    );
    for t in r.tiers {
        if let Ok(rt) = &t.result
            && rt.latency.gave_up
        {
            println!(
                "   fimd {}: stopped after {MAX_MISSING_IN_A_ROW} missing alerts in a row ({} of {} changes made)",
                t.tier,
                rt.latency.samples.len(),
                r.changes
            );
        }
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "missing".into(),
        |d| format!("{:.2} ms", d.as_secs_f64() * 1e3),
    )
}

/// Width of a sub-column of the writer overhead table, and of its row names.
const SUB: usize = 8;
const ROW: usize = 15;

fn subcolumns(c: Condition) -> &'static [&'static str] {
    match c {
        Condition::Nothing => &["wall", "cpu"],
        Condition::Fimd(_) => &["wall", "cpu", "wall%", "cpu%", "goal"],
        Condition::Auditd => &["wall", "cpu", "wall%", "cpu%"],
    }
}

fn title(c: Condition) -> String {
    match c {
        Condition::Auditd => "auditd, one -w TREE -p wa watch".into(),
        _ => c.to_string(),
    }
}

/// The median wall and CPU time of one cell.
fn med(c: &Column, row: usize) -> Option<Sample> {
    let cell = &c.cells[row];
    Some(Sample {
        wall: median(cell.iter().map(|s| s.wall).collect())?,
        cpu: median(cell.iter().map(|s| s.cpu).collect())?,
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn pct(x: f64, base: f64) -> f64 {
    (x / base.max(1e-9) - 1.0) * 100.0
}

/// One column's cells in one row of the writer overhead table.
fn group(c: &Column, row: usize, base: Sample, goal: f64) -> String {
    let width = SUB * subcolumns(c.condition).len();
    if c.failed.is_some() {
        let word = if c.condition == Condition::Auditd {
            "skipped"
        } else {
            "error"
        };
        return format!("{word:^width$}");
    }
    let Some(s) = med(c, row) else {
        return format!("{:^width$}", "-");
    };
    let mut out = format!("{:>SUB$.3}{:>SUB$.3}", s.wall, s.cpu);
    let wall = pct(s.wall, base.wall);
    if c.condition != Condition::Nothing {
        out.push_str(&format!("{:>+7.1}%{:>+7.1}%", wall, pct(s.cpu, base.cpu)));
    }
    if let Condition::Fimd(_) = c.condition {
        out.push_str(&format!("{:>SUB$}", verdict(wall <= goal)));
    }
    out
}

fn overhead(r: &Report) {
    let cols = &r.overhead.columns;
    println!();
    println!(
        "2. Writer overhead: dd if=/dev/zero bs=1 count={} conv=notrunc ({} reads and writes), median of {} run(s)",
        r.writes, r.writes, r.runs
    );
    println!(
        "   wall s, and CPU s of dd (user + system); % over nothing running; goal: fimd's wall% <= \
         +{UNWATCHED_GOAL_PCT:.0}% unwatched, <= +{WATCHED_GOAL_PCT:.0}% watched"
    );
    let groups: Vec<String> = cols
        .iter()
        .map(|c| {
            format!(
                "{:^w$}",
                title(c.condition),
                w = SUB * subcolumns(c.condition).len()
            )
        })
        .collect();
    println!("   {:<ROW$}{}", "", groups.join(" |").trim_end());
    let subs: Vec<String> = cols
        .iter()
        .map(|c| {
            subcolumns(c.condition)
                .iter()
                .map(|s| format!("{s:>SUB$}"))
                .collect()
        })
        .collect();
    println!("   {:<ROW$}{}", "", subs.join(" |"));
    for (row, name, goal) in [
        (UNWATCHED, "unwatched file", UNWATCHED_GOAL_PCT),
        (WATCHED, "watched file", WATCHED_GOAL_PCT),
    ] {
        let Some(base) = med(&cols[0], row) else {
            continue;
        };
        let cells: Vec<String> = cols.iter().map(|c| group(c, row, base, goal)).collect();
        println!("   {name:<ROW$}{}", cells.join(" |").trim_end());
    }
    overhead_notes(r);
}

/// Below the writer overhead table: auditd over each tier, fimd's own CPU, why a column is empty.
fn overhead_notes(r: &Report) {
    let cols = &r.overhead.columns;
    let fimd: Vec<&Column> = cols
        .iter()
        .filter(|c| matches!(c.condition, Condition::Fimd(_)) && c.failed.is_none())
        .collect();
    let auditd = cols.iter().find(|c| c.condition == Condition::Auditd);
    if let Some(a) = auditd.filter(|a| a.failed.is_none()) {
        let mut ratios = Vec::new();
        for f in &fimd {
            let rows: Vec<String> = [(UNWATCHED, "unwatched"), (WATCHED, "watched")]
                .iter()
                .filter_map(|&(row, name)| {
                    let (a, f) = (med(a, row)?, med(f, row)?);
                    Some(format!("{:.2}x {name}", a.wall / f.wall.max(1e-9)))
                })
                .collect();
            ratios.push(format!("{} {}", f.condition, rows.join(", ")));
        }
        println!("   auditd's dd wall time over fimd's: {}", ratios.join("; "));
    }
    println!("   the issue measured auditd at about +{AUDITD_ISSUE_PCT:.0}% on the watched file");
    for c in cols {
        if let Some(why) = &c.failed {
            println!("   {} column: {}", c.condition, why.replace('\n', "\n      "));
        } else if let Some(own) = median(c.own.clone()) {
            match c.condition {
                Condition::Fimd(_) => {
                    println!(
                        "   {}: fimd's own CPU time while dd wrote the watched file: {own:.2} s (median)",
                        c.condition
                    )
                }
                Condition::Auditd => {
                    println!("   auditd logged {own:.0} record line(s) with the watch's key per run (median)")
                }
                Condition::Nothing => {}
            }
        }
    }
    if r.audit.control {
        println!(
            "   nothing and fimd columns ran with `auditctl -a never,task`: once audit has been enabled since \
             boot, new tasks take the syscall audit slow path even with auditd stopped"
        );
    }
}

fn storm(r: &Report) {
    let bound = (r.writes as f64 * STORM_BOUND).max(1.0);
    let writes = r.writes as f64;
    println!();
    println!(
        "3. Storm: {} one-byte writes to one watched file (dd conv=notrunc, zeros over 'x'), fimd run active",
        r.writes
    );
    tier_table(
        r.tiers,
        &[
            ("dd wall s (CPU s)".into(), &|rt| {
                format!("{:.3} ({:.3})", rt.storm.dd.wall, rt.storm.dd.cpu)
            }),
            ("final state alerted after dd exit".into(), &|rt| {
                ms(rt.storm.catch_up)
            }),
            ("alert lines on the file".into(), &|rt| rt.storm.lines.to_string()),
            ("  % of writes".into(), &|rt| {
                format!("{:.4}%", rt.storm.lines as f64 * 100.0 / writes)
            }),
            ("  per s of storm".into(), &|rt| {
                format!("{:.0}", rt.storm.lines as f64 / rt.storm.span.max(1e-9))
            }),
            (format!("  goal <= {bound:.0}"), &|rt| {
                verdict(rt.storm.lines as f64 <= bound).into()
            }),
            ("fimd CPU, dd's start to final alert".into(), &|rt| {
                format!("{:.2}/{:.2} s", rt.storm.fimd_cpu, rt.storm.span)
            }),
            ("  share of one core".into(), &|rt| {
                format!("{:.0}%", rt.storm.fimd_cpu * 100.0 / rt.storm.span.max(1e-9))
            }),
            ("last alert = final file state".into(), &|rt| {
                verdict(rt.storm.last_matches).into()
            }),
            ("kernel events lost (1 and 3), goal 0".into(), &|rt| {
                format!("{} {}", rt.lost, verdict(rt.lost == 0))
            }),
        ],
    );
    storm_states(r);
}

/// The file's final state, and the last alert of each tier whose last alert differs from it.
fn storm_states(r: &Report) {
    let ran = r
        .tiers
        .iter()
        .filter_map(|t| Some((t.tier, t.result.as_ref().ok()?)));
    for (i, (tier, rt)) in ran.enumerate() {
        let s = &rt.storm;
        if i == 0 {
            println!("   file: size {}, sha256 {}", s.final_size, s.final_sha256);
        }
        if s.last_matches {
            continue;
        }
        let last = match &s.last {
            Some((size, sha)) => format!(
                "size {}, sha256 {}",
                size.map_or_else(|| "?".into(), |n| n.to_string()),
                sha.as_deref().unwrap_or("?")
            ),
            None => "no alert".into(),
        };
        println!("   fimd {tier}'s last alert: {last}");
    }
}
