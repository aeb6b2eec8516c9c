//! `fimd init`: build and seal the baseline, from the host or from a mounted image.
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{EXIT_CLEAN, actor, exit, progress, report_problems};
use crate::baseline::seal::Key;
use crate::baseline::store::{HistoryRow, Store};
use crate::config::Settings;
use crate::output::alert::now_rfc3339;
use crate::scan::{self, Problem, ScanItem};

pub fn run(settings: &Settings, root: &Path) -> anyhow::Result<ExitCode> {
    settings.check_paths_exist(root)?;
    // The store creates the private state directory the key lives in.
    let mut store = Store::open(&settings.state_dir, settings.hmac_key.as_deref(), true)?;
    let key = Key::load(&settings.state_dir, settings.hmac_key.as_deref(), true)?;
    let started = Instant::now();
    let mut scan = scan::start(settings, root);
    let bar = progress(&scan, "init");
    let mut replace = store.replace()?;
    let mut problems = Vec::new();
    let mut metadata_only = Vec::new();
    let mut count = 0u64;
    while let Some(item) = scan.next_item() {
        match item {
            ScanItem::Entry(e) => {
                replace.insert(&e)?;
                count += 1;
            }
            ScanItem::MetadataOnly(e) => {
                metadata_only.push(e.path.clone());
                replace.insert(&e)?;
                count += 1;
            }
            ScanItem::Unstable(e) => {
                problems.push(Problem {
                    path: e.path.clone(),
                    message: "changed while being hashed (every attempt); recorded as last read".into(),
                    subtree: false,
                });
                replace.insert(&e)?;
                count += 1;
            }
            ScanItem::Problem(p) => problems.push(p),
        }
    }
    let bytes = scan.progress.bytes.load(Ordering::Relaxed);
    drop(scan);
    bar.finish_and_clear();
    let now = now_rfc3339();
    let watches: Vec<String> = settings
        .watches
        .iter()
        .map(|w| format!("{} ({})", w.path.display(), w.policy.as_str()))
        .collect();
    let meta = [
        ("created_at", now.clone()),
        ("host", crate::output::alert::hostname()),
        ("source_root", root.display().to_string()),
        ("fimd_version", env!("CARGO_PKG_VERSION").to_string()),
        ("entries", count.to_string()),
        ("watches", watches.join(", ")),
        ("coverage", settings.coverage()),
    ];
    let history = [HistoryRow {
        at: now,
        actor: actor(),
        action: "init".into(),
        path: None,
        detail: format!("{count} entries from {}", root.display()),
    }];
    let generation = replace.generation();
    replace.commit(&key, &meta, &history)?;
    report_problems(&problems);
    metadata_only.sort();
    super::report_metadata_only("init", settings, &metadata_only);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "fimd init: {count} entries, {} hashed in {secs:.2} s ({}/s){}; baseline generation {generation} sealed in {}",
        indicatif::HumanBytes(bytes),
        indicatif::HumanBytes((bytes as f64 / secs.max(1e-9)) as u64),
        if problems.is_empty() {
            String::new()
        } else {
            format!(", {} warnings", problems.len())
        },
        store.path().display()
    );
    Ok(exit(EXIT_CLEAN))
}
