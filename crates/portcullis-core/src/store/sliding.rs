//! Sliding-window rate limits in the shared store.
//!
//! The decision is [`ratelimit::sliding::decide`](crate::ratelimit::sliding::decide),
//! applied atomically to one key: in Redis by `lua/sliding_window.lua` (one round trip, the
//! server's clock), in memory under the shard lock
//! ([`MemoryStore::update`](super::MemoryStore)). Both keep the state as one string,
//! `window:prev:cur` (decimal; e.g. `1754300000:7:3`), for two windows after each write; an
//! absent or unreadable value is no state.
//!
//! # Fail mode
//!
//! As for GCRA: when Redis is unavailable the caller's [`FailMode`] decides, and with
//! `Local` the same decision runs on this instance's memory store against the `local`
//! quota (the shared one divided among the instances), answering `Routed::Local`.

use bytes::Bytes;

use super::memory::Write;
use super::shared::{Backends, SharedStore};
use super::{FailMode, MemoryStore, Routed, StoreResult};
use crate::ratelimit::sliding::{self, SlidingParams, SlidingState};
use crate::ratelimit::{Decision, Quota};

/// The stored form, `window:prev:cur`.
fn encode(s: SlidingState) -> Bytes {
    Bytes::from(format!("{}:{}:{}", s.window, s.prev, s.cur))
}

/// Reads the stored form; anything else is no state, as in the script.
fn decode(raw: &[u8]) -> Option<SlidingState> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut parts = text.split(':');
    let mut next = || {
        parts
            .next()
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let state = SlidingState {
        window: next()?.parse().ok()?,
        prev: next()?.parse().ok()?,
        cur: next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(state)
}

/// One decision on the memory store, atomically.
fn on_memory(store: &MemoryStore, key: &str, p: SlidingParams, cost: u32) -> StoreResult<Decision> {
    store.update(key, |now_us, raw| {
        let state = raw.and_then(|r| decode(r));
        let (decision, write) = sliding::decide(now_us, state, p, cost);
        let write = match write {
            Some(s) => Write::Set(encode(s), p.ttl()),
            None => Write::Keep,
        };
        (decision, write)
    })
}

#[cfg(feature = "redis")]
async fn on_redis(
    redis: &super::RedisStore,
    key: &str,
    p: SlidingParams,
    cost: u32,
) -> StoreResult<Decision> {
    use super::StoreError;
    use std::time::Duration;

    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| redis::Script::new(include_str!("lua/sliding_window.lua")));
    let r: Vec<i64> = redis
        .call(|mut c| async move {
            script
                .key(key)
                .arg(p.per_us.get())
                .arg(p.limit.get())
                .arg(cost)
                .invoke_async(&mut c)
                .await
        })
        .await?;
    let [allowed, remaining, reset_us, retry_us] = r[..] else {
        return Err(StoreError::Corrupt(format!(
            "the sliding-window script returned {} values",
            r.len()
        )));
    };
    let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    Ok(Decision {
        allowed: allowed == 1,
        limit: p.limit.get(),
        remaining: u32::try_from(remaining).unwrap_or(0),
        reset_after: us(reset_us),
        retry_after: us(retry_us),
    })
}

impl SharedStore {
    /// A sliding-window decision for `key` ([`crate::ratelimit::sliding`]): `shared` quota
    /// against the shared store, `local` quota when falling back to this instance's memory.
    /// `cost` 0 checks without counting.
    pub async fn sliding_window(
        &self,
        key: &str,
        shared: &Quota,
        local: &Quota,
        cost: u32,
        mode: FailMode,
    ) -> Routed<Decision> {
        match &self.inner.shared {
            Backends::Memory => {
                let _ = (local, mode);
                match on_memory(&self.inner.local, key, shared.into(), cost) {
                    Ok(d) => Routed::Shared(d),
                    Err(_) => Routed::Unavailable,
                }
            }
            #[cfg(feature = "redis")]
            Backends::Redis(r) => match on_redis(r, key, shared.into(), cost).await {
                Ok(d) => Routed::Shared(d),
                Err(_) => {
                    self.fallback(mode, async {
                        on_memory(&self.inner.local, key, local.into(), cost)
                    })
                    .await
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn the_stored_form_round_trips_and_rejects_the_rest() {
        let s = SlidingState {
            window: 1_754_300_000,
            prev: 7,
            cur: 3,
        };
        assert_eq!(&encode(s)[..], b"1754300000:7:3");
        assert_eq!(decode(&encode(s)), Some(s));
        for bad in [
            &b""[..],
            b"1:2",
            b"1:2:3:4",
            b"1:-2:3",
            b"1:+2:3",
            b"a:2:3",
            b"1::3",
            b"1:2:99999999999",
            b"1754300000",
            b"\xff:1:1",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn memory_keeps_the_state_for_two_windows() {
        let clock = ManualClock::new();
        let mem = MemoryStore::new(1000, Arc::new(clock.clone()));
        let store = SharedStore::memory(mem.clone(), "t");
        let q = Quota::new(2, Duration::from_secs(1), None).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                let d = store.sliding_window("k", &q, &q, 1, FailMode::Local).await;
                assert_eq!(d.clone().value().map(|d| d.remaining), Some(1));
                assert!(!d.is_fallback());
                let raw = mem.update("k", |_, v| (v.cloned(), Write::Keep)).unwrap();
                assert_eq!(raw.as_deref(), Some(&b"0:0:1"[..]));
                clock.advance(Duration::from_millis(1999));
                let raw = mem.update("k", |_, v| (v.cloned(), Write::Keep)).unwrap();
                assert!(raw.is_some(), "expired early");
                clock.advance(Duration::from_millis(1));
                let raw = mem.update("k", |_, v| (v.cloned(), Write::Keep)).unwrap();
                assert_eq!(raw, None, "still there after two windows");
                // Something else under the key is no state, and is replaced.
                mem.update("k", |_, _| {
                    (
                        (),
                        Write::Set(Bytes::from_static(b"junk"), Duration::from_secs(9)),
                    )
                })
                .unwrap();
                let d = store.sliding_window("k", &q, &q, 1, FailMode::Local).await;
                assert_eq!(d.value().map(|d| d.remaining), Some(1));
            });
    }
}
