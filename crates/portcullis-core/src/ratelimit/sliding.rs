//! Sliding-window counter: at most `limit` per fixed window of `per`, the previous window
//! weighted by how much of it the sliding window still overlaps.
//!
//! Time is cut into fixed windows of `per` (`P`), aligned to the clock's zero (the Unix
//! epoch in Redis, the store's start in memory), so every key rolls over at once. A key's
//! state is the index of its fixed window `w = ⌊now / P⌋`, the cost admitted in that
//! window (`cur`) and the cost admitted in the window before (`prev`). At `now`, with
//! `e = now − w × P` elapsed in the current window:
//!
//! ```text
//! estimate = prev × (P − e) / P + cur
//! ```
//!
//! that is, the previous window's requests are assumed evenly spread, and only the part of
//! it that the window `(now − P, now]` still overlaps counts. The rules (`burst` is
//! ignored):
//!
//! - **Rollover.** A state of window `w − 1` is read as `prev = cur, cur = 0`; an older
//!   one as empty. A state of a *later* window than `now` (the server's clock went back,
//!   e.g. after a failover) is read as the current window's, unchanged, and written
//!   back as such by the next admission.
//! - **Admission.** A request of `cost` is admitted iff `estimate + cost ≤ limit`; then
//!   `cur += cost`. A refused request changes nothing. Cost 0 is a *peek*: answered
//!   exactly as a request of cost 1 (would one more pass now?), and never a write.
//! - **`remaining`** = `max(0, ⌊limit − estimate⌋)` after the decision: exactly the
//!   largest cost that would be admitted now (`limit − cur − ⌈prev × (P − e) / P⌉`).
//! - **`reset_after`**: how long until the estimate is 0 (and `remaining = limit`) if
//!   nothing more is admitted: to the end of the *next* window when `cur > 0`
//!   (`2P − e`), to the end of this one when only `prev > 0` (`P − e`), else 0.
//! - **`retry_after`** (refused only): how long until `estimate + cost ≤ limit` holds if
//!   nothing more is admitted. The estimate only decays, linearly within a window and
//!   continuously across the boundary, so this is the first such instant, to the
//!   microsecond. With `A = limit − cur − cost`:
//!   - `A ≥ 0` (then `prev > 0`): within this window, at the first `x` with
//!     `prev × (P − x) ≤ A × P`: `x = P − ⌊A × P / prev⌋`, so `retry_after = x − e`;
//!   - `A < 0`, `cost ≤ limit` (then `cur > 0`): the current count alone is too much, so
//!     wait for the next window, where `cur` becomes the decaying `prev`:
//!     `y = P − ⌊(limit − cost) × P / cur⌋`, so `retry_after = (P − e) + y`;
//!   - `cost > limit`: never; `retry_after = P`, a finite answer for the headers.
//!
//! All of it is integer arithmetic in microseconds, so the Lua script
//! (`store/lua/sliding_window.lua`) computes the same values: Lua's doubles are exact while
//! `limit × per` stays below 2⁵³ µs (a limit of 10⁵ per day, 2.5 × 10⁶ per hour).
//! The state lives `2 × per` after each write: by then it is two windows old, and empty.
//!
//! # Security
//!
//! The estimate assumes the previous window's requests were spread evenly. A client that
//! times its requests can get `limit` in at the end of one window and, as that window's
//! weight decays, nearly `limit` more before the next one ends: at most `limit` per fixed
//! window, so at most `2 × limit` in any span of `per`. Bursts right at the boundary,
//! which a fixed window allows, are refused. Where the bound must be exact at every
//! instant, use [`gcra`](super::gcra).
//!
//! ```
//! use portcullis_core::ratelimit::sliding::{decide, SlidingParams};
//! use std::time::Duration;
//!
//! // 10 per second: 10 pass at t = 0, the 11th must wait 1.1 s (the next window, and
//! // 10 % of it for the previous window's weight to fall to 9).
//! let p = SlidingParams::new(10, Duration::from_secs(1)).unwrap();
//! let mut state = None;
//! for _ in 0..10 {
//!     let (d, s) = decide(0, state, p, 1);
//!     assert!(d.allowed);
//!     state = s;
//! }
//! let (d, _) = decide(0, state, p, 1);
//! assert!(!d.allowed);
//! assert_eq!(d.retry_after, Duration::from_millis(1100));
//! // At 1.5 s the previous window weighs half: 5 more pass. A peek is answered as a
//! // request of one: it would pass, and leave 4.
//! let (d, write) = decide(1_500_000, state, p, 0);
//! assert!(d.allowed && d.remaining == 4 && write.is_none());
//! ```

use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

use super::{Decision, Quota};

/// A quota in the units the sliding window works in (microseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlidingParams {
    /// Cost admitted per fixed window.
    pub limit: NonZeroU32,
    /// The window `P`, in microseconds.
    pub per_us: NonZeroU64,
}

impl SlidingParams {
    /// `limit` per `per`; `None` if `limit` is 0 or `per` is under a microsecond.
    pub fn new(limit: u32, per: Duration) -> Option<Self> {
        Some(Self {
            limit: NonZeroU32::new(limit)?,
            per_us: NonZeroU64::new(u64::try_from(per.as_micros()).unwrap_or(u64::MAX))?,
        })
    }

    /// A quota's limit and window (its `burst` does not apply); a window under a
    /// microsecond is taken as one.
    pub fn from_quota(q: &Quota) -> Self {
        Self::new(q.limit.get(), q.per).unwrap_or(Self {
            limit: q.limit,
            per_us: NonZeroU64::MIN,
        })
    }

    /// How long a state lives after each write: two windows.
    pub fn ttl(&self) -> Duration {
        Duration::from_micros(self.per_us.get().saturating_mul(2))
    }
}

impl From<&Quota> for SlidingParams {
    fn from(q: &Quota) -> Self {
        Self::from_quota(q)
    }
}

/// A key's stored state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlidingState {
    /// The fixed window `⌊now / per⌋` of the last write.
    pub window: u64,
    /// Cost admitted in the window before it.
    pub prev: u32,
    /// Cost admitted in it.
    pub cur: u32,
}

/// Decides a request of `cost` at `now_us` against the stored `state` (`None`: no
/// requests in the last two windows). Returns the decision and, when admitted with a
/// cost, the state to store (for [`SlidingParams::ttl`]).
pub fn decide(
    now_us: u64,
    state: Option<SlidingState>,
    p: SlidingParams,
    cost: u32,
) -> (Decision, Option<SlidingState>) {
    let per = p.per_us.get();
    let limit = p.limit.get();
    // A peek is decided as a request of one, and writes nothing.
    let store = cost > 0;
    let cost = cost.max(1);
    let window = now_us / per;
    let elapsed = now_us % per;
    let left = per - elapsed;
    let (prev, cur) = match state {
        Some(s) if s.window >= window => (s.prev, s.cur),
        Some(s) if s.window + 1 == window => (s.cur, 0),
        _ => (0, 0),
    };
    // Everything in units of 1/P of a request, exact: prev × (P − e) is the previous
    // window's weight, and (limit − cur − cost) × P what the current one leaves.
    let (per_w, limit_w) = (u128::from(per), u128::from(limit));
    let weight = u128::from(prev) * u128::from(left);
    let allowed = limit_w
        .checked_sub(u128::from(cur) + u128::from(cost))
        .is_some_and(|a| weight <= a * per_w);
    let cur = if allowed { cur + cost } else { cur };
    let remaining = u128::from(limit.saturating_sub(cur)).saturating_sub(weight.div_ceil(per_w));
    let reset_after = if cur > 0 {
        per.saturating_add(left)
    } else if prev > 0 {
        left
    } else {
        0
    };
    let retry_after = if allowed {
        0
    } else if cost > limit {
        per
    } else if let Some(a) = u64::from(limit).checked_sub(u64::from(cur) + u64::from(cost)) {
        // Refused with A ≥ 0: the weight exceeds A × P, so prev > 0 and A < prev.
        let x = per_w - u128::from(a) * per_w / u128::from(prev);
        narrow(x) - elapsed
    } else {
        // cur > limit − cost ≥ 0: the next window, where cur is the decaying prev.
        let y = per_w - u128::from(limit - cost) * per_w / u128::from(cur);
        left.saturating_add(narrow(y))
    };
    let decision = Decision {
        allowed,
        limit,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_after: Duration::from_micros(reset_after),
        retry_after: Duration::from_micros(retry_after),
    };
    let write = (allowed && store).then_some(SlidingState { window, prev, cur });
    (decision, write)
}

/// A value known to be at most `per`.
fn narrow(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000;

    fn p(limit: u32, per_us: u64) -> SlidingParams {
        SlidingParams::new(limit, Duration::from_micros(per_us)).unwrap()
    }

    fn st(window: u64, prev: u32, cur: u32) -> Option<SlidingState> {
        Some(SlidingState { window, prev, cur })
    }

    fn us(d: Duration) -> u64 {
        u64::try_from(d.as_micros()).unwrap()
    }

    struct Case {
        name: &'static str,
        now: u64,
        state: Option<SlidingState>,
        limit: u32,
        cost: u32,
        /// allowed, remaining, reset_after µs, retry_after µs
        want: (bool, u32, u64, u64),
        write: Option<SlidingState>,
    }

    #[test]
    fn decisions_on_explicit_times() {
        let cases = [
            Case {
                name: "a fresh key: admitted, the state is born",
                now: 250_000,
                state: None,
                limit: 10,
                cost: 1,
                want: (true, 9, 2 * S - 250_000, 0),
                write: st(0, 0, 1),
            },
            Case {
                name: "the limit reached: the next window, plus 10 % of it for the weight to fall to 9",
                now: 0,
                state: st(0, 0, 10),
                limit: 10,
                cost: 1,
                want: (false, 0, 2 * S, 1_100_000),
                write: None,
            },
            Case {
                name: "the limit reached late in the window: the retry is measured from now",
                now: 900_000,
                state: st(0, 0, 10),
                limit: 10,
                cost: 1,
                want: (false, 0, 1_100_000, 200_000),
                write: None,
            },
            Case {
                name: "rollover: half the previous window still counts",
                now: 1_500_000,
                state: st(0, 0, 10),
                limit: 10,
                cost: 1,
                want: (true, 4, 2 * S - 500_000, 0),
                write: st(1, 10, 1),
            },
            Case {
                name: "after the rollover's 5: refused until the weight falls to 4",
                now: 1_500_000,
                state: st(1, 10, 5),
                limit: 10,
                cost: 1,
                want: (false, 0, 1_500_000, 100_000),
                write: None,
            },
            Case {
                name: "a fraction of a request left over counts as a whole one in remaining",
                now: 1_250_000,
                state: st(1, 10, 1),
                limit: 10,
                cost: 1,
                want: (true, 0, 1_750_000, 0),
                write: st(1, 10, 2),
            },
            Case {
                name: "only the previous window left: reset at this window's end",
                // Refused (a cost above the limit), so nothing is added to this window.
                now: 1_600_000,
                state: st(0, 0, 10),
                limit: 10,
                cost: 11,
                want: (false, 6, 400_000, S),
                write: None,
            },
            Case {
                name: "two windows later everything is forgotten",
                now: 2_000_000,
                state: st(0, 7, 10),
                limit: 10,
                cost: 1,
                want: (true, 9, 2 * S, 0),
                write: st(2, 0, 1),
            },
            Case {
                name: "a peek at the limit is refused like a request of one, and writes nothing",
                now: 100_000,
                state: st(0, 0, 10),
                limit: 10,
                cost: 0,
                want: (false, 0, 1_900_000, S),
                write: None,
            },
            Case {
                name: "a peek on a fresh key: answered as a request of one, nothing written",
                now: 100_000,
                state: None,
                limit: 10,
                cost: 0,
                want: (true, 9, 2 * S - 100_000, 0),
                write: None,
            },
            Case {
                name: "the current count alone over a lowered limit: next window, then decay",
                // 15 ≥ 10 now; from 1 s, 15 × (1 − y) + 1 ≤ 10 once y ≥ 0.4 s.
                now: 200_000,
                state: st(0, 0, 15),
                limit: 10,
                cost: 1,
                want: (false, 0, 1_800_000, 1_200_000),
                write: None,
            },
            Case {
                name: "a peek over a lowered limit: the same answer as a request of one",
                now: 200_000,
                state: st(0, 0, 15),
                limit: 10,
                cost: 0,
                want: (false, 0, 1_800_000, 1_200_000),
                write: None,
            },
            Case {
                name: "a cost above the limit never passes: retry after one window",
                now: 300_000,
                state: None,
                limit: 10,
                cost: 11,
                want: (false, 10, 0, S),
                write: None,
            },
            Case {
                name: "a cost of several counts as several",
                now: 0,
                state: st(0, 0, 6),
                limit: 10,
                cost: 4,
                want: (true, 0, 2 * S, 0),
                write: st(0, 0, 10),
            },
            Case {
                name: "a state from a later window (the clock went back) is read as the current one",
                now: 4_500_000,
                state: st(7, 2, 9),
                limit: 10,
                cost: 1,
                want: (false, 0, 1_500_000, 500_000),
                write: None,
            },
            Case {
                name: "the same, admitted: written back in the clock's window",
                now: 4_500_000,
                state: st(7, 2, 6),
                limit: 10,
                cost: 1,
                want: (true, 2, 1_500_000, 0),
                write: st(4, 2, 7),
            },
        ];
        for c in cases {
            let (d, write) = decide(c.now, c.state, p(c.limit, S), c.cost);
            let got = (d.allowed, d.remaining, us(d.reset_after), us(d.retry_after));
            assert_eq!(got, c.want, "{}", c.name);
            assert_eq!(write, c.write, "{}: write", c.name);
            assert_eq!(d.limit, c.limit, "{}: limit", c.name);
        }
    }

    #[test]
    fn params_from_a_quota_ignore_the_burst() {
        let q = Quota::new(10, Duration::from_millis(1500), Some(3)).unwrap();
        let s = SlidingParams::from(&q);
        assert_eq!((s.limit.get(), s.per_us.get()), (10, 1_500_000));
        assert_eq!(s.ttl(), Duration::from_secs(3));
        assert!(SlidingParams::new(0, Duration::from_secs(1)).is_none());
        assert!(SlidingParams::new(1, Duration::from_nanos(999)).is_none());
        let tiny = Quota::new(1, Duration::from_nanos(10), None).unwrap();
        assert_eq!(SlidingParams::from(&tiny).per_us.get(), 1);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let huge = SlidingParams::new(u32::MAX, Duration::MAX).unwrap();
        assert_eq!(huge.ttl(), Duration::from_micros(u64::MAX));
        for now in [0, u64::MAX / 2, u64::MAX] {
            for state in [None, st(0, u32::MAX, u32::MAX), st(u64::MAX, u32::MAX, 1)] {
                for cost in [0, 1, u32::MAX] {
                    for p in [huge, p(1, 1), p(u32::MAX, 3)] {
                        let (d, _) = decide(now, state, p, cost);
                        assert!(d.remaining <= p.limit.get());
                    }
                }
            }
        }
    }

    /// Whether a request of `cost` at `now` passes against `state`.
    fn admitted_at(now: u64, state: Option<SlidingState>, p: SlidingParams, cost: u32) -> bool {
        decide(now, state, p, cost).0.allowed
    }

    /// How many requests would pass at `now`, read through a peek.
    fn room(now: u64, state: Option<SlidingState>, p: SlidingParams) -> u32 {
        let (d, _) = decide(now, state, p, 0);
        if d.allowed { d.remaining + 1 } else { 0 }
    }

    proptest! {
        /// Over any sequence of requests: at most `limit` admitted per fixed window, so at
        /// most `2 × limit` in any span of `per`; a refused request retried `retry_after`
        /// later (nothing admitted meanwhile) passes, one microsecond earlier it does not;
        /// a peek never writes.
        #[test]
        fn admissions_stay_within_the_windows(
            limit in 1u32..30,
            per in 1_000u64..3_000_000,
            reqs in proptest::collection::vec((0u64..400_000, 0u32..4), 1..400),
        ) {
            let q = p(limit, per);
            let mut now = 0u64;
            let mut state = None;
            let mut admitted: Vec<(u64, u32)> = Vec::new();
            for (gap, cost) in reqs {
                now += gap;
                let (d, write) = decide(now, state, q, cost);
                if cost == 0 {
                    prop_assert_eq!(write, None, "a peek wrote");
                }
                if d.allowed {
                    if let Some(s) = write {
                        state = Some(s);
                        admitted.push((now, cost));
                    }
                } else if cost <= limit {
                    let later = now + us(d.retry_after);
                    prop_assert!(later > now, "refused with no wait");
                    prop_assert!(admitted_at(later, state, q, cost), "retry_after too short");
                    prop_assert!(!admitted_at(later - 1, state, q, cost), "retry_after not minimal");
                }
            }
            let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
            for &(t, c) in &admitted {
                *per_window.entry(t / per).or_default() += u64::from(c);
            }
            for (w, n) in per_window {
                prop_assert!(n <= u64::from(limit), "{n} admitted in fixed window {w}");
            }
            for (i, &(start, _)) in admitted.iter().enumerate() {
                let n: u64 = admitted[i..]
                    .iter()
                    .take_while(|&&(t, _)| t < start + per)
                    .map(|&(_, c)| u64::from(c))
                    .sum();
                prop_assert!(n <= 2 * u64::from(limit), "{n} admitted within one `per` from {start}");
            }
        }

        /// From any state (counts above the limit included, as after a limit was lowered):
        /// `remaining` is the largest cost admitted now, `reset_after` is when the whole
        /// quota is back, and `retry_after` is the first instant the request passes.
        #[test]
        fn remaining_reset_and_retry_are_exact(
            limit in 1u32..40,
            per in 1u64..5_000_000,
            now in 0u64..100_000_000,
            back in 0u64..4,
            ahead in proptest::bool::weighted(0.1),
            prev in 0u32..80,
            cur in 0u32..80,
            cost in 0u32..45,
        ) {
            let q = p(limit, per);
            let w = now / per;
            let window = if ahead { w + 1 } else { w.saturating_sub(back) };
            let state = st(window, prev, cur);
            let (d, write) = decide(now, state, q, cost);
            // A peek is answered as a request of one that was admitted.
            let (as_one, one_write) = decide(now, state, q, 1);
            if cost == 0 {
                prop_assert_eq!(d, as_one, "a peek answers as a request of one");
                prop_assert_eq!(write, None, "a peek wrote");
            }
            let after = if cost == 0 { one_write.or(state) } else { write.or(state) };
            prop_assert!(d.remaining <= limit);
            prop_assert!(!admitted_at(now, after, q, d.remaining + 1), "remaining too small");
            if d.remaining > 0 {
                prop_assert!(admitted_at(now, after, q, d.remaining), "remaining too large");
            }
            prop_assert!(d.reset_after <= q.ttl(), "reset beyond two windows");
            // Past a rollover, a state of a later window no longer reads as the current
            // one's: reset_after speaks for the clock that does not go back.
            if !ahead {
                let reset = now + us(d.reset_after);
                prop_assert_eq!(room(reset, after, q), limit, "not reset");
                if reset > now {
                    prop_assert!(room(reset - 1, after, q) < limit, "reset late");
                }
            }
            if d.allowed {
                prop_assert_eq!(d.retry_after, Duration::ZERO);
            } else {
                prop_assert_eq!(write, None, "a refusal wrote");
                if cost <= limit && !ahead {
                    let later = now + us(d.retry_after);
                    prop_assert!(admitted_at(later, state, q, cost), "retry_after too short");
                    prop_assert!(!admitted_at(later - 1, state, q, cost), "retry_after not minimal");
                }
            }
        }
    }
}
