//! Rate-limit decisions, as pure functions over time and stored state.
//!
//! Two algorithms, each with one definition of its semantics run identically in memory
//! and in Redis (a Lua script on the server's clock):
//!
//! - [`gcra`], the default: the Generic Cell Rate Algorithm. One timestamp per key (the
//!   *theoretical arrival time*), exact at any instant: at most `burst` requests at once,
//!   then one every `per / limit`.
//! - [`sliding`]: a sliding-window counter. The current and the previous fixed window are
//!   counted, the previous one weighted by how much of it still overlaps the sliding
//!   window: what express-rate-limit and Kong users know, smoother than fixed windows.
//!
//! A [`Quota`] is `limit` requests per `per`, with `burst` at once (GCRA only; the
//! sliding window admits up to `limit` in any window).

pub mod gcra;
pub mod sliding;

use std::num::NonZeroU32;
use std::time::Duration;

pub use gcra::{GcraBatch, GcraDecision, GcraParams};

/// Which algorithm decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// GCRA (default).
    Gcra,
    /// Sliding-window counter.
    SlidingWindow,
}

impl Algorithm {
    /// `gcra` or `sliding_window`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gcra => "gcra",
            Self::SlidingWindow => "sliding_window",
        }
    }
}

/// `limit` requests per `per`, `burst` of them at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests per window.
    pub limit: NonZeroU32,
    /// The window.
    pub per: Duration,
    /// Requests allowed at once (GCRA); defaults to `limit`.
    pub burst: NonZeroU32,
}

impl Quota {
    /// A quota; `None` when `limit` or `burst` is 0 or `per` is zero.
    pub fn new(limit: u32, per: Duration, burst: Option<u32>) -> Option<Self> {
        if per.is_zero() {
            return None;
        }
        Some(Self {
            limit: NonZeroU32::new(limit)?,
            per,
            burst: NonZeroU32::new(burst.unwrap_or(limit))?,
        })
    }

    /// This quota shared among `n` instances that cannot see each other (the local
    /// fallback): limit and burst divided, rounded up.
    pub fn divided(&self, n: NonZeroU32) -> Self {
        let div =
            |v: NonZeroU32| NonZeroU32::new(v.get().div_ceil(n.get())).unwrap_or(NonZeroU32::MIN);
        Self {
            limit: div(self.limit),
            per: self.per,
            burst: div(self.burst),
        }
    }

    /// The GCRA parameters.
    pub fn gcra(&self) -> GcraParams {
        GcraParams::new(self.limit.get(), self.per, self.burst.get())
            .expect("a quota is never zero")
    }

    /// Requests per second at the sustained rate, for comparing quotas.
    pub fn rate(&self) -> f64 {
        f64::from(self.limit.get()) / self.per.as_secs_f64()
    }
}

/// The outcome of one rate-limit check, whatever the algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The quota's limit (for headers).
    pub limit: u32,
    /// Requests that could still pass now.
    pub remaining: u32,
    /// Until the quota is fully available again.
    pub reset_after: Duration,
    /// When refused: until a request would pass.
    pub retry_after: Duration,
}

impl Decision {
    /// From a GCRA decision.
    pub fn from_gcra(d: GcraDecision, quota: &Quota) -> Self {
        Self {
            allowed: d.allowed,
            limit: quota.limit.get(),
            remaining: d.remaining,
            reset_after: d.reset_after,
            retry_after: d.retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divided_rounds_up_and_never_reaches_zero() {
        let q = Quota::new(20, Duration::from_secs(60), None).unwrap();
        let d = q.divided(NonZeroU32::new(3).unwrap());
        assert_eq!((d.limit.get(), d.burst.get()), (7, 7));
        let one = Quota::new(1, Duration::from_secs(1), None).unwrap();
        assert_eq!(one.divided(NonZeroU32::new(10).unwrap()).limit.get(), 1);
        assert!(Quota::new(0, Duration::from_secs(1), None).is_none());
        assert!(Quota::new(1, Duration::ZERO, None).is_none());
    }
}
