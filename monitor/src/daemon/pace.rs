//! Directory listings paced by their cost: a busy directory costs a bounded share of a core,
//! whatever its size. A kernel record for a directory names no entry (the eBPF records carry
//! an inode, fanotify's is reduced to one), so each one costs a listing of the whole directory
//! (`look::read_listings`): 7 ms for 10,000 entries on ext4, 70 % of a core at 100 creations
//! per second. After a listing that took `T`, the directory is not listed again for a record
//! before `PACE_FACTOR`·`T` has passed; records meanwhile mark it pending, and the first
//! handling of records or tick after that lists it once for all of them (`Pacer::due`), naming
//! the last of their writers: one operation often makes two records for its directory (a name
//! instantiated, then the directory's times), and the second, coming within the pace the
//! first's listing started, must not claim the next writer's change.
//! Nothing is dropped: a pending directory is listed when due, and at shutdown or reload
//! (`Daemon::flush_paced`). A directory listed in under `PACE_FROM` is never paced: small
//! directories are looked at for every record, as before.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;

use super::modifier::Modifier;

/// A paced directory waits this many times its last listing's cost: it spends at most
/// 1/(1 + `PACE_FACTOR`) of a core on listings, about 9 %.
pub const PACE_FACTOR: u32 = 10;
/// Listings faster than this (about 1,500 entries on ext4) are never paced: their cost is that
/// of handling the record itself, and their records' alerts keep their latency.
pub const PACE_FROM: Duration = Duration::from_millis(1);
/// The longest wait. A file moved into a paced directory from another is found gone from its
/// old directory at once and waits `MOVE_WINDOW` (300 ms) for its other half: the paced
/// listing, due within this and picked up by the loop's next tick (100 ms), must come first,
/// or the move would be reported as a deletion and a creation. A directory listed in more than
/// 20 ms (about 30,000 entries) therefore costs more than 1/11 of a core when busy: 26 % at
/// 100,000 entries.
pub const PACE_AT_MOST: Duration = Duration::from_millis(200);
const _: () = assert!(PACE_AT_MOST.as_millis() + 100 <= super::settle::MOVE_WINDOW.as_millis());

/// The directories being paced: when each may be listed next, and those with records waiting.
/// Bounded by the watched directories: one entry each at most, in each map.
#[derive(Default)]
pub struct Pacer {
    /// Directories listed at a cost that paces them: not listed for a record before this.
    /// An entry past its time is dropped by `due`.
    next: HashMap<Vec<u8>, Instant>,
    /// Directories with records within their pace, with the last writer named.
    pending: HashMap<Vec<u8>, Modifier>,
    /// `fim_directory_listings_total`, when exported.
    counted: Option<IntCounterVec>,
}

impl Pacer {
    /// A pacer that counts listings and paced records in `fim_directory_listings_total`.
    pub fn counted(listings: IntCounterVec) -> Pacer {
        Pacer {
            counted: Some(listings),
            ..Pacer::default()
        }
    }

    /// Whether `dir`, named by a record of `who` at `now`, is to be listed now. If not, it is
    /// pending: `due` hands it back when its pace has passed. A directory listed now stands for
    /// what was pending on it.
    pub fn admit(&mut self, dir: &[u8], who: &Modifier, now: Instant) -> bool {
        match self.next.get(dir) {
            Some(at) if *at > now => {
                self.pending.insert(dir.to_vec(), who.clone());
                self.count("paced");
                false
            }
            _ => {
                self.pending.remove(dir);
                true
            }
        }
    }

    /// Notes that `dir`'s names were read, at `cost` (read and diffed), ending at `now`.
    pub fn listed(&mut self, dir: &[u8], cost: Duration, now: Instant) {
        self.count("listed");
        if cost < PACE_FROM {
            self.next.remove(dir);
            return;
        }
        let wait = cost.saturating_mul(PACE_FACTOR).min(PACE_AT_MOST);
        self.next.insert(dir.to_vec(), now + wait);
    }

    /// The pending directories whose pace has passed at `now`, each with its last writer,
    /// sorted by path. Forgets the paces that have passed.
    pub fn due(&mut self, now: Instant) -> Vec<(Vec<u8>, Modifier)> {
        self.next.retain(|_, at| *at > now);
        let ready: Vec<Vec<u8>> = self
            .pending
            .keys()
            .filter(|d| !self.next.contains_key(*d))
            .cloned()
            .collect();
        let mut out: Vec<(Vec<u8>, Modifier)> = ready
            .into_iter()
            .filter_map(|d| self.pending.remove_entry(&d))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every pending directory, due or not (shutdown, reload), sorted by path.
    pub fn take_all(&mut self) -> Vec<(Vec<u8>, Modifier)> {
        self.next.clear();
        let mut out: Vec<(Vec<u8>, Modifier)> = self.pending.drain().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Directories with records waiting.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// `outcome`: one of `telemetry::labels::LISTING_OUTCOMES`.
    fn count(&self, outcome: &'static str) {
        if let Some(c) = &self.counted {
            c.with_label_values(&[outcome]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(pid: u32) -> Modifier {
        Modifier {
            pid,
            tgid: pid,
            uid: 0,
            comm: "t".into(),
            cgroup_id: 0,
            hook: "unknown",
        }
    }

    #[test]
    fn a_slow_listing_paces_its_directory_and_a_fast_one_does_not() {
        let mut p = Pacer::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Never listed: listed now.
        assert!(p.admit(b"/w/big", &who(1), t0));
        p.listed(b"/w/big", ms(7), t0);
        p.listed(b"/w/small", ms(0), t0);
        // Within 10 × 7 ms: pending, the last writer kept; the small one is listed at once.
        assert!(!p.admit(b"/w/big", &who(2), t0 + ms(10)));
        assert!(!p.admit(b"/w/big", &who(3), t0 + ms(60)));
        assert!(p.admit(b"/w/small", &who(4), t0 + ms(10)));
        assert_eq!(p.pending(), 1);
        assert!(p.due(t0 + ms(69)).is_empty(), "not before its pace");
        let due = p.due(t0 + ms(70));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0.as_slice(), due[0].1.pid), (&b"/w/big"[..], 3));
        assert_eq!(p.pending(), 0, "handed back once");
        assert!(p.due(t0 + ms(500)).is_empty());
        // Past its pace, a record lists at once.
        assert!(p.admit(b"/w/big", &who(5), t0 + ms(71)));
    }

    #[test]
    fn a_listing_due_now_stands_for_what_was_pending_and_the_wait_is_capped() {
        let mut p = Pacer::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        p.listed(b"/huge", s(5), t0);
        assert!(!p.admit(b"/huge", &who(1), t0));
        // 10 × 5 s capped at 200 ms.
        let cap = Duration::from_millis(200);
        assert!(p.due(t0 + cap - Duration::from_millis(1)).is_empty());
        // A record past the pace lists now: nothing left pending to list again.
        assert!(p.admit(b"/huge", &who(2), t0 + cap));
        assert!(p.due(t0 + s(2)).is_empty());
        // At shutdown what is pending comes back, due or not.
        p.listed(b"/huge", s(5), t0 + s(3));
        p.listed(b"/other", s(5), t0 + s(3));
        assert!(!p.admit(b"/other", &who(3), t0 + s(3)));
        assert!(!p.admit(b"/huge", &who(4), t0 + s(3)));
        let all: Vec<Vec<u8>> = p.take_all().into_iter().map(|(d, _)| d).collect();
        assert_eq!(all, vec![b"/huge".to_vec(), b"/other".to_vec()]);
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn listings_and_paced_records_are_counted() {
        let m = crate::telemetry::Metrics::new();
        let mut p = Pacer::counted(m.directory_listings.clone());
        let t0 = Instant::now();
        p.listed(b"/d", Duration::from_millis(2), t0);
        assert!(!p.admit(b"/d", &who(1), t0));
        assert!(!p.admit(b"/d", &who(1), t0));
        let get = |o: &str| m.directory_listings.with_label_values(&[o]).get();
        assert_eq!((get("listed"), get("paced")), (1, 2));
    }
}
