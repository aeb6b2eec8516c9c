//! `fimd report`: the evidence an auditor asks for (PCI DSS 11.5.2: changes detected, and
//! comparisons run at least weekly), read back from the MAC-chained evidence log.
use std::io::Write;
use std::process::ExitCode;

use super::{EXIT_CLEAN, EXIT_DIFFERENCES, EXIT_ERROR, exit, open_baseline};
use crate::config::Settings;

pub fn run(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let (store, key, _baseline) = open_baseline(settings)?;
    let records = store.evidence(&key)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut broken = None;
    for (id, r, intact) in &records {
        if !intact && broken.is_none() {
            broken = Some(*id);
        }
        if json {
            let mut r = r.clone();
            r["id"] = (*id).into();
            r["chain_intact"] = (*intact).into();
            serde_json::to_writer(&mut out, &r)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "#{id:<5} {:<9} {} .. {}  {} files, {} differences, {} allowed, {} not compared{}",
                r["kind"].as_str().unwrap_or("?"),
                r["started"].as_str().unwrap_or("?"),
                r["finished"].as_str().unwrap_or("?"),
                r["files_compared"],
                r["differences"],
                r["allowed_events"],
                r["not_compared"],
                if *intact { "" } else { "  [FAILS ITS MAC]" }
            )?;
        }
    }
    out.flush()?;
    let last = records
        .last()
        .map(|(_, r, _)| r["finished"].as_str().unwrap_or("?").to_owned());
    eprintln!(
        "fimd report: {} comparisons recorded; last finished {}",
        records.len(),
        last.as_deref().unwrap_or("never")
    );
    if let Some(id) = broken {
        eprintln!(
            "fimd report: the evidence log fails its MAC from record #{id} on: it was edited or records were \
             removed outside fimd"
        );
        return Ok(exit(EXIT_ERROR));
    }
    // Overdue against the schedule: an auditor's first question.
    let overdue = settings.full_check.is_some_and(|every| {
        records.last().is_none_or(|(_, r, _)| {
            let finished = r["finished"].as_str().unwrap_or("");
            time::OffsetDateTime::parse(finished, &time::format_description::well_known::Rfc3339)
                .map_or(true, |t| time::OffsetDateTime::now_utc() - t > every)
        })
    });
    if overdue {
        eprintln!(
            "fimd report: the last full comparison is older than schedule.full_check ({}): one is overdue",
            humantime::format_duration(settings.full_check.unwrap_or_default())
        );
        return Ok(exit(EXIT_DIFFERENCES));
    }
    Ok(exit(EXIT_CLEAN))
}
