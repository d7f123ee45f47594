//! Time, injected.
//!
//! Decision code never calls `Instant::now()` or `SystemTime::now()` itself: it asks a
//! [`Clock`]. Production uses [`SystemClock`]; tests use [`ManualClock`] and move time by
//! hand, so rate limits, lockouts, token expiry and the breaker are tested without sleeping.
//!
//! ```
//! use portcullis_core::{Clock, ManualClock};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let start = clock.now();
//! clock.advance(Duration::from_secs(90));
//! assert_eq!(clock.now() - start, Duration::from_secs(90));
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A source of monotonic and wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time, for intervals (windows, timeouts, TTLs).
    fn now(&self) -> Instant;
    /// Wall-clock time, for what is exchanged with others (token `exp`, log timestamps).
    fn system_time(&self) -> SystemTime;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn system_time(&self) -> SystemTime {
        (**self).system_time()
    }
}

/// The operating system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to: for tests of anything that depends on time.
///
/// Clones share the same time, so a test can keep one handle and give another to the
/// code under test.
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    base: Instant,
    base_system: SystemTime,
    offset_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at the current time; it does not move by itself.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(ManualInner {
                base: Instant::now(),
                base_system: SystemTime::now(),
                offset_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.inner.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    fn offset(&self) -> Duration {
        Duration::from_nanos(self.inner.offset_nanos.load(Ordering::SeqCst))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("offset", &self.offset())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.base + self.offset()
    }
    fn system_time(&self) -> SystemTime {
        self.inner.base_system + self.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new();
        let b = a.clone();
        let t0 = b.now();
        let w0 = b.system_time();
        a.advance(Duration::from_millis(1500));
        assert_eq!(b.now() - t0, Duration::from_millis(1500));
        assert_eq!(
            b.system_time().duration_since(w0).unwrap(),
            Duration::from_millis(1500)
        );
    }
}
