//! Login lockout: the policy, as pure functions over time and stored state.
//!
//! Three counters stand between a password guesser and the argon2id check, so that an
//! attacker is slowed down without being able to lock a victim out (DESIGN §1, §3
//! `[auth.lockout]`, §9):
//!
//! 1. **Per (account, source) pair.** Failures are counted within `window`: the count
//!    starts again once `window` has passed since the last failure. Reaching
//!    `max_failures` locks the pair for `lock_for × 2^level`, capped at `max_lock`, and
//!    raises `level`. While locked, attempts are refused without checking the password.
//!    After a lock expires the failures stay counted until `window` has passed since the
//!    last one, so the next failure locks again, for twice as long. A success resets the
//!    pair's failures and level. Locking the pair, not the account, is what keeps the
//!    victim (another source) able to sign in.
//! 2. **Per account, all sources together**: at most `account_max_failures` failures per
//!    [`ACCOUNT_WINDOW`] (an hour, counted from the first failure of the hour); then every
//!    attempt for that account is refused until that hour is over. This hard ceiling bounds
//!    the password guesses a distributed attack gets (ASVS 2.2.1: at most 100 per hour).
//! 3. **Per source, all accounts together**: at most `ip_max_failures` failures within
//!    `window` (counted from the source's first failure of the window); then the source is
//!    refused until that window is over. This stops one source from spraying passwords
//!    across many accounts.
//!
//! A username that canonicalisation refused counts only toward the source's ceiling: it is
//! no account, so it can neither lock one nor fill one's ceiling.
//!
//! A decision reports the longest of the waits in force ([`LockDecision::Locked`]), since no
//! attempt can pass before it, with the scope it came from. The same arithmetic runs in the
//! in-memory store and in the Redis script (`store/lua/lockout.lua`, on the server's clock);
//! timestamps are microseconds on the store's clock.
//!
//! # Fail mode
//!
//! Login keeps working when Redis is unavailable (`FailMode::Local`): the counters live in
//! each instance's memory until Redis is back, so attackers are still throttled, per
//! instance, and users can still sign in. Counters kept in Redis during the outage are not
//! seen meanwhile, and those kept locally are not carried over afterwards.
//!
//! # Security
//!
//! - Key the counters by the canonical username whether or not the account exists, and
//!   answer a lock identically for both: the lockout must not tell who has an account.
//! - Give the real client address as the source (behind trusted proxies only), IPv6
//!   grouped by prefix: an attacker who controls the source key escapes the pair and
//!   source counters (not the account ceiling).
//! - Check, verify, record is not one transaction: attempts that pass the check together
//!   (concurrently) are all evaluated, so a pair can see `max_failures` plus the
//!   concurrency, and an account its ceiling plus the concurrency. Bound login concurrency
//!   per account where that matters.
//! - The account ceiling is a hard lock: enough sources together can keep an account
//!   refused for an hour. That is the price of bounding guesses per account; the pair
//!   and source limits make reaching it cost an attacker many addresses.
//!
//! ```
//! use portcullis_core::auth::lockout::{LockDecision, LockScope, LockoutPolicy};
//! use std::time::Duration;
//!
//! let policy = LockoutPolicy::default(); // 5 failures, 15 min window, 1 min lock
//! let mut pair = None;
//! let mut now = 0;
//! for _ in 0..4 {
//!     let (state, just_locked) = policy.pair_on_failure(now, pair);
//!     assert!(!just_locked);
//!     pair = Some(state);
//!     now += 1_000_000;
//! }
//! let (state, just_locked) = policy.pair_on_failure(now, pair);
//! assert!(just_locked);
//! assert_eq!(
//!     policy.pair_check(now, &state),
//!     LockDecision::Locked { retry_after: Duration::from_secs(60), scope: LockScope::Pair, just_locked: false },
//! );
//! // The next lock of the pair lasts twice as long.
//! assert_eq!(policy.lock_duration(state.level), Duration::from_secs(120));
//! ```

use std::time::Duration;

/// The period of the per-account hard ceiling: ASVS 2.2.1 counts failures per hour.
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(3600);

/// Failures of one (account, source) pair that lock it: OWASP's usual threshold.
pub const DEFAULT_MAX_FAILURES: u32 = 5;
/// How long a pair's failures are remembered after the last one: OWASP's observation
/// window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The first lock of a pair: long enough to stop a script, short enough for a typo.
pub const DEFAULT_LOCK_FOR: Duration = Duration::from_secs(60);
/// The longest lock of a pair: OWASP's 15 minutes.
pub const DEFAULT_MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Failures per account per hour, all sources together: ASVS 2.2.1's "no more than 100".
pub const DEFAULT_ACCOUNT_MAX_FAILURES: u32 = 100;
/// Failures per source per `window`, all accounts together: the credential-stuffing limit.
pub const DEFAULT_IP_MAX_FAILURES: u32 = 20;

/// How many times a lock doubles before only `max_lock` matters; keeps the stored level
/// and the arithmetic small (2^32 × any useful `lock_for` exceeds any `max_lock`).
pub const MAX_LEVEL: u32 = 32;

/// The lockout settings (`[auth.lockout]`). A zero count is treated as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockoutPolicy {
    /// Failures of one pair within `window` that lock it.
    pub max_failures: u32,
    /// How long failures are remembered (pairs: since the last; sources: since the first).
    pub window: Duration,
    /// The first lock of a pair; each further lock doubles it.
    pub lock_for: Duration,
    /// The longest lock of a pair.
    pub max_lock: Duration,
    /// Failures per account per [`ACCOUNT_WINDOW`], all sources together.
    pub account_max_failures: u32,
    /// Failures per source within `window`, all accounts together.
    pub ip_max_failures: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: DEFAULT_MAX_FAILURES,
            window: DEFAULT_WINDOW,
            lock_for: DEFAULT_LOCK_FOR,
            max_lock: DEFAULT_MAX_LOCK,
            account_max_failures: DEFAULT_ACCOUNT_MAX_FAILURES,
            ip_max_failures: DEFAULT_IP_MAX_FAILURES,
        }
    }
}

/// Which counter refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockScope {
    /// This (account, source) pair is locked.
    Pair,
    /// The account reached its hourly ceiling.
    Account,
    /// The source reached its ceiling.
    Source,
}

impl LockScope {
    /// A stable name for logs and events: `pair`, `account`, `source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pair => "pair",
            Self::Account => "account",
            Self::Source => "source",
        }
    }
}

/// Whether a login attempt may be evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockDecision {
    /// Check the password.
    Allowed,
    /// Refuse without checking the password.
    Locked {
        /// How long until an attempt could pass (the longest wait in force).
        retry_after: Duration,
        /// The counter the wait comes from.
        scope: LockScope,
        /// Whether the failure just recorded started a lock (of the pair) or reached a
        /// ceiling (of the account or source): the moment for a `lockout` event. Always
        /// false from a check.
        just_locked: bool,
    },
}

impl LockDecision {
    /// Whether the attempt must be refused.
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Locked { .. })
    }

    /// The wait, when locked.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Allowed => None,
            Self::Locked { retry_after, .. } => Some(*retry_after),
        }
    }

    /// Whether a failure just started a lock or reached a ceiling.
    pub fn just_locked(&self) -> bool {
        matches!(
            self,
            Self::Locked {
                just_locked: true,
                ..
            }
        )
    }

    /// The stricter of two decisions: the longer wait (on a tie, the one that just locked,
    /// else `self`); `just_locked` is kept if either just locked. The store combines the
    /// pair's, then the account's, then the source's, so a tie names the narrower scope.
    pub fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::Allowed, d) | (d, Self::Allowed) => d,
            (
                Self::Locked {
                    retry_after: a,
                    scope: sa,
                    just_locked: ja,
                },
                Self::Locked {
                    retry_after: b,
                    scope: sb,
                    just_locked: jb,
                },
            ) => {
                let (retry_after, scope) = if a > b || (a == b && (ja || !jb)) {
                    (a, sa)
                } else {
                    (b, sb)
                };
                Self::Locked {
                    retry_after,
                    scope,
                    just_locked: ja || jb,
                }
            }
        }
    }

    fn locked_until(until_us: u64, now_us: u64, scope: LockScope, just_locked: bool) -> Self {
        if until_us > now_us {
            Self::Locked {
                retry_after: Duration::from_micros(until_us - now_us),
                scope,
                just_locked,
            }
        } else {
            Self::Allowed
        }
    }
}

/// What is stored for one (account, source) pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PairState {
    /// Failures counted in the current window.
    pub failures: u32,
    /// When the last failure was recorded (µs).
    pub last_failure_us: u64,
    /// Locks so far: the next lasts `lock_for × 2^level`.
    pub level: u32,
    /// The end of the current or last lock (µs; 0: never locked).
    pub locked_until_us: u64,
}

/// A fixed-window failure counter: the per-account and per-source ceilings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CeilingState {
    /// Failures in the current window.
    pub failures: u32,
    /// When the window ends (µs).
    pub ends_us: u64,
}

pub(crate) fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl LockoutPolicy {
    /// `max_failures`, at least 1.
    pub fn pair_limit(&self) -> u32 {
        self.max_failures.max(1)
    }

    /// `account_max_failures`, at least 1.
    pub fn account_limit(&self) -> u32 {
        self.account_max_failures.max(1)
    }

    /// `ip_max_failures`, at least 1.
    pub fn source_limit(&self) -> u32 {
        self.ip_max_failures.max(1)
    }

    /// The lock a pair gets at `level`: `lock_for × 2^level`, at most `max_lock`.
    pub fn lock_duration(&self, level: u32) -> Duration {
        Duration::from_micros(self.lock_duration_us(level))
    }

    pub(crate) fn lock_duration_us(&self, level: u32) -> u64 {
        let factor = 1u64 << level.min(MAX_LEVEL);
        us(self.lock_for)
            .saturating_mul(factor)
            .min(us(self.max_lock))
    }

    /// When a pair's state can be forgotten: its lock is over and `window` has passed since
    /// its last failure. The store's time to live for it.
    pub fn pair_expires_us(&self, s: &PairState) -> u64 {
        s.locked_until_us
            .max(s.last_failure_us.saturating_add(us(self.window)))
    }

    /// Records a failure of the pair at `now_us`; the new state, and whether it just
    /// locked the pair. A failure while the pair is locked (an attempt that passed the check
    /// just before the lock) is counted but does not start a new lock.
    pub fn pair_on_failure(&self, now_us: u64, state: Option<PairState>) -> (PairState, bool) {
        let mut s = match state {
            Some(s) if now_us < self.pair_expires_us(&s) => s,
            _ => PairState::default(),
        };
        if now_us.saturating_sub(s.last_failure_us) >= us(self.window) {
            // Only a lock longer than the window kept the state alive: the count restarts,
            // the level stays until the state expires.
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        s.last_failure_us = now_us;
        let locked = s.locked_until_us > now_us;
        if !locked && s.failures >= self.pair_limit() {
            s.locked_until_us = now_us.saturating_add(self.lock_duration_us(s.level));
            s.level = (s.level + 1).min(MAX_LEVEL);
            return (s, true);
        }
        (s, false)
    }

    /// Whether the pair is locked at `now_us`.
    pub fn pair_check(&self, now_us: u64, s: &PairState) -> LockDecision {
        LockDecision::locked_until(s.locked_until_us, now_us, LockScope::Pair, false)
    }

    /// Records a failure against a ceiling of `limit` per `window`; the new state and
    /// whether this failure reached the limit.
    fn ceiling_on_failure(
        now_us: u64,
        state: Option<CeilingState>,
        window: Duration,
        limit: u32,
    ) -> (CeilingState, bool) {
        let mut s = match state {
            Some(s) if now_us < s.ends_us => s,
            _ => CeilingState {
                failures: 0,
                ends_us: now_us.saturating_add(us(window)),
            },
        };
        s.failures = s.failures.saturating_add(1);
        (s, s.failures == limit)
    }

    fn ceiling_check(now_us: u64, s: &CeilingState, limit: u32, scope: LockScope) -> LockDecision {
        if s.failures >= limit {
            LockDecision::locked_until(s.ends_us, now_us, scope, false)
        } else {
            LockDecision::Allowed
        }
    }

    /// Records a failure against the account's hourly ceiling; the new state and whether
    /// this failure reached it.
    pub fn account_on_failure(
        &self,
        now_us: u64,
        state: Option<CeilingState>,
    ) -> (CeilingState, bool) {
        Self::ceiling_on_failure(now_us, state, ACCOUNT_WINDOW, self.account_limit())
    }

    /// Whether the account is over its ceiling at `now_us`.
    pub fn account_check(&self, now_us: u64, s: &CeilingState) -> LockDecision {
        Self::ceiling_check(now_us, s, self.account_limit(), LockScope::Account)
    }

    /// Records a failure against the source's ceiling; the new state and whether this
    /// failure reached it.
    pub fn source_on_failure(
        &self,
        now_us: u64,
        state: Option<CeilingState>,
    ) -> (CeilingState, bool) {
        Self::ceiling_on_failure(now_us, state, self.window, self.source_limit())
    }

    /// Whether the source is over its ceiling at `now_us`.
    pub fn source_check(&self, now_us: u64, s: &CeilingState) -> LockDecision {
        Self::ceiling_check(now_us, s, self.source_limit(), LockScope::Source)
    }
}

/// Marks a decision made right after a failure as just locked when that failure did it.
pub(crate) fn after_failure(d: LockDecision, just: bool) -> LockDecision {
    match d {
        LockDecision::Locked {
            retry_after, scope, ..
        } if just => LockDecision::Locked {
            retry_after,
            scope,
            just_locked: true,
        },
        d => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};
    use proptest::prelude::*;
    use std::time::Instant;

    const S: Duration = Duration::from_secs(1);
    const M: Duration = Duration::from_secs(60);

    /// Time as the store sees it: microseconds since a start, on a [`ManualClock`].
    struct Time {
        clock: ManualClock,
        start: Instant,
    }

    impl Time {
        fn new() -> Self {
            let clock = ManualClock::new();
            let start = clock.now();
            Self { clock, start }
        }
        fn now(&self) -> u64 {
            us(self.clock.now() - self.start)
        }
        fn advance(&self, d: Duration) {
            self.clock.advance(d);
        }
    }

    fn locked(retry_after: Duration, scope: LockScope) -> LockDecision {
        LockDecision::Locked {
            retry_after,
            scope,
            just_locked: false,
        }
    }

    /// Fails the pair `n` times at the current time; whether the last failure locked it.
    fn fail(p: &LockoutPolicy, t: &Time, s: &mut Option<PairState>, n: u32) -> bool {
        let mut just = false;
        for _ in 0..n {
            let (next, j) = p.pair_on_failure(t.now(), *s);
            *s = Some(next);
            just = j;
        }
        just
    }

    #[test]
    fn defaults_match_the_design() {
        let p = LockoutPolicy::default();
        assert_eq!(
            (
                p.max_failures,
                p.window,
                p.lock_for,
                p.max_lock,
                p.account_max_failures,
                p.ip_max_failures
            ),
            (5, 15 * M, M, 15 * M, 100, 20)
        );
    }

    #[test]
    fn lock_duration_doubles_up_to_the_cap() {
        let p = LockoutPolicy::default();
        let cases: &[(&str, u32, Duration)] = &[
            ("first lock", 0, M),
            ("second", 1, 2 * M),
            ("third", 2, 4 * M),
            ("fourth", 3, 8 * M),
            ("fifth is capped", 4, 15 * M),
            ("far beyond", 20, 15 * M),
            ("at the level cap", MAX_LEVEL, 15 * M),
            ("past the level cap", u32::MAX, 15 * M),
        ];
        for (name, level, want) in cases {
            assert_eq!(p.lock_duration(*level), *want, "{name}");
        }
        let huge = LockoutPolicy {
            lock_for: Duration::from_secs(u64::MAX / 2),
            max_lock: Duration::MAX,
            ..p
        };
        assert_eq!(
            huge.lock_duration(40),
            Duration::from_micros(u64::MAX),
            "saturates"
        );
    }

    #[test]
    fn pair_scenarios() {
        struct Step {
            advance: Duration,
            failures: u32,
            just_locked: bool,
            then: LockDecision,
        }
        let step = |advance, failures, just_locked, then| Step {
            advance,
            failures,
            just_locked,
            then,
        };
        let allowed = LockDecision::Allowed;
        let pair = |d| locked(d, LockScope::Pair);
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                "four failures do not lock",
                vec![step(Duration::ZERO, 4, false, allowed)],
            ),
            (
                "the fifth locks for lock_for",
                vec![step(Duration::ZERO, 5, true, pair(M))],
            ),
            (
                "the lock runs down",
                vec![
                    step(Duration::ZERO, 5, true, pair(M)),
                    step(40 * S, 0, false, pair(20 * S)),
                    step(20 * S, 0, false, allowed),
                ],
            ),
            (
                "after the lock the next failure locks twice as long",
                vec![
                    step(Duration::ZERO, 5, true, pair(M)),
                    step(M, 1, true, pair(2 * M)),
                    step(2 * M, 1, true, pair(4 * M)),
                    step(4 * M, 1, true, pair(8 * M)),
                    step(8 * M, 1, true, pair(15 * M)),
                ],
            ),
            (
                "the cap stays while failures continue",
                vec![
                    step(Duration::ZERO, 5, true, pair(M)),
                    step(M, 1, true, pair(2 * M)),
                    step(2 * M, 1, true, pair(4 * M)),
                    step(4 * M, 1, true, pair(8 * M)),
                    step(8 * M, 1, true, pair(15 * M)),
                    // A failure during the lock renews the window, so the level stays.
                    step(14 * M, 1, false, pair(M)),
                    step(M, 1, true, pair(15 * M)),
                ],
            ),
            (
                "a lock as long as the window ends with it: the pair starts afresh",
                vec![
                    step(Duration::ZERO, 5, true, pair(M)),
                    step(M, 1, true, pair(2 * M)),
                    step(2 * M, 1, true, pair(4 * M)),
                    step(4 * M, 1, true, pair(8 * M)),
                    step(8 * M, 1, true, pair(15 * M)),
                    step(15 * M, 4, false, allowed),
                    step(Duration::ZERO, 1, true, pair(M)),
                ],
            ),
            (
                "a window without failures forgets the count",
                vec![
                    step(Duration::ZERO, 4, false, allowed),
                    step(15 * M, 4, false, allowed),
                    step(Duration::ZERO, 1, true, pair(M)),
                ],
            ),
            (
                "the window runs from the last failure, not the first",
                vec![
                    step(Duration::ZERO, 2, false, allowed),
                    step(10 * M, 2, false, allowed),
                    step(10 * M, 1, true, pair(M)),
                ],
            ),
            (
                "a window after the lock forgets the level",
                vec![
                    step(Duration::ZERO, 5, true, pair(M)),
                    step(15 * M, 4, false, allowed),
                    step(Duration::ZERO, 1, true, pair(M)),
                ],
            ),
            (
                "failures while locked count but do not relock",
                vec![
                    step(Duration::ZERO, 5, true, pair(M)),
                    step(10 * S, 3, false, pair(50 * S)),
                    step(50 * S, 1, true, pair(2 * M)),
                ],
            ),
        ];
        let p = LockoutPolicy::default();
        for (name, steps) in cases {
            let t = Time::new();
            let mut s = None;
            for (i, st) in steps.iter().enumerate() {
                t.advance(st.advance);
                let just = fail(&p, &t, &mut s, st.failures);
                assert_eq!(just, st.just_locked, "{name}, step {i}: just_locked");
                let got = s.map_or(LockDecision::Allowed, |s| p.pair_check(t.now(), &s));
                assert_eq!(got, st.then, "{name}, step {i}");
            }
        }
    }

    #[test]
    fn success_is_forgetting_the_pair() {
        // The store deletes the pair on success; the policy then starts from nothing.
        let p = LockoutPolicy::default();
        let t = Time::new();
        let mut s = None;
        assert!(fail(&p, &t, &mut s, 5));
        t.advance(M);
        s = None; // success
        assert!(!fail(&p, &t, &mut s, 4));
        assert!(fail(&p, &t, &mut s, 1));
        assert_eq!(
            p.pair_check(t.now(), &s.unwrap()),
            locked(M, LockScope::Pair)
        );
    }

    #[test]
    fn pair_state_expires_with_its_window_or_lock() {
        let p = LockoutPolicy {
            window: M,
            lock_for: 10 * M,
            max_lock: 10 * M,
            ..LockoutPolicy::default()
        };
        let t = Time::new();
        let mut s = None;
        fail(&p, &t, &mut s, 5);
        let st = s.unwrap();
        assert_eq!(
            p.pair_expires_us(&st),
            t.now() + us(10 * M),
            "the lock outlives the window"
        );
        // Inside the lock, after the window: the count restarts, the level stays.
        t.advance(2 * M);
        fail(&p, &t, &mut s, 1);
        assert_eq!((s.unwrap().failures, s.unwrap().level), (1, 1));
    }

    #[test]
    fn ceilings() {
        let p = LockoutPolicy {
            account_max_failures: 3,
            ip_max_failures: 2,
            ..LockoutPolicy::default()
        };
        let t = Time::new();
        let mut acct = None;
        let mut justs = vec![];
        for _ in 0..4 {
            let (s, j) = p.account_on_failure(t.now(), acct);
            acct = Some(s);
            justs.push(j);
            t.advance(M);
        }
        assert_eq!(justs, [false, false, true, false], "reached once");
        // The hour runs from the first failure: 4 minutes have passed.
        assert_eq!(
            p.account_check(t.now(), &acct.unwrap()),
            locked(56 * M, LockScope::Account)
        );
        t.advance(56 * M);
        assert_eq!(
            p.account_check(t.now(), &acct.unwrap()),
            LockDecision::Allowed
        );
        let (s, j) = p.account_on_failure(t.now(), acct);
        assert_eq!((s.failures, j), (1, false), "a new hour");

        let mut src = None;
        for _ in 0..2 {
            src = Some(p.source_on_failure(t.now(), src).0);
        }
        assert_eq!(
            p.source_check(t.now(), &src.unwrap()),
            locked(15 * M, LockScope::Source)
        );
        t.advance(15 * M);
        assert_eq!(
            p.source_check(t.now(), &src.unwrap()),
            LockDecision::Allowed
        );
    }

    #[test]
    fn zero_counts_act_as_one() {
        let p = LockoutPolicy {
            max_failures: 0,
            account_max_failures: 0,
            ip_max_failures: 0,
            ..LockoutPolicy::default()
        };
        let (_, just) = p.pair_on_failure(0, None);
        assert!(just);
        assert!(p.account_on_failure(0, None).1);
        assert!(p.source_on_failure(0, None).1);
    }

    #[test]
    fn combining_decisions() {
        use LockScope::*;
        let l = |s: u64, scope, just_locked| LockDecision::Locked {
            retry_after: Duration::from_secs(s),
            scope,
            just_locked,
        };
        let a = LockDecision::Allowed;
        let cases: &[(&str, LockDecision, LockDecision, LockDecision)] = &[
            ("allowed and allowed", a, a, a),
            (
                "allowed and locked",
                a,
                l(5, Pair, false),
                l(5, Pair, false),
            ),
            (
                "locked and allowed",
                l(5, Source, true),
                a,
                l(5, Source, true),
            ),
            (
                "the longer wait wins",
                l(5, Pair, false),
                l(60, Account, false),
                l(60, Account, false),
            ),
            (
                "just_locked is kept",
                l(5, Pair, true),
                l(60, Account, false),
                l(60, Account, true),
            ),
            (
                "a tie prefers the one that just locked",
                l(5, Pair, false),
                l(5, Source, true),
                l(5, Source, true),
            ),
            (
                "a tie otherwise keeps the first",
                l(5, Pair, false),
                l(5, Source, false),
                l(5, Pair, false),
            ),
        ];
        for (name, x, y, want) in cases {
            assert_eq!(x.and(*y), *want, "{name}");
        }
    }

    proptest! {
        /// Whatever the timing of failures: a pair is never locked longer than `max_lock`,
        /// never before `max_failures` failures, locks never shrink while the level grows,
        /// and at most `max_failures` failures happen outside a lock before the first one.
        #[test]
        fn pair_invariants(
            max_failures in 1u32..8,
            lock_ms in 1u64..10_000,
            max_lock_ms in 1u64..100_000,
            window_ms in 1u64..100_000,
            gaps_ms in proptest::collection::vec(0u64..20_000, 1..200),
        ) {
            let p = LockoutPolicy {
                max_failures,
                window: Duration::from_millis(window_ms),
                lock_for: Duration::from_millis(lock_ms),
                max_lock: Duration::from_millis(max_lock_ms),
                ..LockoutPolicy::default()
            };
            let mut now = 0u64;
            let mut s: Option<PairState> = None;
            let mut last_lock: Option<(u32, u64)> = None;
            let mut evaluated_since_reset = 0u32;
            for gap in gaps_ms {
                now += gap * 1000;
                if let Some(st) = s {
                    if now >= p.pair_expires_us(&st) {
                        evaluated_since_reset = 0;
                        last_lock = None;
                    }
                    if p.pair_check(now, &st).is_locked() {
                        // Refused without a password check: no failure is recorded.
                        continue;
                    }
                }
                evaluated_since_reset += 1;
                let (st, just) = p.pair_on_failure(now, s);
                if just {
                    let d = st.locked_until_us - now;
                    prop_assert!(d <= us(p.max_lock));
                    prop_assert!(st.failures >= max_failures);
                    if let Some((level, prev)) = last_lock {
                        if st.level > level {
                            prop_assert!(d >= prev, "a later lock is shorter: {} < {}", d, prev);
                        }
                    } else {
                        prop_assert!(evaluated_since_reset <= max_failures);
                    }
                    last_lock = Some((st.level, d));
                }
                s = Some(st);
            }
        }
    }
}
