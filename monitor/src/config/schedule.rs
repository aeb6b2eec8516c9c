//! `[schedule]`: how often the daemon runs a full comparison, and the jitter that spreads a fleet.
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::values::{TableError, invalid};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    /// How often the daemon runs a full comparison ("7d", "12h"); "0" disables it.
    full_check: Option<Spanned<String>>,
    /// A random delay up to this much is added to each, so a fleet does not read at once.
    jitter: Option<Spanned<String>>,
}

/// PCI DSS 11.5.2: compare at least weekly.
pub const DEFAULT_FULL_CHECK: Duration = Duration::from_secs(7 * 86_400);
/// One hour: enough to spread a fleet's disk reads, short next to a week.
pub const DEFAULT_JITTER: Duration = Duration::from_secs(3600);
/// Shortest `schedule.full_check`: 1 minute. Each full comparison rereads every watched byte;
/// at `"1ns"` the daemon ran about 300 a second and did little else.
pub const MIN_FULL_CHECK: Duration = Duration::from_secs(60);
/// Longest `schedule.full_check` and `schedule.jitter`: 366 days. Compliance asks for weekly;
/// past a year a schedule means "never" (write `"0"`), and huge values overflowed the daemon's
/// timer (`"500000000000y"` made `fimd run` panic).
pub const MAX_FULL_CHECK: Duration = Duration::from_secs(366 * 86_400);

impl RawSchedule {
    /// `(full_check, jitter)`; `full_check` `None`: never.
    pub(super) fn validate(&self) -> Result<(Option<Duration>, Duration), TableError> {
        let raw = self;
        let duration = |d: &Spanned<String>, key: &str| {
            humantime::parse_duration(d.get_ref().trim()).map_err(|e| {
                invalid(
                    d.span(),
                    format!(
                        "{key}: {:?}: {e}; write a duration such as \"7d\", \"12h\" or \"30m\"",
                        d.get_ref()
                    ),
                )
            })
        };
        let full_check = match &raw.full_check {
            None => Some(DEFAULT_FULL_CHECK),
            Some(d) if d.get_ref().trim() == "0" => None,
            Some(d) => {
                let every = duration(d, "schedule.full_check")?;
                if !(MIN_FULL_CHECK..=MAX_FULL_CHECK).contains(&every) {
                    return Err(invalid(
                        d.span(),
                        format!(
                            "schedule.full_check: {:?} is out of range; give 1 minute (\"1m\") to 366 days \
                                 (\"366d\"), or \"0\" for no scheduled comparison",
                            d.get_ref()
                        ),
                    ));
                }
                Some(every)
            }
        };
        let jitter = match &raw.jitter {
            None => DEFAULT_JITTER.min(full_check.unwrap_or(MAX_FULL_CHECK)),
            Some(d) if d.get_ref().trim() == "0" => Duration::ZERO,
            Some(d) => {
                let jitter = duration(d, "schedule.jitter")?;
                let most = full_check.unwrap_or(MAX_FULL_CHECK);
                if jitter > most {
                    return Err(invalid(
                        d.span(),
                        format!(
                            "schedule.jitter: {:?} is longer than {}; give at most {} (or \"0\")",
                            d.get_ref(),
                            if full_check.is_some() {
                                "schedule.full_check"
                            } else {
                                "366 days"
                            },
                            humantime::format_duration(most)
                        ),
                    ));
                }
                jitter
            }
        };
        Ok((full_check, jitter))
    }
}
