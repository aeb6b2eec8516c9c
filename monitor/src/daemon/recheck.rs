//! The recheck queue: files to rehash later, because a change may not show yet. A store through
//! a shared writable mapping raises no event once its page is writable (on tmpfs writeback never
//! write-protects it again), and a file found empty right after a truncation (`>`, O_TRUNC) may
//! still have its write to land. Bounded: one entry per path.
use std::time::{Duration, Instant};

use super::modifier::Modifier;

/// After a change through a shared writable mapping: when to look again, from the change.
pub const MMAP_RECHECKS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

/// One planned look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recheck {
    pub path: Vec<u8>,
    /// When it is due.
    pub at: Instant,
    /// The writer the look reports, if it finds a change.
    pub who: Modifier,
    /// Index into `MMAP_RECHECKS` of this look: the next one is the following delay.
    pub looks: usize,
}

/// The planned looks, at most one per path, in the order they were planned.
#[derive(Debug, Default)]
pub struct RecheckQueue {
    items: Vec<Recheck>,
}

impl RecheckQueue {
    /// Planned looks (entries, for `fim_hash_queue_length`).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn contains(&self, path: &[u8]) -> bool {
        self.items.iter().any(|r| r.path == path)
    }

    /// A later look already planned for `path` now stands for `who`'s change too.
    pub fn restand(&mut self, path: &[u8], who: &Modifier) {
        for r in self.items.iter_mut().filter(|r| r.path == path) {
            r.who = who.clone();
        }
    }

    /// A change through a shared writable mapping: the whole schedule starts again from `now`.
    pub fn mapped(&mut self, path: &[u8], who: Modifier, now: Instant) {
        self.items.retain(|r| r.path != path);
        self.items.push(Recheck {
            path: path.to_vec(),
            at: now + MMAP_RECHECKS[0],
            who,
            looks: 0,
        });
    }

    /// A file found empty: one more look after the first delay, unless one is planned.
    pub fn found_empty(&mut self, path: Vec<u8>, who: Modifier, now: Instant) {
        if self.contains(&path) {
            return;
        }
        self.items.push(Recheck {
            path,
            at: now + MMAP_RECHECKS[0],
            who,
            looks: MMAP_RECHECKS.len() - 1,
        });
    }

    /// The looks due at `now`, in the order they were planned; each is planned again at its
    /// next delay (from `now`) while the schedule has one.
    pub fn take_due(&mut self, now: Instant) -> Vec<Recheck> {
        if !self.items.iter().any(|r| r.at <= now) {
            return Vec::new();
        }
        let (due, mut later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|r| r.at <= now);
        for r in &due {
            if let Some(next) = MMAP_RECHECKS.get(r.looks + 1) {
                later.push(Recheck {
                    path: r.path.clone(),
                    at: now + *next,
                    who: r.who.clone(),
                    looks: r.looks + 1,
                });
            }
        }
        self.items = later;
        due
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
            comm: format!("w{pid}"),
            cgroup_id: 1,
            hook: "file_mprotect",
        }
    }

    fn paths(v: &[Recheck]) -> Vec<&[u8]> {
        v.iter().map(|r| &r.path[..]).collect()
    }

    #[test]
    fn a_mapped_file_is_looked_at_on_each_delay_then_dropped() {
        let t0 = Instant::now();
        let mut q = RecheckQueue::default();
        q.mapped(b"/m", who(1), t0);
        assert!(q.take_due(t0).is_empty(), "not due before the first delay");
        let mut at = t0;
        let mut looks = Vec::new();
        for delay in MMAP_RECHECKS {
            at += delay;
            let due = q.take_due(at);
            assert_eq!(paths(&due), vec![&b"/m"[..]]);
            looks.push(due[0].looks);
        }
        assert_eq!(looks, vec![0, 1, 2]);
        assert_eq!(q.len(), 0, "the schedule is over");
        assert!(q.take_due(at + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn a_new_mapped_write_restarts_the_schedule_once() {
        let t0 = Instant::now();
        let mut q = RecheckQueue::default();
        q.mapped(b"/m", who(1), t0);
        q.take_due(t0 + MMAP_RECHECKS[0]);
        let t1 = t0 + Duration::from_secs(1);
        q.mapped(b"/m", who(2), t1);
        assert_eq!(q.len(), 1, "one entry per path");
        let due = q.take_due(t1 + MMAP_RECHECKS[0]);
        assert_eq!((due[0].looks, due[0].who.pid), (0, 2));
    }

    #[test]
    fn an_empty_file_gets_one_look_and_never_a_second_entry() {
        let t0 = Instant::now();
        let mut q = RecheckQueue::default();
        q.found_empty(b"/e".to_vec(), who(1), t0);
        q.found_empty(b"/e".to_vec(), who(2), t0);
        assert_eq!(q.len(), 1);
        let due = q.take_due(t0 + MMAP_RECHECKS[0]);
        assert_eq!((paths(&due), due[0].who.pid), (vec![&b"/e"[..]], 1));
        assert_eq!(q.len(), 0, "the last look of the schedule");
        // A mapped file already planned is not replaced by an empty-file look.
        q.mapped(b"/m", who(3), t0);
        q.found_empty(b"/m".to_vec(), who(4), t0);
        assert_eq!(q.take_due(t0 + MMAP_RECHECKS[0])[0].looks, 0);
    }

    #[test]
    fn due_looks_come_in_planned_order_and_later_ones_wait() {
        let t0 = Instant::now();
        let mut q = RecheckQueue::default();
        q.mapped(b"/b", who(1), t0);
        q.mapped(b"/a", who(2), t0 + Duration::from_millis(10));
        q.mapped(b"/c", who(3), t0 + Duration::from_secs(5));
        let due = q.take_due(t0 + Duration::from_millis(200));
        assert_eq!(paths(&due), vec![&b"/b"[..], &b"/a"[..]]);
        assert!(q.contains(b"/c") && q.contains(b"/a") && q.len() == 3);
        q.restand(b"/c", &who(9));
        let due = q.take_due(t0 + Duration::from_secs(6));
        assert!(due.iter().any(|r| r.path == b"/c" && r.who.pid == 9));
    }
}
