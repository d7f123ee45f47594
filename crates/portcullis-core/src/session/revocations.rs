//! Revoked sessions, known locally: every request checks here, without a store round
//! trip. Entries live until the last access token of the session would have expired.

use std::collections::HashMap;
use std::sync::RwLock;

/// Session ids revoked, with the time (seconds since the epoch) after which no access
/// token of theirs can be valid any more.
#[derive(Debug, Default)]
pub struct Revocations {
    map: RwLock<HashMap<String, u64>>,
}

impl Revocations {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `sid` is revoked until `until` (seconds since the epoch).
    pub fn insert(&self, sid: &str, until: u64) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(sid.to_owned()).or_insert(0);
        *e = (*e).max(until);
    }

    /// Whether `sid` is revoked.
    pub fn contains(&self, sid: &str) -> bool {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(sid)
    }

    /// Forgets entries whose tokens have all expired by `now` (seconds since the epoch).
    pub fn purge(&self, now: u64) -> usize {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        let before = m.len();
        m.retain(|_, until| *until > now);
        before - m.len()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_until_their_tokens_expire() {
        let r = Revocations::new();
        r.insert("s1", 100);
        r.insert("s1", 50);
        assert!(r.contains("s1"));
        assert!(!r.contains("s2"));
        assert_eq!(r.purge(99), 0);
        assert_eq!(r.purge(100), 1);
        assert!(!r.contains("s1"));
    }
}
