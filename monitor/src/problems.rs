//! What a comparison could not compare, told on stderr: the same words from every command and
//! from the daemon.
use crate::config::Settings;
use crate::output::path::path_text;
use crate::scan::Problem;

/// One warning line on stderr per problem: its path (bytes shown escaped) and why.
pub fn report_problems(problems: &[Problem]) {
    for p in problems {
        eprintln!("fimd: warning: {}: {}", path_text(&p.path).0, p.message);
    }
}

/// How many metadata-only paths the summary line names before it only counts.
const METADATA_ONLY_NAMED: usize = 10;

/// One line on stderr naming the files larger than `scan.max_file_size`: by configuration
/// they are compared by metadata only (size, mode, owner, times, inode, xattrs, flags), which
/// is not an error and does not change the exit status.
pub fn report_metadata_only(command: &str, settings: &Settings, paths: &[Vec<u8>]) {
    if paths.is_empty() {
        return;
    }
    let mut named: Vec<String> = paths
        .iter()
        .take(METADATA_ONLY_NAMED)
        .map(|p| path_text(p).0)
        .collect();
    if paths.len() > METADATA_ONLY_NAMED {
        named.push(format!("and {} more", paths.len() - METADATA_ONLY_NAMED));
    }
    eprintln!(
        "fimd {command}: {} file(s) larger than scan.max_file_size ({} bytes), content not hashed, metadata \
         only: {}",
        paths.len(),
        settings.max_file_size.unwrap_or_default(),
        named.join(", ")
    );
}
