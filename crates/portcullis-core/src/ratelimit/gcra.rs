//! GCRA: a quota of `limit` requests per `per`, of which `burst` may come at once.
//!
//! With emission interval `T = per / limit` and capacity `C = burst × T`, a request at
//! `now` is admitted when `max(TAT, now) + T − now ≤ C`; admitting it moves the TAT to
//! `max(TAT, now) + T`. So at most `burst` requests pass at one instant, and after that one
//! every `T`. The stored TAT expires when it falls behind `now` (a full bucket), so state
//! lives exactly as long as it matters.
//!
//! The state keeps the `T` it was written with. When the quota changes (an override, a
//! new configuration), what is owed is carried over as a number of requests, not as time:
//! a client that used 3 of 3 per hour and is raised to 10 per hour has 7 left, not none
//! for another six minutes. So a changed quota applies from the next decision.
//!
//! ```
//! use portcullis_core::ratelimit::gcra::{GcraParams, decide};
//! use std::time::Duration;
//!
//! let q = GcraParams::new(3, Duration::from_secs(1), 3).unwrap();
//! let mut state = None;
//! for _ in 0..3 {
//!     let (d, new) = decide(0, state, q, 1);
//!     assert!(d.allowed);
//!     state = new;
//! }
//! let (d, _) = decide(0, state, q, 1);
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

/// What is stored for a key: its TAT, and the `T` it was computed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcraState {
    /// Theoretical arrival time, microseconds on the store's clock.
    pub tat_us: u64,
    /// The emission interval of the quota that wrote it.
    pub emission_us: u64,
}

impl GcraState {
    /// The TAT under `p`: what is owed beyond `now` rescaled from the stored `T` to
    /// `p`'s, so the number of requests owed is kept (rounded down, to the microsecond).
    pub fn tat_under(self, now_us: u64, p: GcraParams) -> u64 {
        if self.tat_us <= now_us {
            return now_us;
        }
        let owed = self.tat_us - now_us;
        if self.emission_us == p.emission_us || self.emission_us == 0 {
            return self.tat_us;
        }
        let scaled = u128::from(owed) * u128::from(p.emission_us) / u128::from(self.emission_us);
        now_us.saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX))
    }

    /// The stored form, `"<tat>:<T>"`, as the Lua script writes it.
    pub fn encode(self) -> String {
        format!("{}:{}", self.tat_us, self.emission_us)
    }

    /// Reads the stored form; a bare TAT (no `T`) is taken to be of the current quota.
    pub fn decode(s: &str, p: GcraParams) -> Option<Self> {
        let (tat, t) = match s.split_once(':') {
            Some((tat, t)) => (tat.parse().ok()?, t.parse().ok()?),
            None => (s.parse().ok()?, p.emission_us),
        };
        Some(Self {
            tat_us: tat,
            emission_us: t,
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

/// Decides a request of `cost` at `now_us` against the stored `state` (`None`: no state,
/// a full bucket). Returns the decision and, when admitted with a cost, the state to store
/// (with a time to live of `tat − now`).
///
/// Cost 0 is a *peek*: decided as a request of cost 1 (would one more pass now?), with
/// nothing stored — for routes that count only some answers, which ask before the
/// request and pay after it.
pub fn decide(
    now_us: u64,
    state: Option<GcraState>,
    p: GcraParams,
    cost: u32,
) -> (GcraDecision, Option<GcraState>) {
    let tat = state.map_or(now_us, |s| s.tat_under(now_us, p));
    let weight = u64::from(cost.max(1));
    let new_tat = tat.saturating_add(p.emission_us.saturating_mul(weight));
    let ahead = new_tat - now_us;
    if ahead <= p.capacity_us {
        let remaining = (p.capacity_us - ahead) / p.emission_us;
        let decision = GcraDecision {
            allowed: true,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            retry_after: Duration::ZERO,
            reset_after: Duration::from_micros(ahead),
        };
        let write = (cost > 0).then_some(GcraState {
            tat_us: new_tat,
            emission_us: p.emission_us,
        });
        (decision, write)
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

/// How `n` requests of cost 1 arriving at one instant were decided: the instant, the TAT
/// they were decided from (under the batch's quota), and how many were admitted. It is all
/// a store has to report for the `n` decisions to be rebuilt ([`GcraBatch::decisions`]).
///
/// The admitted ones are a prefix: the TAT only moves forward, so once one request does
/// not fit, none after it at the same instant does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcraBatch {
    /// The instant, microseconds on the store's clock.
    pub now_us: u64,
    /// The TAT before the batch, rescaled to the batch's `T`; `now_us` when there was no
    /// state (a full bucket).
    pub tat_us: u64,
    /// How many of the `n` were admitted, the first ones.
    pub admitted: u32,
}

impl GcraBatch {
    /// Decides `n` requests of cost 1 at `now_us` against `state`, in O(1): as many as
    /// fit, i.e. while `tat + i × T ≤ now + C`.
    pub fn decide(now_us: u64, state: Option<GcraState>, p: GcraParams, n: u32) -> Self {
        let tat_us = state.map_or(now_us, |s| s.tat_under(now_us, p));
        // `decide` saturates the TAT at u64::MAX: past a room that large every request fits.
        let room = u128::from(now_us) + u128::from(p.capacity_us);
        let admitted = match u64::try_from(room) {
            Ok(room) if room < u64::MAX => room
                .checked_sub(tat_us)
                .map_or(0, |free| free / p.emission_us)
                .min(u64::from(n)),
            _ => u64::from(n),
        };
        Self {
            now_us,
            tat_us,
            admitted: u32::try_from(admitted).unwrap_or(n),
        }
    }

    /// The TAT after `i` admissions, saturating as `decide` does.
    fn tat_after(&self, i: u32, p: GcraParams) -> u64 {
        let tat = u128::from(self.tat_us) + u128::from(i) * u128::from(p.emission_us);
        u64::try_from(tat).unwrap_or(u64::MAX)
    }

    /// The `n` decisions, in arrival order: each admitted one sees the TAT its
    /// predecessors left; the refused ones all see the TAT of the last admission.
    pub fn decisions(&self, p: GcraParams, n: u32) -> Vec<GcraDecision> {
        let admitted = self.admitted.min(n);
        let mut out = Vec::with_capacity(n as usize);
        for i in 1..=admitted {
            // Saturating: a store's report is not trusted to be consistent with `p`.
            let ahead = self.tat_after(i, p).saturating_sub(self.now_us);
            let remaining = p.capacity_us.saturating_sub(ahead) / p.emission_us;
            out.push(GcraDecision {
                allowed: true,
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                retry_after: Duration::ZERO,
                reset_after: Duration::from_micros(ahead),
            });
        }
        if admitted < n {
            let tat = self.tat_after(admitted, p);
            let ahead = self.tat_after(admitted + 1, p).saturating_sub(self.now_us);
            let refused = GcraDecision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_micros(ahead.saturating_sub(p.capacity_us)),
                reset_after: Duration::from_micros(tat.saturating_sub(self.now_us)),
            };
            out.resize(n as usize, refused);
        }
        out
    }

    /// The state to store: the TAT after the last admission, in the batch's `T`; `None`
    /// when nothing was admitted (nothing to write).
    pub fn state(&self, p: GcraParams) -> Option<GcraState> {
        (self.admitted > 0).then(|| GcraState {
            tat_us: self.tat_after(self.admitted, p),
            emission_us: p.emission_us,
        })
    }
}

/// Decides `n` requests of cost 1 arriving at `now_us`, in order: exactly what `n` calls
/// of [`decide`]`(now_us, state, p, 1)` in a row give, each seeing the state the previous
/// one wrote. Returns the `n` decisions and the state to store (`None`: nothing admitted,
/// nothing to write). `n = 0` decides nothing.
///
/// ```
/// use portcullis_core::ratelimit::gcra::{GcraParams, decide_batch};
/// use std::time::Duration;
///
/// let q = GcraParams::new(3, Duration::from_secs(1), 3).unwrap();
/// let (decisions, state) = decide_batch(0, None, q, 5);
/// let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
/// assert_eq!(allowed, [true, true, true, false, false]);
/// assert_eq!(state.unwrap().tat_us, 999_999, "three emission intervals of 333 333 µs");
/// ```
pub fn decide_batch(
    now_us: u64,
    state: Option<GcraState>,
    p: GcraParams,
    n: u32,
) -> (Vec<GcraDecision>, Option<GcraState>) {
    let batch = GcraBatch::decide(now_us, state, p, n);
    (batch.decisions(p, n), batch.state(p))
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
        // One admitted: the bucket is empty, and a peek says so.
        let (_, t) = decide(0, None, p, 1);
        let (d, kept) = decide(0, t, p, 0);
        assert!(!d.allowed, "a peek asks whether one more would pass");
        assert_eq!(d.retry_after, Duration::from_secs(1));
        assert_eq!(kept, None);
    }

    #[test]
    fn a_changed_quota_keeps_the_number_of_requests_owed() {
        let hour = 3_600_000;
        let (three, ten) = (q(3, hour, 3), q(10, hour, 10));
        let mut state = None;
        for _ in 0..3 {
            state = decide(0, state, three, 1).1;
        }
        assert!(!decide(0, state, three, 1).0.allowed);
        // Raised to 10: 3 of 10 used, so 7 more, at once.
        let mut admitted = 0;
        for _ in 0..10 {
            let (d, w) = decide(1, state, ten, 1);
            if d.allowed {
                admitted += 1;
                state = w;
            }
        }
        assert_eq!(admitted, 7);
        assert_eq!(
            state.unwrap().emission_us,
            ten.emission_us,
            "rewritten in the new T"
        );
        // Lowered back to 3 with 10 owed: refused until 8 are paid back at the new rate.
        let (d, _) = decide(1, state, three, 1);
        assert!(!d.allowed);
        // (Each rescale rounds down to the microsecond.)
        let t3 = three.emission_us;
        let retry = u64::try_from(d.retry_after.as_micros()).unwrap();
        assert!((8 * t3 - 10..=8 * t3).contains(&retry), "{retry}");
        // A burst-only change keeps T, and the state as it is.
        let s = GcraState {
            tat_us: 500,
            emission_us: 100,
        };
        assert_eq!(s.tat_under(0, q(10, 1, 3)), 500);
        assert_eq!(
            s.tat_under(600, q(10, 1, 3)),
            600,
            "in the past: a full bucket"
        );
    }

    #[test]
    fn the_stored_form_round_trips() {
        let p = q(10, 1000, 10);
        let s = GcraState {
            tat_us: 1_700_000_000_123_456,
            emission_us: 100_000,
        };
        assert_eq!(GcraState::decode(&s.encode(), p), Some(s));
        assert_eq!(
            GcraState::decode("42", p),
            Some(GcraState {
                tat_us: 42,
                emission_us: p.emission_us
            }),
            "a bare TAT is of the current quota"
        );
        for bad in ["", "x", "1:", ":1", "1:2:3", "-1:5"] {
            assert_eq!(GcraState::decode(bad, p), None, "{bad:?}");
        }
    }

    #[test]
    fn invalid_quotas_are_refused() {
        assert!(GcraParams::new(0, Duration::from_secs(1), 1).is_none());
        assert!(GcraParams::new(1, Duration::ZERO, 1).is_none());
        assert!(GcraParams::new(1, Duration::from_secs(1), 0).is_none());
    }

    #[test]
    fn a_batch_admits_what_fits_in_order() {
        let p = q(10, 1000, 4); // T = 100 ms, C = 400 ms
        // One already used: room for three.
        let (_, state) = decide(0, None, p, 1);
        let (ds, written) = decide_batch(0, state, p, 5);
        let got: Vec<_> = ds
            .iter()
            .map(|d| (d.allowed, d.remaining, d.retry_after, d.reset_after))
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(
            got,
            [
                (true, 2, Duration::ZERO, ms(200)),
                (true, 1, Duration::ZERO, ms(300)),
                (true, 0, Duration::ZERO, ms(400)),
                (false, 0, ms(100), ms(400)),
                (false, 0, ms(100), ms(400)),
            ]
        );
        assert_eq!(
            written,
            Some(GcraState {
                tat_us: 400_000,
                emission_us: 100_000
            })
        );
        // A full bucket: nothing admitted, nothing written.
        let (ds, none) = decide_batch(0, written, p, 3);
        assert!(ds.iter().all(|d| !d.allowed));
        assert_eq!(none, None);
        assert_eq!(decide_batch(0, written, p, 0), (Vec::new(), None));
    }

    /// A quota whose parameters may be anything `decide` accepts (`T ≥ 1`), from
    /// `GcraParams::new` or raw, up to `u64::MAX`.
    fn any_params() -> impl Strategy<Value = GcraParams> {
        let made =
            (1u32..100, 1u64..3_600_000_000, 1u32..100).prop_map(|(limit, per_us, burst)| {
                GcraParams::new(limit, Duration::from_micros(per_us), burst).unwrap()
            });
        let raw = (1u64.., any::<u64>()).prop_map(|(emission_us, capacity_us)| GcraParams {
            emission_us,
            capacity_us,
            limit: NonZeroU32::MIN,
            burst: NonZeroU32::MIN,
        });
        prop_oneof![4 => made, 1 => raw]
    }

    proptest! {
        /// The definition of `decide_batch`: `n` calls of `decide` in a row at one instant,
        /// threading the written state; for any state (behind or ahead of `now`, written
        /// under another `T`, or `T = 0`), any quota, any `now`.
        #[test]
        fn a_batch_is_n_decisions_in_a_row(
            p in any_params(),
            now in prop_oneof![3 => 0u64..(1 << 53), 1 => any::<u64>()],
            state in proptest::option::of((
                prop_oneof![
                    3 => (-10_000_000i64..100_000_000).prop_map(Some),
                    1 => Just(None),
                ],
                any::<u64>(),
                prop_oneof![
                    2 => Just(None),
                    1 => Just(Some(0u64)),
                    2 => (1u64..10_000_000).prop_map(Some),
                    1 => any::<u64>().prop_map(Some),
                ],
            )),
            n in 1u32..300,
        ) {
            // The TAT near `now` (behind or ahead), or anywhere; `T` the quota's or another.
            let state = state.map(|(offset, anywhere, t)| GcraState {
                tat_us: offset.map_or(anywhere, |o| now.saturating_add_signed(o)),
                emission_us: t.unwrap_or(p.emission_us),
            });
            let (batch, written) = decide_batch(now, state, p, n);
            let mut s = state;
            let mut last = None;
            for (i, got) in batch.iter().enumerate() {
                let (want, w) = decide(now, s, p, 1);
                prop_assert_eq!(*got, want, "request {} of {}", i, n);
                if w.is_some() {
                    s = w;
                    last = w;
                }
            }
            prop_assert_eq!(batch.len(), n as usize);
            prop_assert_eq!(written, last);
        }

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
