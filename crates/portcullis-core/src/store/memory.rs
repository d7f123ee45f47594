//! The in-memory store: bounded, sharded, with TTLs on the injected clock.
//!
//! - **Concurrent without a global lock**: keys hash to one of 64 shards, each behind its
//!   own mutex held for a few hundred nanoseconds.
//! - **Bounded**: at most `max_keys` entries (rounded up to a multiple of the shard
//!   count). A full shard evicts the entry closest to expiry among a random sample of
//!   five (expired entries first), like Redis's `volatile-ttl`; a key flood cannot grow
//!   memory, it can only shorten the life of other keys.
//! - **Expiry**: a key past its TTL is absent on read. Each write also samples a few
//!   random entries and drops the expired ones, and [`MemoryStore::purge_expired`] sweeps
//!   everything (the gateway runs it periodically), so dead entries do not linger.
//!
//! Time comes from the [`Clock`], so TTLs and rate limits are tested on a
//! [`ManualClock`](crate::ManualClock) without sleeping.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use portcullis_core::store::{Backend, MemoryStore};
//! use portcullis_core::ManualClock;
//! use std::{sync::Arc, time::Duration};
//!
//! let clock = ManualClock::new();
//! let store = MemoryStore::new(1000, Arc::new(clock.clone()));
//! store.set("k", "v".into(), Duration::from_secs(1)).await.unwrap();
//! clock.advance(Duration::from_secs(1));
//! assert_eq!(store.get("k").await.unwrap(), None);
//! # });
//! ```

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;

use super::{Backend, StoreError, StoreResult};
use crate::Clock;
use crate::ratelimit::gcra::{self, GcraDecision, GcraParams};

const SHARDS: usize = 64;
/// Entries looked at to choose one to evict.
const EVICTION_SAMPLE: usize = 5;
/// Entries looked at for expiry on each write.
const EXPIRY_SAMPLE: usize = 2;

#[derive(Clone, Debug)]
enum Value {
    /// Boxed: a rate-limit key (the bulk of a flood) then takes 56 bytes in its shard,
    /// not 72.
    Bytes(Box<Bytes>),
    Int(i64),
    /// A GCRA state, kept unencoded on the hot path.
    Gcra(gcra::GcraState),
}

impl Value {
    /// The value as Redis would hold it.
    fn to_bytes(&self) -> Bytes {
        match self {
            Value::Bytes(b) => (**b).clone(),
            Value::Int(i) => Bytes::from(i.to_string()),
            Value::Gcra(g) => Bytes::from(g.encode()),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    value: Value,
    /// Microseconds since the store's epoch.
    expires_us: u64,
}

/// A key as the store holds it: a 128-bit keyed hash (SipHash under two random keys) of
/// the caller's string. Keeping the digest instead of the string saves its allocation
/// (about 48 bytes for a rate-limit key, a third of an entry's memory); the keys are
/// secret, so no one can make two strings collide on purpose, and by chance two of a
/// million keys share a digest with probability about 10^-27.
type Digest = (u64, u64);

/// Hashes a [`Digest`] for the shard's table: it is already uniformly random.
#[derive(Default)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(32) ^ n;
    }
}

struct Shard {
    map: IndexMap<Digest, Entry, std::hash::BuildHasherDefault<DigestHasher>>,
    rng: u64,
}

impl Shard {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn live(&mut self, key: Digest, now: u64) -> Option<&mut Entry> {
        let idx = self.map.get_index_of(&key)?;
        if self.map[idx].expires_us <= now {
            self.map.swap_remove_index(idx);
            return None;
        }
        Some(&mut self.map[idx])
    }

    fn sweep_sample(&mut self, now: u64) {
        for _ in 0..EXPIRY_SAMPLE {
            let len = self.map.len();
            if len == 0 {
                return;
            }
            let i = (self.next() % len as u64) as usize;
            if self.map[i].expires_us <= now {
                self.map.swap_remove_index(i);
            }
        }
    }

    fn insert(&mut self, key: Digest, entry: Entry, cap: usize, now: u64) {
        if let Some(e) = self.map.get_mut(&key) {
            *e = entry;
            return;
        }
        self.sweep_sample(now);
        while self.map.len() >= cap {
            let len = self.map.len() as u64;
            let mut victim = (self.next() % len) as usize;
            for _ in 1..EVICTION_SAMPLE {
                let i = (self.next() % len) as usize;
                if self.map[i].expires_us < self.map[victim].expires_us {
                    victim = i;
                }
            }
            self.map.swap_remove_index(victim);
        }
        if self.map.len() == self.map.capacity() {
            // Grow by a quarter, not by doubling: a shard just past a power of two would
            // otherwise hold room for nearly twice its entries (72 bytes each), which is
            // most of the store's memory at a million keys.
            self.map.reserve_exact((self.map.len() / 4).max(64));
        }
        self.map.insert(key, entry);
    }
}

/// The in-memory backend. Clones share the same data.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    /// Two independently keyed hashers: the two halves of a [`Digest`].
    hasher: (RandomState, RandomState),
    per_shard: usize,
    clock: Arc<dyn Clock>,
    epoch: Instant,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_keys", &(self.inner.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

fn ttl_us(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX)
}

impl MemoryStore {
    /// A store of at most `max_keys` entries (at least one per shard).
    pub fn new(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        let per_shard = max_keys.div_ceil(SHARDS).max(1);
        let epoch = clock.now();
        let seed = clock
            .system_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x2545_F491, |d| d.as_nanos() as u64);
        let shards = (0..SHARDS)
            .map(|i| {
                Mutex::new(Shard {
                    map: IndexMap::default(),
                    rng: (seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
                })
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                shards,
                hasher: (RandomState::new(), RandomState::new()),
                per_shard,
                clock,
                epoch,
            }),
        }
    }

    fn now_us(&self) -> u64 {
        ttl_us(
            self.inner
                .clock
                .now()
                .saturating_duration_since(self.inner.epoch),
        )
    }

    /// The shard of `key`, locked, and the key's digest.
    fn shard(&self, key: &str) -> (MutexGuard<'_, Shard>, Digest) {
        let digest = (
            self.inner.hasher.0.hash_one(key),
            self.inner.hasher.1.hash_one(key),
        );
        // A panic while holding a shard cannot leave an entry half-written: every
        // mutation is a single map operation. So a poisoned lock is still usable.
        let shard = match self.inner.shards[(digest.1 % SHARDS as u64) as usize].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        (shard, digest)
    }

    /// Number of live and not-yet-swept entries.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .map_or_else(|p| p.into_inner().map.len(), |g| g.map.len())
            })
            .sum()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the store holds.
    pub fn capacity(&self) -> usize {
        self.inner.per_shard * SHARDS
    }

    /// Drops every expired entry; returns how many.
    pub fn purge_expired(&self) -> usize {
        let now = self.now_us();
        let mut removed = 0;
        for s in self.inner.shards.iter() {
            let mut g = match s.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let before = g.map.len();
            g.map.retain(|_, e| e.expires_us > now);
            removed += before - g.map.len();
        }
        removed
    }

    fn get_now(&self, key: &str) -> StoreResult<Option<Bytes>> {
        let now = self.now_us();
        let (mut s, digest) = self.shard(key);
        Ok(s.live(digest, now).map(|e| e.value.to_bytes()))
    }

    fn set_now(&self, key: &str, value: Bytes, ttl: Duration, only_if_absent: bool) -> bool {
        let now = self.now_us();
        let cap = self.inner.per_shard;
        let (mut s, digest) = self.shard(key);
        if only_if_absent && s.live(digest, now).is_some() {
            return false;
        }
        let entry = Entry {
            value: Value::Bytes(Box::new(value)),
            expires_us: now.saturating_add(ttl_us(ttl)),
        };
        s.insert(digest, entry, cap, now);
        true
    }

    fn incr_now(&self, key: &str, by: i64, ttl: Duration) -> StoreResult<i64> {
        let now = self.now_us();
        let cap = self.inner.per_shard;
        let (mut s, digest) = self.shard(key);
        if let Some(e) = s.live(digest, now) {
            let cur = match &e.value {
                Value::Int(i) => Some(*i),
                Value::Bytes(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok()),
                Value::Gcra(_) => None,
            }
            .ok_or_else(|| StoreError::Corrupt(format!("{key} does not hold an integer")))?;
            let next = cur
                .checked_add(by)
                .ok_or_else(|| StoreError::Corrupt(format!("{key} would overflow")))?;
            e.value = Value::Int(next);
            return Ok(next);
        }
        let entry = Entry {
            value: Value::Int(by),
            expires_us: now.saturating_add(ttl_us(ttl)),
        };
        s.insert(digest, entry, cap, now);
        Ok(by)
    }

    fn gcra_now(&self, key: &str, params: GcraParams, cost: u32) -> StoreResult<GcraDecision> {
        let now = self.now_us();
        let cap = self.inner.per_shard;
        let (mut s, digest) = self.shard(key);
        let state = gcra_state(&mut s, digest, key, now, params)?;
        let (decision, write) = gcra::decide(now, state, params, cost);
        if let Some(g) = write {
            s.insert(digest, gcra_entry(g), cap, now);
        }
        Ok(decision)
    }

    fn gcra_batch_now(
        &self,
        key: &str,
        params: GcraParams,
        n: u32,
    ) -> StoreResult<Vec<GcraDecision>> {
        let now = self.now_us();
        let cap = self.inner.per_shard;
        let (mut s, digest) = self.shard(key);
        let state = gcra_state(&mut s, digest, key, now, params)?;
        let (decisions, write) = gcra::decide_batch(now, state, params, n);
        if let Some(g) = write {
            s.insert(digest, gcra_entry(g), cap, now);
        }
        Ok(decisions)
    }
}

/// The GCRA state of `key`, as the script reads it: unencoded, or in the stored form.
fn gcra_state(
    s: &mut Shard,
    digest: Digest,
    key: &str,
    now: u64,
    params: GcraParams,
) -> StoreResult<Option<gcra::GcraState>> {
    match s.live(digest, now) {
        None => Ok(None),
        Some(Entry {
            value: Value::Gcra(g),
            ..
        }) => Ok(Some(*g)),
        Some(e) => {
            let b = e.value.to_bytes();
            std::str::from_utf8(&b)
                .ok()
                .and_then(|t| gcra::GcraState::decode(t, params))
                .map(Some)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("{key} does not hold a rate-limit state"))
                })
        }
    }
}

/// A GCRA state lives until its TAT: then the bucket is full, as with no state.
fn gcra_entry(g: gcra::GcraState) -> Entry {
    Entry {
        value: Value::Gcra(g),
        expires_us: g.tat_us,
    }
}

/// What an atomic read-modify-write leaves behind ([`MemoryStore::update`]).
#[derive(Debug)]
pub(crate) enum Write {
    /// Leave the entry as it is.
    Keep,
    /// Replace the value, with a new time to live.
    Set(Bytes, Duration),
    /// Remove the entry.
    Delete,
}

impl MemoryStore {
    /// The value of `key` as bytes, if live.
    pub(crate) fn get_now_bytes(&self, key: &str) -> Option<Bytes> {
        self.get_now(key).ok().flatten()
    }

    /// An atomic read-modify-write of one key, the in-memory counterpart of a Lua script:
    /// `f` sees the time (the store's microseconds, the same clock as TTLs) and the current
    /// value, and says what to write; the shard stays locked throughout.
    pub(crate) fn update<T>(
        &self,
        key: &str,
        f: impl FnOnce(u64, Option<&Bytes>) -> (T, Write),
    ) -> StoreResult<T> {
        let now = self.now_us();
        let cap = self.inner.per_shard;
        let (mut s, digest) = self.shard(key);
        let current = s.live(digest, now).map(|e| e.value.to_bytes());
        let (out, write) = f(now, current.as_ref());
        match write {
            Write::Keep => {}
            Write::Delete => {
                s.map.swap_remove(&digest);
            }
            Write::Set(value, ttl) => {
                let entry = Entry {
                    value: Value::Bytes(Box::new(value)),
                    expires_us: now.saturating_add(ttl_us(ttl)),
                };
                s.insert(digest, entry, cap, now);
            }
        }
        Ok(out)
    }
}

impl Backend for MemoryStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        self.get_now(key)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> StoreResult<()> {
        self.set_now(key, value, ttl, false);
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: Bytes, ttl: Duration) -> StoreResult<bool> {
        Ok(self.set_now(key, value, ttl, true))
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let now = self.now_us();
        let (mut s, digest) = self.shard(key);
        let existed = s.live(digest, now).is_some();
        s.map.swap_remove(&digest);
        Ok(existed)
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> StoreResult<i64> {
        self.incr_now(key, by, ttl)
    }

    async fn gcra(&self, key: &str, params: GcraParams, cost: u32) -> StoreResult<GcraDecision> {
        self.gcra_now(key, params, cost)
    }

    async fn gcra_batch(
        &self,
        key: &str,
        params: GcraParams,
        n: u32,
    ) -> StoreResult<Vec<GcraDecision>> {
        self.gcra_batch_now(key, params, n)
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<Duration>> {
        let now = self.now_us();
        let (mut s, digest) = self.shard(key);
        Ok(s.live(digest, now)
            .map(|e| Duration::from_micros(e.expires_us - now)))
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_key_flood_stays_within_the_bound() {
        let clock = ManualClock::new();
        let s = MemoryStore::new(6400, Arc::new(clock.clone()));
        block(async {
            for i in 0..100_000 {
                s.set(
                    &format!("flood:{i}"),
                    Bytes::from_static(b"x"),
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
            }
        });
        assert!(s.len() <= s.capacity(), "{} > {}", s.len(), s.capacity());
        assert!(
            s.len() >= s.capacity() * 9 / 10,
            "the store should stay nearly full, got {}",
            s.len()
        );
    }

    #[test]
    fn eviction_prefers_expired_entries() {
        let clock = ManualClock::new();
        let s = MemoryStore::new(64, Arc::new(clock.clone()));
        block(async {
            // One long-lived key per shard is not guaranteed, so fill, expire, refill.
            for i in 0..64 {
                s.set(&format!("short:{i}"), Bytes::new(), Duration::from_secs(1))
                    .await
                    .unwrap();
            }
            clock.advance(Duration::from_secs(2));
            let purged = s.purge_expired();
            assert!(purged > 0);
            assert!(s.is_empty());
        });
    }
}
