//! Rate-limit checks in the shared store, for either algorithm.

use super::shared::{Backends, SharedStore};
use super::{FailMode, Routed};
use crate::ratelimit::{Algorithm, Decision, GcraDecision, Quota};

impl SharedStore {
    /// One rate-limit check of `key`: against `shared` in the shared store, or, when that
    /// is unavailable and `mode` is `Local`, against `local` (the quota divided among the
    /// instances) in this instance's memory. `cost` 0 peeks: answered as a request of
    /// one, counting nothing.
    pub async fn rate_limit(
        &self,
        key: &str,
        algorithm: Algorithm,
        shared: &Quota,
        local: &Quota,
        cost: u32,
        mode: FailMode,
    ) -> Routed<Decision> {
        self.traced("rate_limit", async {
            match algorithm {
                // Concurrent checks of one key share one round trip; with the memory store
                // there is none to share.
                Algorithm::Gcra if cost == 1 && !matches!(self.inner.shared, Backends::Memory) => {
                    self.gcra_coalesced(key, shared, local, mode).await
                }
                Algorithm::Gcra => self.gcra_one(key, shared, local, cost, mode).await,
                Algorithm::SlidingWindow => {
                    self.sliding_window(key, shared, local, cost, mode).await
                }
            }
        })
        .await
    }

    /// One GCRA check on its own.
    pub(super) async fn gcra_one(
        &self,
        key: &str,
        shared: &Quota,
        local: &Quota,
        cost: u32,
        mode: FailMode,
    ) -> Routed<Decision> {
        let routed = self
            .gcra(key, shared.gcra(), local.gcra(), cost, mode)
            .await;
        gcra_answer(routed, shared, local)
    }
}

/// A routed GCRA answer as a [`Decision`] of the quota that gave it.
pub(super) fn gcra_answer(
    routed: Routed<GcraDecision>,
    shared: &Quota,
    local: &Quota,
) -> Routed<Decision> {
    map(routed, |d, fallback| {
        Decision::from_gcra(d, if fallback { local } else { shared })
    })
}

fn map<T, U>(r: Routed<T>, f: impl FnOnce(T, bool) -> U) -> Routed<U> {
    match r {
        Routed::Shared(v) => Routed::Shared(f(v, false)),
        Routed::Local(v) => Routed::Local(f(v, true)),
        Routed::Allow => Routed::Allow,
        Routed::Stateless => Routed::Stateless,
        Routed::Unavailable => Routed::Unavailable,
    }
}
