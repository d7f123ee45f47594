//! GCRA: a quota of `limit` requests per `per`, of which `burst` may come at once.
//!
//! With emission interval `T = per / limit` and capacity `C = burst × T`, a request at
//! `now` is admitted when `max(TAT, now) + T − now ≤ C`; admitting it moves the TAT to
//! `max(TAT, now) + T`. So at most `burst` requests pass at one instant, and after that one
//! every `T`. The stored TAT expires when it falls behind `now` (a full bucket), so state
//! lives exactly as long as it matters.
//!
//! ```
//! use portcullis_core::ratelimit::gcra::{GcraParams, decide};
//! use std::time::Duration;
//!
//! let q = GcraParams::new(3, Duration::from_secs(1), 3).unwrap();
//! let mut tat = None;
//! for _ in 0..3 {
//!     let (d, new) = decide(0, tat, q, 1);
//!     assert!(d.allowed);
//!     tat = new;
//! }
//! let (d, _) = decide(0, tat, q, 1);
//! assert!(!d.allowed);
//! assert_eq!(d.retry_after, Duration::from_micros(333_333));
//! ```

use std::num::NonZeroU32;
use std::time::Duration;

/// A quota in the units GCRA works in (microseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GcraParams {
    /// `T`: microseconds between requests at the sustained rate (at least 1).
    pub emission_us: u64,
    /// `C = burst × T`: how far ahead of `now` the TAT may run.
    pub capacity_us: u64,
    /// The quota's `limit`, for reporting.
    pub limit: NonZeroU32,
    /// The quota's `burst`.
    pub burst: NonZeroU32,
}

impl GcraParams {
    /// `limit` requests per `per`, `burst` at once. `None` if `limit` or `burst` is 0 or
    /// `per` is zero.
    pub fn new(limit: u32, per: Duration, burst: u32) -> Option<Self> {
        let limit = NonZeroU32::new(limit)?;
        let burst = NonZeroU32::new(burst)?;
        let per_us = u64::try_from(per.as_micros()).ok().filter(|&p| p > 0)?;
        let emission_us = (per_us / u64::from(limit.get())).max(1);
        Some(Self {
            emission_us,
            capacity_us: emission_us.saturating_mul(u64::from(burst.get())),
            limit,
            burst,
        })
    }
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcraDecision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Requests that could still pass at once after this one.
    pub remaining: u32,
    /// When refused: how long until a request of this cost would pass.
    pub retry_after: Duration,
    /// How long until the bucket is full again (no state left).
    pub reset_after: Duration,
}

/// Decides a request of `cost` at `now_us` against the stored `tat_us` (`None`: no state,
/// a full bucket). Returns the decision and, when admitted with a cost, the TAT to store
/// (with a time to live of `new_tat − now`).
pub fn decide(
    now_us: u64,
    tat_us: Option<u64>,
    p: GcraParams,
    cost: u32,
) -> (GcraDecision, Option<u64>) {
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let new_tat = tat.saturating_add(p.emission_us.saturating_mul(u64::from(cost)));
    let ahead = new_tat - now_us;
    if ahead <= p.capacity_us {
        let remaining = (p.capacity_us - ahead) / p.emission_us;
        let decision = GcraDecision {
            allowed: true,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            retry_after: Duration::ZERO,
            reset_after: Duration::from_micros(ahead),
        };
        (decision, (cost > 0).then_some(new_tat))
    } else {
        let decision = GcraDecision {
            allowed: false,
            remaining: 0,
            retry_after: Duration::from_micros(ahead - p.capacity_us),
            reset_after: Duration::from_micros(tat - now_us),
        };
        (decision, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(limit: u32, per_ms: u64, burst: u32) -> GcraParams {
        GcraParams::new(limit, Duration::from_millis(per_ms), burst).unwrap()
    }

    #[test]
    fn burst_then_steady_rate() {
        let p = q(10, 1000, 5);
        let mut tat = None;
        let mut allowed = 0;
        for _ in 0..8 {
            let (d, t) = decide(0, tat, p, 1);
            if d.allowed {
                allowed += 1;
                tat = t;
            }
        }
        assert_eq!(allowed, 5, "burst honoured");
        // 100 ms later exactly one more.
        let (d, t) = decide(100_000, tat, p, 1);
        assert!(d.allowed);
        let (d, _) = decide(100_000, t, p, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(100));
    }

    #[test]
    fn remaining_counts_down_and_reset_is_exact() {
        let p = q(4, 1000, 4);
        let (d1, t) = decide(0, None, p, 1);
        assert_eq!(
            (d1.remaining, d1.reset_after),
            (3, Duration::from_millis(250))
        );
        let (d2, t) = decide(0, t, p, 1);
        assert_eq!(
            (d2.remaining, d2.reset_after),
            (2, Duration::from_millis(500))
        );
        let (d3, _) = decide(600_000, t, p, 1);
        assert_eq!(d3.remaining, 3, "refilled by 600 ms");
    }

    #[test]
    fn zero_cost_peeks_without_storing() {
        let p = q(1, 1000, 1);
        let (d, t) = decide(0, None, p, 0);
        assert!(d.allowed);
        assert_eq!(t, None);
    }

    #[test]
    fn invalid_quotas_are_refused() {
        assert!(GcraParams::new(0, Duration::from_secs(1), 1).is_none());
        assert!(GcraParams::new(1, Duration::ZERO, 1).is_none());
        assert!(GcraParams::new(1, Duration::from_secs(1), 0).is_none());
    }

    proptest! {
        /// Never more than `burst + limit × w / per` admissions in any window `w`, and a
        /// refused request retried exactly `retry_after` later is admitted.
        #[test]
        fn never_more_than_the_quota(
            limit in 1u32..50,
            per_ms in 10u64..5000,
            burst in 1u32..50,
            gaps in proptest::collection::vec(0u64..200_000, 1..300),
        ) {
            let p = q(limit, per_ms, burst);
            let mut now = 0u64;
            let mut tat = None;
            let mut admitted: Vec<u64> = Vec::new();
            for gap in gaps {
                now += gap;
                let (d, t) = decide(now, tat, p, 1);
                if d.allowed {
                    admitted.push(now);
                    tat = t;
                } else {
                    let later = now + u64::try_from(d.retry_after.as_micros()).unwrap();
                    let (d2, _) = decide(later, tat, p, 1);
                    prop_assert!(d2.allowed, "retry_after too short");
                    if later > now {
                        let (d3, _) = decide(later - 1, tat, p, 1);
                        prop_assert!(!d3.allowed, "retry_after not minimal");
                    }
                }
            }
            // Any window [start, start + w): admissions ≤ burst + floor(w / T).
            let w = p.emission_us * 7;
            for (i, &start) in admitted.iter().enumerate() {
                let n = admitted[i..].iter().take_while(|&&t| t < start + w).count() as u64;
                prop_assert!(n <= u64::from(burst) + w / p.emission_us, "{n} admitted in a window");
            }
        }
    }
}
