//! Alert once per difference. The daemon sends each distinct difference from the baseline
//! once: a restart, a SIGHUP or a scheduled comparison that finds it again sends nothing new.
//! What was sent is kept in the baseline database (table `alerted`) as tokens: an HMAC under
//! the baseline key of the path, the action, the path it came from and the current state
//! (every recorded attribute, times included). A new change to a file that already differs has
//! another current state, hence another token, and is alerted. `fimd accept` forgets the tokens
//! of what it accepts, `fimd init` all of them; a full comparison forgets those of differences
//! that are gone (a file put back as it was).
use std::collections::{HashMap, HashSet};

use hmac::Mac;

use crate::baseline::seal::Key;
use crate::compare::Change;

const TOKEN_DOMAIN: &[u8] = b"fimd-alerted-v1\0";

/// The token of a difference: HMAC-SHA256 (the baseline key) of the path, the action, the
/// previous path and the canonical encoding of the current state (none when deleted).
pub fn token(key: &Key, c: &Change) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(TOKEN_DOMAIN);
    for part in [c.path(), c.action.as_str().as_bytes()] {
        buf.extend_from_slice(&(part.len() as u64).to_le_bytes());
        buf.extend_from_slice(part);
    }
    match &c.previous {
        Some(p) => {
            buf.push(1);
            buf.extend_from_slice(&(p.path.len() as u64).to_le_bytes());
            buf.extend_from_slice(&p.path);
        }
        None => buf.push(0),
    }
    match &c.current {
        Some(e) => {
            buf.push(1);
            e.encode_into(&mut buf);
        }
        None => buf.push(0),
    }
    let mut mac = key.sealer();
    mac.update(&buf);
    mac.finalize().into_bytes().to_vec()
}

/// What the daemon has alerted, and which differences are outstanding now.
#[derive(Debug, Default)]
pub struct Alerted {
    /// Tokens of the differences sent (loaded from the database, then kept up).
    sent: HashSet<Vec<u8>>,
    /// The outstanding difference of each path, by its token.
    outstanding: HashMap<Vec<u8>, Vec<u8>>,
}

impl Alerted {
    /// Starts from the tokens the database holds.
    pub fn new(sent: HashSet<Vec<u8>>) -> Alerted {
        Alerted {
            sent,
            outstanding: HashMap::new(),
        }
    }

    /// Takes `token` as the outstanding difference of `path`; true when it was never sent
    /// (send it now), false when it was.
    pub fn first(&mut self, path: &[u8], token: Vec<u8>) -> bool {
        self.outstanding.insert(path.to_vec(), token.clone());
        self.sent.insert(token)
    }

    /// `path` matches the baseline again.
    pub fn resolved(&mut self, path: &[u8]) {
        self.outstanding.remove(path);
    }

    /// Keeps only the outstanding differences of the paths `still` accepts.
    pub fn retain_outstanding(&mut self, mut still: impl FnMut(&[u8]) -> bool) {
        self.outstanding.retain(|p, _| still(p));
    }

    /// Forgets what is outstanding (a full comparison recounts it).
    pub fn clear_outstanding(&mut self) {
        self.outstanding.clear();
    }

    /// Replaces what was sent by the database's tokens (after an accept removed some).
    pub fn reload_sent(&mut self, sent: HashSet<Vec<u8>>) {
        self.sent = sent;
    }

    /// How many differences are outstanding.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// The tokens of the outstanding differences.
    pub fn outstanding_tokens(&self) -> HashSet<Vec<u8>> {
        self.outstanding.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_is_first_once_and_a_new_state_is_first_again() {
        let mut a = Alerted::new(HashSet::from([b"t1".to_vec()]));
        assert!(!a.first(b"/x", b"t1".to_vec()), "sent before the restart");
        assert!(a.first(b"/x", b"t2".to_vec()));
        assert!(!a.first(b"/x", b"t2".to_vec()));
        assert!(a.first(b"/y", b"t3".to_vec()));
        assert_eq!(a.outstanding(), 2);
        a.resolved(b"/x");
        assert_eq!(a.outstanding_tokens(), HashSet::from([b"t3".to_vec()]));
        a.retain_outstanding(|p| p != b"/y");
        assert_eq!(a.outstanding(), 0);
    }
}
