//! `fimd accept`: take approved changes (all, or those under the named paths) into the
//! baseline, recording when, by whom and why.
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{
    EXIT_CLEAN, EXIT_ERROR, actor, coverage_problem, exit, host_mode, open_baseline, progress,
    report_problems,
};
use crate::baseline::store::HistoryRow;
use crate::compare::{self, Action};
use crate::config::Settings;
use crate::output::alert::{human_line, now_rfc3339};
use crate::paths::is_under;
use crate::scan;

pub fn run(settings: &Settings, paths: &[PathBuf], reason: Option<&str>) -> anyhow::Result<ExitCode> {
    for p in paths {
        if !p.is_absolute() {
            anyhow::bail!("{}: give an absolute path", p.display());
        }
        if settings.watch_for(p).is_none() {
            anyhow::bail!(
                "{}: not under any watch of {}",
                p.display(),
                settings.source.display()
            );
        }
    }
    let (mut store, key, baseline) = open_baseline(settings)?;
    if let Some(p) = coverage_problem(settings, &baseline) {
        anyhow::bail!("{}: {}", settings.source.display(), p.message);
    }
    let mode = host_mode(&baseline);
    let mut scan = scan::start(settings, Path::new("/"));
    let bar = progress(&scan, "accept");
    let cmp = compare::compare(settings, &baseline.entries, &mut scan, mode, |_| {});
    drop(scan);
    bar.finish_and_clear();

    let selected =
        |path: &[u8]| paths.is_empty() || paths.iter().any(|p| is_under(path, p.as_os_str().as_bytes()));
    // Never take a partial view into the baseline: what could not be read stays as it was.
    let blocking: Vec<_> = cmp
        .problems
        .iter()
        .filter(|p| {
            selected(&p.path)
                || (p.subtree
                    && paths
                        .iter()
                        .any(|sel| is_under(sel.as_os_str().as_bytes(), &p.path)))
        })
        .collect();
    if !blocking.is_empty() {
        report_problems(&cmp.problems);
        anyhow::bail!(
            "{} paths could not be read (listed above); fix or exclude them, then accept again. Nothing was accepted.",
            blocking.len()
        );
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    let mut history = Vec::new();
    let mut accepted = Vec::new();
    let (at, who) = (now_rfc3339(), actor());
    for c in &cmp.changes {
        let prev_path = c.previous.as_ref().map(|e| &e.path[..]);
        if !selected(c.path()) && !prev_path.is_some_and(selected) {
            continue;
        }
        if let Some(cur) = &c.current {
            upserts.push(cur.clone());
        }
        if matches!(c.action, Action::Deleted | Action::Moved)
            && let Some(prev) = &c.previous
        {
            deletes.push(prev.path.clone());
        }
        history.push(HistoryRow {
            at: at.clone(),
            actor: who.clone(),
            action: format!("accept {}", c.action.as_str()),
            path: Some(c.path().to_vec()),
            detail: match reason {
                Some(r) => format!("{}; reason: {r}", crate::compare::names(&c.changes, ",")),
                None => crate::compare::names(&c.changes, ","),
            },
        });
        accepted.push(human_line(c));
    }
    report_problems(&cmp.problems);
    super::report_metadata_only("accept", settings, &cmp.metadata_only);
    if history.is_empty() {
        eprintln!("fimd accept: nothing to accept");
        return Ok(exit(if cmp.problems.is_empty() {
            EXIT_CLEAN
        } else {
            EXIT_ERROR
        }));
    }
    let generation = store
        .apply(&key, &upserts, &deletes, &history, &[("updated_at", at)])
        .map_err(|e| anyhow::anyhow!("{e}; nothing was accepted"))?;
    // Only once the commit stands: a line printed before it failed would claim what is not so.
    for line in accepted {
        println!("accepted {line}");
    }
    eprintln!(
        "fimd accept: {} changes taken into the baseline by {who}; baseline generation {generation}",
        history.len()
    );
    Ok(exit(EXIT_CLEAN))
}
