//! `[realtime]`: the kernel sensor, its ring buffer and its maps' capacity.
use serde::Deserialize;
use toml::Spanned;

use super::values::{TableError, invalid, page_size, parse_size};

/// `realtime.ring_buffer_bytes` when the configuration names none: 4 MiB, about 50,000 records.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;
/// Smallest `realtime.ring_buffer_bytes`: 4 KiB, one page on x86-64 (the kernel wants a
/// power-of-two number of pages, so on a larger-page machine its page size is the floor).
pub const MIN_RING_BYTES: u64 = 4096;
/// Largest `realtime.ring_buffer_bytes`: 256 MiB, about 3 million records. The ring is locked
/// kernel memory mapped into the daemon (2 GiB cost 4.2 GB of RSS); a loss is repaired by a
/// full comparison, so a bigger ring buys little.
pub const MAX_RING_BYTES: u64 = 256 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRealtime {
    /// Kernel-to-daemon ring buffer size in bytes: a power of two from `MIN_RING_BYTES` to
    /// `MAX_RING_BYTES`, as a number or a size string ("4MiB").
    ring_buffer_bytes: Option<Spanned<toml::Value>>,
    sensor: Option<SensorChoice>,
    /// Inodes the eBPF sensor's maps hold; by default sized from the baseline.
    max_watched_inodes: Option<Spanned<u64>>,
}

/// Bounds of `realtime.max_watched_inodes`: below 1,024 nothing useful fits; 16 Mi entries
/// cost about 2.5 GiB of locked kernel memory (docs/sensor-design.md §3, per-entry cost).
pub const WATCHED_INODES_RANGE: std::ops::RangeInclusive<u64> = 1024..=(16 << 20);

/// `[realtime] sensor`: which kernel sensor `fimd run` and `fimd selftest` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorChoice {
    /// The eBPF sensor where it loads, else fanotify.
    #[default]
    Auto,
    /// Only eBPF: `run` fails (exit 2) with the reason when it cannot load.
    Ebpf,
    /// Only fanotify (needs CAP_SYS_ADMIN).
    Fanotify,
}

/// The validated `[realtime]` table.
pub(super) struct Realtime {
    pub ring_buffer_bytes: u32,
    pub sensor: SensorChoice,
    pub max_watched_inodes: Option<u32>,
}

impl RawRealtime {
    pub(super) fn validate(&self) -> Result<Realtime, TableError> {
        let raw = self;
        let ring_buffer_bytes = match &raw.ring_buffer_bytes {
            None => DEFAULT_RING_BYTES,
            Some(v) => {
                let min = MIN_RING_BYTES.max(page_size());
                match parse_size(v.get_ref()) {
                    Some(n) if n.is_power_of_two() && (min..=MAX_RING_BYTES).contains(&n) => n as u32,
                    _ => {
                        return Err(invalid(
                            v.span(),
                            format!(
                                "realtime.ring_buffer_bytes: {} is not a power of two from {min} to {MAX_RING_BYTES} \
                                     (256 MiB); write e.g. 4194304 or \"4MiB\" (the default)",
                                v.get_ref()
                            ),
                        ));
                    }
                }
            }
        };

        let max_watched_inodes = match &raw.max_watched_inodes {
            None => None,
            Some(n) if WATCHED_INODES_RANGE.contains(n.get_ref()) => Some(*n.get_ref() as u32),
            Some(n) => {
                return Err(invalid(
                    n.span(),
                    format!(
                        "realtime.max_watched_inodes: {} is outside {} to {}; leave it out to size the \
                             sensor's maps from the baseline",
                        n.get_ref(),
                        WATCHED_INODES_RANGE.start(),
                        WATCHED_INODES_RANGE.end()
                    ),
                ));
            }
        };
        Ok(Realtime {
            ring_buffer_bytes,
            sensor: self.sensor.unwrap_or_default(),
            max_watched_inodes,
        })
    }
}
