//! The shared log of response-cache purges.
//!
//! A purge (by key, prefix, tag or path: opaque here) is appended with a sequence number
//! from one counter, so every instance applies the same purges in the same order: each
//! polls the log for what came after the last sequence it applied. The log keeps the
//! newest [`PURGE_LOG_LEN`] purges for [`PURGE_LOG_TTL`] after the last one; an instance
//! that finds the log has moved past its cursor (it was cut off longer than the log
//! reaches back) learns it from [`PurgePage::gap`] and must drop what it cached.
//!
//! Without Redis there is one instance and no log: purges apply where they are made.

use std::time::Duration;

use super::StoreResult;
use super::shared::{Backends, SharedStore};

/// Purges the log keeps.
pub const PURGE_LOG_LEN: u64 = 10_000;

/// How long the log lives after its last purge (the sequence counter is kept: numbers
/// never repeat while entries stored under them live).
pub const PURGE_LOG_TTL: Duration = Duration::from_secs(24 * 3600);

/// Purges read at most per poll: a full page means there may be more.
pub const PURGE_PAGE: usize = 1_000;

const KIND: &str = "cachepurge";

/// What one poll of the purge log found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgePage {
    /// Purges after the cursor, oldest first, with their sequence numbers.
    pub purges: Vec<(u64, String)>,
    /// The oldest sequence number the log still holds (0: empty).
    pub oldest: u64,
    /// The latest sequence number handed out (0: none yet).
    pub latest: u64,
    /// Purges after the cursor are missing from the log: they were trimmed, or the log
    /// expired or was lost with Redis. What was cached before cannot be trusted.
    pub gap: bool,
}

impl SharedStore {
    /// Whether purges are shared through a log (Redis), rather than applying only here.
    pub fn shares_purges(&self) -> bool {
        !matches!(self.inner.shared, Backends::Memory)
    }

    /// Appends a purge to the shared log; its sequence number. `Ok(0)` without Redis.
    pub async fn cache_purge_publish(&self, purge: &str) -> StoreResult<u64> {
        #[cfg(feature = "redis")]
        if let Backends::Redis(r) = &self.inner.shared {
            static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
            let script =
                SCRIPT.get_or_init(|| redis::Script::new(include_str!("lua/cache_purge.lua")));
            let seq_key = self.key(KIND, "seq");
            let log_key = self.key(KIND, "log");
            let ttl_ms = u64::try_from(PURGE_LOG_TTL.as_millis()).unwrap_or(u64::MAX);
            return r
                .call(|mut c| async move {
                    script
                        .key(&seq_key)
                        .key(&log_key)
                        .arg(purge)
                        .arg(PURGE_LOG_LEN)
                        .arg(ttl_ms)
                        .invoke_async::<u64>(&mut c)
                        .await
                })
                .await;
        }
        let _ = purge;
        Ok(0)
    }

    /// The purges after sequence `cursor` (start with the `latest` of a first call with
    /// cursor 0 to skip history). Without Redis: an empty page.
    pub async fn cache_purges_since(&self, cursor: u64) -> StoreResult<PurgePage> {
        #[cfg(feature = "redis")]
        if let Backends::Redis(r) = &self.inner.shared {
            let seq_key = self.key(KIND, "seq");
            let log_key = self.key(KIND, "log");
            let (latest, oldest, rows): (Option<u64>, Vec<(String, f64)>, Vec<String>) = r
                .call(|mut c| async move {
                    redis::pipe()
                        .cmd("GET")
                        .arg(&seq_key)
                        .cmd("ZRANGE")
                        .arg(&log_key)
                        .arg(0)
                        .arg(0)
                        .arg("WITHSCORES")
                        .cmd("ZRANGEBYSCORE")
                        .arg(&log_key)
                        .arg(format!("({cursor}"))
                        .arg("+inf")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(PURGE_PAGE)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let latest = latest.unwrap_or(0);
            let oldest = oldest.first().map_or(0, |(_, s)| *s as u64);
            let purges: Vec<(u64, String)> = rows
                .into_iter()
                .filter_map(|m| {
                    let (seq, body) = m.split_once('|')?;
                    Some((seq.parse().ok()?, body.to_owned()))
                })
                .collect();
            // Missing: the first purge after the cursor is not the next number, or the
            // counter itself went back (the log was lost with Redis's data).
            let next = purges.first().map_or(latest.max(cursor) + 1, |(s, _)| *s);
            let gap = (cursor > 0 && latest < cursor) || next > cursor + 1 && latest > cursor;
            return Ok(PurgePage {
                purges,
                oldest,
                latest,
                gap,
            });
        }
        let _ = cursor;
        Ok(PurgePage::default())
    }
}
