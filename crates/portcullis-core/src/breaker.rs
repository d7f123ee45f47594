//! A circuit breaker for calls to a shared dependency (Redis).
//!
//! States, in the conventional sense:
//!
//! - **Closed**: calls go through. Outcomes are counted in a sliding time window (ten
//!   buckets of `window / 10`); a call that fails, or succeeds slower than `slow_call`,
//!   counts as a failure. Once the window holds at least `min_calls` calls and the share of
//!   failures reaches `failure_rate`, the breaker opens.
//! - **Open**: no call goes through (callers fall back at once) for `open_for`, plus up to
//!   10 % jitter so that a fleet of instances does not probe in step.
//! - **Half-open**: `half_open_probes` trial calls go through; others still fall back. All
//!   probes succeeding closes the breaker; any failing reopens it with the open time
//!   doubled, up to `max_open_for`.
//!
//! The breaker only decides; it reads time from a [`Clock`], so every transition is
//! tested on a [`ManualClock`](crate::ManualClock).
//!
//! ```
//! use portcullis_core::breaker::{Breaker, BreakerConfig, BreakerState};
//! use portcullis_core::ManualClock;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let cfg = BreakerConfig { min_calls: 2, jitter: false, ..BreakerConfig::default() };
//! let b = Breaker::new(cfg, Arc::new(clock.clone()));
//! for _ in 0..2 {
//!     let permit = b.acquire().unwrap();
//!     b.record(permit, false, Duration::ZERO);
//! }
//! assert_eq!(b.state(), BreakerState::Open);
//! assert!(b.acquire().is_none());
//! clock.advance(Duration::from_secs(5));
//! assert!(b.acquire().is_some(), "half-open: a probe goes through");
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Clock;

/// The breaker's settings (`[redis.breaker]`).
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Open when this share of the window's calls failed or were slow.
    pub failure_rate: f64,
    /// A successful call slower than this counts as a failure.
    pub slow_call: Duration,
    /// Calls the window must hold before the rate is judged.
    pub min_calls: u32,
    /// Length of the sliding window.
    pub window: Duration,
    /// First open period.
    pub open_for: Duration,
    /// Longest open period, however often probes fail.
    pub max_open_for: Duration,
    /// Trial calls in the half-open state.
    pub half_open_probes: u32,
    /// Add up to 10 % to each open period.
    pub jitter: bool,
}

impl Default for BreakerConfig {
    /// The defaults of DESIGN §3: Redis answers a LAN call in well under a millisecond,
    /// so 20 ms is already slow; ten calls keep one or two blips from opening the breaker;
    /// five seconds open matches Hystrix's sleep window.
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            slow_call: Duration::from_millis(20),
            min_calls: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            half_open_probes: 3,
            jitter: true,
        }
    }
}

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are short-circuited.
    Open,
    /// Trial calls go through.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`, as `/readyz` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The value of the `portcullis_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// Permission for one call, to hand back to [`Breaker::record`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "record the outcome of the call"]
pub enum Permit {
    /// A call while closed.
    Normal,
    /// A trial call while half-open.
    Probe,
}

/// Told of every state change, with the reason.
pub type TransitionListener = Arc<dyn Fn(BreakerState, BreakerState, &str) + Send + Sync>;

const BUCKETS: usize = 10;

#[derive(Clone, Copy, Default)]
struct Bucket {
    calls: u32,
    failures: u32,
}

enum St {
    Closed,
    Open { until: Instant },
    HalfOpen { issued: u32, succeeded: u32 },
}

struct Inner {
    st: St,
    buckets: [Bucket; BUCKETS],
    /// Start of the bucket at `head`.
    head_start: Instant,
    head: usize,
    open_for: Duration,
    seed: u64,
}

/// The breaker. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Breaker {
    cfg: BreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    state: AtomicU8,
    listener: Option<TransitionListener>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        let seed = clock
            .system_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
            | 1;
        Self {
            inner: Mutex::new(Inner {
                st: St::Closed,
                buckets: [Bucket::default(); BUCKETS],
                head_start: now,
                head: 0,
                open_for: cfg.open_for,
                seed,
            }),
            cfg,
            clock,
            state: AtomicU8::new(0),
            listener: None,
        }
    }

    /// Calls `listener` on every state change.
    pub fn with_listener(mut self, listener: TransitionListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The current state (a cheap atomic read).
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// Asks to make a call: `None` means fall back now, without touching the dependency.
    pub fn acquire(&self) -> Option<Permit> {
        let now = self.clock.now();
        let mut g = self.inner.lock().expect("breaker lock");
        match g.st {
            St::Closed => Some(Permit::Normal),
            St::Open { until } if now < until => None,
            St::Open { .. } => {
                g.st = St::HalfOpen {
                    issued: 1,
                    succeeded: 0,
                };
                self.changed(&mut g, BreakerState::HalfOpen, "open period over; probing");
                Some(Permit::Probe)
            }
            St::HalfOpen { ref mut issued, .. } => {
                if *issued < self.cfg.half_open_probes {
                    *issued += 1;
                    Some(Permit::Probe)
                } else {
                    None
                }
            }
        }
    }

    /// Records the outcome of a permitted call: `ok` and how long it took.
    pub fn record(&self, permit: Permit, ok: bool, elapsed: Duration) {
        let now = self.clock.now();
        let failed = !ok || elapsed >= self.cfg.slow_call;
        let mut g = self.inner.lock().expect("breaker lock");
        match (permit, &mut g.st) {
            (Permit::Normal, St::Closed) => {
                Self::rotate(&mut g, now, self.cfg.window);
                let head = g.head;
                g.buckets[head].calls += 1;
                if failed {
                    g.buckets[head].failures += 1;
                }
                let (calls, failures) = g
                    .buckets
                    .iter()
                    .fold((0u32, 0u32), |(c, f), b| (c + b.calls, f + b.failures));
                if calls >= self.cfg.min_calls
                    && f64::from(failures) >= self.cfg.failure_rate * f64::from(calls)
                {
                    let reason = format!("{failures} of {calls} calls failed or were slow");
                    self.open(&mut g, now, &reason);
                }
            }
            (Permit::Probe, St::HalfOpen { succeeded, .. }) => {
                if failed {
                    let doubled = g.open_for.saturating_mul(2).min(self.cfg.max_open_for);
                    g.open_for = doubled;
                    self.open(&mut g, now, "a probe failed");
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.cfg.half_open_probes {
                        g.st = St::Closed;
                        g.open_for = self.cfg.open_for;
                        g.buckets = [Bucket::default(); BUCKETS];
                        g.head_start = now;
                        self.changed(&mut g, BreakerState::Closed, "probes succeeded");
                    }
                }
            }
            // Outcomes of calls that began in another state say nothing about this one.
            _ => {}
        }
    }

    fn open(&self, g: &mut Inner, now: Instant, reason: &str) {
        let mut period = g.open_for;
        if self.cfg.jitter {
            // xorshift: good enough to spread instances apart.
            g.seed ^= g.seed << 13;
            g.seed ^= g.seed >> 7;
            g.seed ^= g.seed << 17;
            let tenth = period.as_micros() as u64 / 10;
            if tenth > 0 {
                period += Duration::from_micros(g.seed % tenth);
            }
        }
        g.st = St::Open {
            until: now + period,
        };
        g.buckets = [Bucket::default(); BUCKETS];
        g.head_start = now;
        self.changed(g, BreakerState::Open, reason);
    }

    fn changed(&self, _g: &mut Inner, to: BreakerState, reason: &str) {
        let from = BreakerState::from_u8(self.state.swap(to.to_u8(), Ordering::AcqRel));
        if from != to
            && let Some(l) = &self.listener
        {
            l(from, to, reason);
        }
    }

    fn rotate(g: &mut Inner, now: Instant, window: Duration) {
        let width = (window / BUCKETS as u32).max(Duration::from_millis(1));
        let mut steps = 0;
        while now >= g.head_start + width && steps < BUCKETS {
            g.head = (g.head + 1) % BUCKETS;
            g.buckets[g.head] = Bucket::default();
            g.head_start += width;
            steps += 1;
        }
        if now >= g.head_start + width {
            // Idle for longer than the window: start afresh.
            g.buckets = [Bucket::default(); BUCKETS];
            g.head_start = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use std::sync::atomic::AtomicUsize;

    fn breaker(clock: &ManualClock, cfg: BreakerConfig) -> Breaker {
        Breaker::new(cfg, Arc::new(clock.clone()))
    }

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            min_calls: 4,
            jitter: false,
            ..BreakerConfig::default()
        }
    }

    fn call(b: &Breaker, ok: bool) -> bool {
        match b.acquire() {
            Some(p) => {
                b.record(p, ok, Duration::from_millis(1));
                true
            }
            None => false,
        }
    }

    #[test]
    fn opens_only_after_min_calls_and_rate() {
        let clock = ManualClock::new();
        let b = breaker(&clock, cfg());
        assert!(call(&b, false));
        assert!(call(&b, false));
        assert!(call(&b, false));
        assert_eq!(b.state(), BreakerState::Closed, "below min_calls");
        assert!(call(&b, false));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!call(&b, true), "open: short-circuited");
    }

    #[test]
    fn a_healthy_majority_keeps_it_closed() {
        let clock = ManualClock::new();
        let b = breaker(&clock, cfg());
        for i in 0..100 {
            call(&b, i % 3 != 2);
        }
        assert_eq!(b.state(), BreakerState::Closed, "33 % failures < 50 %");
    }

    #[test]
    fn slow_successes_count_as_failures() {
        let clock = ManualClock::new();
        let b = breaker(&clock, cfg());
        for _ in 0..4 {
            let p = b.acquire().unwrap();
            b.record(p, true, Duration::from_millis(25));
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let clock = ManualClock::new();
        let b = breaker(&clock, cfg());
        for _ in 0..3 {
            call(&b, false);
        }
        clock.advance(Duration::from_secs(11));
        call(&b, false);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "the first three are outside the window"
        );
    }

    #[test]
    fn half_open_probes_close_it_and_failures_double_the_wait() {
        let clock = ManualClock::new();
        let b = breaker(&clock, cfg());
        for _ in 0..4 {
            call(&b, false);
        }
        clock.advance(Duration::from_millis(4999));
        assert!(!call(&b, true));
        clock.advance(Duration::from_millis(1));
        // Half-open: a failing probe reopens for 10 s.
        assert!(call(&b, false));
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(9));
        assert!(!call(&b, true));
        clock.advance(Duration::from_secs(1));
        // Three probes allowed, the fourth falls back until they report.
        let probes: Vec<_> = (0..3).map(|_| b.acquire().unwrap()).collect();
        assert!(b.acquire().is_none());
        for p in probes {
            assert_eq!(b.state(), BreakerState::HalfOpen);
            b.record(p, true, Duration::from_millis(1));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // The open period is back to its base after closing.
        for _ in 0..4 {
            call(&b, false);
        }
        clock.advance(Duration::from_secs(5));
        assert!(call(&b, true));
    }

    #[test]
    fn doubling_stops_at_max_open_for() {
        let clock = ManualClock::new();
        let b = breaker(
            &clock,
            BreakerConfig {
                max_open_for: Duration::from_secs(12),
                ..cfg()
            },
        );
        for _ in 0..4 {
            call(&b, false);
        }
        for wait in [5, 10, 12, 12] {
            clock.advance(Duration::from_secs(wait) - Duration::from_millis(1));
            assert!(!call(&b, true), "still open before {wait}s");
            clock.advance(Duration::from_millis(1));
            assert!(call(&b, false), "a probe after {wait}s");
        }
    }

    #[test]
    fn listener_hears_each_transition_once() {
        let clock = ManualClock::new();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let b = breaker(&clock, cfg()).with_listener(Arc::new(move |_, _, _| {
            s.fetch_add(1, Ordering::SeqCst);
        }));
        for _ in 0..10 {
            call(&b, false);
        }
        assert_eq!(seen.load(Ordering::SeqCst), 1, "closed -> open");
        clock.advance(Duration::from_secs(5));
        for _ in 0..3 {
            call(&b, true);
        }
        assert_eq!(
            seen.load(Ordering::SeqCst),
            3,
            "open -> half-open -> closed"
        );
    }

    #[test]
    fn jitter_lengthens_by_at_most_a_tenth() {
        let clock = ManualClock::new();
        let b = breaker(
            &clock,
            BreakerConfig {
                jitter: true,
                ..cfg()
            },
        );
        for _ in 0..4 {
            call(&b, false);
        }
        clock.advance(Duration::from_millis(4999));
        assert!(!call(&b, true));
        clock.advance(Duration::from_millis(501));
        assert!(call(&b, true), "5.5 s covers 5 s + 10 %");
    }
}
