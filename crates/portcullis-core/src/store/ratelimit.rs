//! Rate-limit checks in the shared store, for either algorithm.

use super::shared::SharedStore;
use super::{FailMode, Routed};
use crate::ratelimit::{Algorithm, Decision, Quota};

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
        match algorithm {
            Algorithm::Gcra => {
                let routed = self
                    .gcra(key, shared.gcra(), local.gcra(), cost, mode)
                    .await;
                map(routed, |d, fallback| {
                    Decision::from_gcra(d, if fallback { local } else { shared })
                })
            }
            Algorithm::SlidingWindow => self.sliding_window(key, shared, local, cost, mode).await,
        }
    }
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
