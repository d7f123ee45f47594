//! Refresh families and revocations in the shared store.
//!
//! Each operation is one atomic step: a Lua script on Redis (server clock), the same
//! steps under the shard lock in memory ([`session::rotate`] is the one definition).
//! Revocations are also appended to a sorted set that every instance polls, so a logout
//! on one instance reaches the others within a poll interval.

use std::time::Duration;

use bytes::Bytes;
#[cfg(feature = "redis")]
use redis::Script;

use super::memory::Write;
use super::shared::{Backends, SharedStore};
use super::{FailMode, Routed, StoreError, StoreResult};
use crate::session::{self, Family, RotateArgs, Rotation, RotationWrite};

const KIND_FAMILY: &str = "rf";
const KIND_REVOKED: &str = "revoked";

#[cfg(feature = "redis")]
fn scripts() -> &'static (Script, Script, Script) {
    static S: std::sync::OnceLock<(Script, Script, Script)> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        (
            Script::new(include_str!("lua/session_create.lua")),
            Script::new(include_str!("lua/session_rotate.lua")),
            Script::new(include_str!("lua/session_revoke.lua")),
        )
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn decode(raw: &[u8]) -> StoreResult<Family> {
    serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt(format!("refresh family: {e}")))
}

fn encode(f: &Family) -> Bytes {
    Bytes::from(serde_json::to_vec(f).unwrap_or_default())
}

/// A revocation read back from the shared list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The session id.
    pub sid: String,
    /// Seconds since the epoch after which the session's access tokens are all expired.
    pub until: u64,
}

impl SharedStore {
    fn family_key(&self, sid: &str) -> String {
        self.key(KIND_FAMILY, sid)
    }

    /// Starts a family `sid` for `family` (its `abs` is set by the store), living at most
    /// `absolute`, and `idle` without a refresh.
    pub async fn session_create(
        &self,
        sid: &str,
        family: &Family,
        absolute: Duration,
        idle: Duration,
        mode: FailMode,
    ) -> Routed<()> {
        self.traced("session_create", async {
            let key = self.family_key(sid);
            let local = |store: &super::MemoryStore| {
                let mut f = family.clone();
                store.update(&key, |now_us, _| {
                    f.abs = now_us / 1000 + ms(absolute);
                    ((), Write::Set(encode(&f), absolute.min(idle)))
                })
            };
            match &self.inner.shared {
                Backends::Memory => match local(&self.inner.local) {
                    Ok(()) => Routed::Shared(()),
                    Err(_) => Routed::Unavailable,
                },
                #[cfg(feature = "redis")]
                Backends::Redis(r) => {
                    let json = String::from_utf8_lossy(&encode(family)).into_owned();
                    let script = &scripts().0;
                    let res = r
                        .call(|mut c| {
                            let key = key.clone();
                            let json = json.clone();
                            async move {
                                script
                                    .key(key)
                                    .arg(json)
                                    .arg(ms(absolute))
                                    .arg(ms(idle))
                                    .invoke_async::<i64>(&mut c)
                                    .await
                            }
                        })
                        .await;
                    match res {
                        Ok(_) => Routed::Shared(()),
                        Err(_) => {
                            self.fallback(mode, async { local(&self.inner.local) })
                                .await
                        }
                    }
                }
            }
        })
        .await
    }

    /// Presents a refresh token of family `sid` ([`session::rotate`]).
    pub async fn session_rotate(
        &self,
        sid: &str,
        args: RotateArgs<'_>,
        mode: FailMode,
    ) -> Routed<Rotation> {
        self.traced("session_rotate", async {
            let key = self.family_key(sid);
            let local = |store: &super::MemoryStore| -> StoreResult<Rotation> {
                let mut failed = None;
                let out = store.update(&key, |now_us, raw| {
                    let current = match raw.map(|r| decode(r)) {
                        None => None,
                        Some(Ok(f)) => Some(f),
                        Some(Err(e)) => {
                            failed = Some(e);
                            return (Rotation::Invalid, Write::Keep);
                        }
                    };
                    let (outcome, write) = session::rotate(current, now_us / 1000, args);
                    let write = match write {
                        RotationWrite::Keep => Write::Keep,
                        RotationWrite::Set(f, ttl) => {
                            Write::Set(encode(&f), Duration::from_millis(ttl))
                        }
                        // The memory store cannot keep a TTL across a write; the family's
                        // absolute end bounds it instead.
                        RotationWrite::SetKeepTtl(f) => {
                            let left = f.abs.saturating_sub(now_us / 1000).max(1);
                            Write::Set(encode(&f), Duration::from_millis(left))
                        }
                    };
                    (outcome, write)
                })?;
                match failed {
                    Some(e) => Err(e),
                    None => Ok(out),
                }
            };
            match &self.inner.shared {
                Backends::Memory => match local(&self.inner.local) {
                    Ok(r) => Routed::Shared(r),
                    Err(_) => Routed::Unavailable,
                },
                #[cfg(feature = "redis")]
                Backends::Redis(r) => {
                    let script = &scripts().1;
                    let res = r
                        .call(|mut c| {
                            let key = key.clone();
                            async move {
                                script
                                    .key(key)
                                    .arg(args.presented)
                                    .arg(args.next_hash)
                                    .arg(args.next_sealed)
                                    .arg(args.grace_ms)
                                    .arg(args.idle_ms)
                                    .invoke_async::<(String, String)>(&mut c)
                                    .await
                            }
                        })
                        .await
                        .and_then(|(outcome, json)| {
                            Ok(match outcome.as_str() {
                                "rotated" => Rotation::Rotated(decode(json.as_bytes())?),
                                "replayed" => Rotation::Replayed(decode(json.as_bytes())?),
                                "reused" => Rotation::Reused(decode(json.as_bytes())?),
                                _ => Rotation::Invalid,
                            })
                        });
                    match res {
                        Ok(r) => Routed::Shared(r),
                        Err(_) => {
                            self.fallback(mode, async { local(&self.inner.local) })
                                .await
                        }
                    }
                }
            }
        })
        .await
    }

    /// Revokes family `sid` (logout); the family as it was, if it existed.
    pub async fn session_revoke(&self, sid: &str, mode: FailMode) -> Routed<Option<Family>> {
        self.traced("session_revoke", async {
            let key = self.family_key(sid);
            let local = |store: &super::MemoryStore| -> StoreResult<Option<Family>> {
                store.update(&key, |now_us, raw| match raw.and_then(|r| decode(r).ok()) {
                    None => (None, Write::Keep),
                    Some(mut f) => {
                        f.rev = true;
                        let left = f.abs.saturating_sub(now_us / 1000).max(1);
                        (
                            Some(f.clone()),
                            Write::Set(encode(&f), Duration::from_millis(left)),
                        )
                    }
                })
            };
            match &self.inner.shared {
                Backends::Memory => match local(&self.inner.local) {
                    Ok(r) => Routed::Shared(r),
                    Err(_) => Routed::Unavailable,
                },
                #[cfg(feature = "redis")]
                Backends::Redis(r) => {
                    let script = &scripts().2;
                    let res = r
                        .call(|mut c| {
                            let key = key.clone();
                            async move { script.key(key).invoke_async::<String>(&mut c).await }
                        })
                        .await
                        .and_then(|json| {
                            if json.is_empty() {
                                Ok(None)
                            } else {
                                decode(json.as_bytes()).map(Some)
                            }
                        });
                    match res {
                        Ok(r) => Routed::Shared(r),
                        Err(_) => {
                            self.fallback(mode, async { local(&self.inner.local) })
                                .await
                        }
                    }
                }
            }
        })
        .await
    }

    /// Appends a revocation to the shared list (a no-op without Redis: one instance).
    pub async fn revocation_publish(&self, sid: &str, until: u64) -> StoreResult<()> {
        self.traced("revocation_publish", async {
            #[cfg(feature = "redis")]
            if let Backends::Redis(r) = &self.inner.shared {
                let key = self.key(KIND_REVOKED, "list");
                let member = format!("{sid}|{until}");
                return r
                    .call(|mut c| async move {
                        let t: (String, String) = redis::cmd("TIME").query_async(&mut c).await?;
                        let now_ms = t.0.parse::<u64>().unwrap_or(0) * 1000
                            + t.1.parse::<u64>().unwrap_or(0) / 1000;
                        redis::pipe()
                            .cmd("ZADD")
                            .arg(&key)
                            .arg(now_ms)
                            .arg(&member)
                            .ignore()
                            .cmd("PEXPIRE")
                            .arg(&key)
                            .arg(86_400_000u64)
                            .ignore()
                            .query_async::<()>(&mut c)
                            .await
                    })
                    .await;
            }
            let _ = (sid, until);
            Ok(())
        })
        .await
    }

    /// Revocations appended after `cursor` (a store timestamp in ms; start with 0), and the
    /// cursor to pass next time. Entries older than `keep` are pruned on the way.
    pub async fn revocations_since(
        &self,
        cursor: u64,
        keep: Duration,
    ) -> StoreResult<(Vec<RevokedEntry>, u64)> {
        self.traced("revocations_since", async {
            #[cfg(feature = "redis")]
            if let Backends::Redis(r) = &self.inner.shared {
                let key = self.key(KIND_REVOKED, "list");
                let keep_ms = ms(keep);
                let rows: Vec<(String, f64)> = r
                    .call(|mut c| async move {
                        let t: (String, String) = redis::cmd("TIME").query_async(&mut c).await?;
                        let now_ms = t.0.parse::<u64>().unwrap_or(0) * 1000
                            + t.1.parse::<u64>().unwrap_or(0) / 1000;
                        let (_, rows): ((), Vec<(String, f64)>) = redis::pipe()
                            .cmd("ZREMRANGEBYSCORE")
                            .arg(&key)
                            .arg("-inf")
                            .arg(now_ms.saturating_sub(keep_ms))
                            .cmd("ZRANGEBYSCORE")
                            .arg(&key)
                            .arg(format!("({cursor}"))
                            .arg("+inf")
                            .arg("WITHSCORES")
                            .query_async(&mut c)
                            .await?;
                        Ok(rows)
                    })
                    .await?;
                let mut next = cursor;
                let entries = rows
                    .into_iter()
                    .filter_map(|(member, score)| {
                        next = next.max(score as u64);
                        let (sid, until) = member.rsplit_once('|')?;
                        Some(RevokedEntry {
                            sid: sid.to_owned(),
                            until: until.parse().ok()?,
                        })
                    })
                    .collect();
                return Ok((entries, next));
            }
            let _ = keep;
            Ok((Vec::new(), cursor))
        })
        .await
    }
}
