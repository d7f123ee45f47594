//! The store conformance suite: one set of checks that every [`Backend`] must pass with
//! the same results. `portcullis-core/tests/store_conformance.rs` runs it against the
//! memory backend (on a fake clock) and against a real `redis-server` (real expiry).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use portcullis_core::ManualClock;
use portcullis_core::ratelimit::GcraParams;
use portcullis_core::ratelimit::gcra::GcraState;
use portcullis_core::store::Backend;

/// How the suite moves time: by hand for memory, by waiting for Redis.
pub trait Time: Send + Sync {
    /// Lets `d` pass.
    fn advance(&self, d: Duration) -> impl Future<Output = ()> + Send;
    /// How far a measured duration may fall short of the exact one (Redis's clock moves
    /// while the test runs).
    fn slack(&self) -> Duration;
}

/// Time that moves only when told: the memory backend's [`ManualClock`].
#[derive(Clone, Debug)]
pub struct FakeTime(pub ManualClock);

impl Time for FakeTime {
    async fn advance(&self, d: Duration) {
        self.0.advance(d);
    }
    fn slack(&self) -> Duration {
        Duration::ZERO
    }
}

/// Real time: Redis expires keys on its own clock.
#[derive(Clone, Copy, Debug)]
pub struct RealTime;

impl Time for RealTime {
    async fn advance(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
    fn slack(&self) -> Duration {
        Duration::from_millis(60)
    }
}

fn close_to(got: Duration, want: Duration, slack: Duration, what: &str) {
    assert!(
        got <= want && got + slack >= want,
        "{what}: got {got:?}, want {want:?} (slack {slack:?})"
    );
}

/// Runs every check; `ns` keeps keys of different runs apart.
pub async fn run<B: Backend + Clone + 'static>(store: &B, time: &impl Time, ns: &str) {
    basics(store, ns).await;
    expiry(store, time, ns).await;
    set_nx(store, time, ns).await;
    incr(store, time, ns).await;
    gcra(store, time, ns).await;
    gcra_batch(store, time, ns).await;
    concurrent_increments(store, ns).await;
    concurrent_gcra_admits_exactly_the_burst(store, ns).await;
    concurrent_gcra_batches_admit_exactly_the_burst(store, ns).await;
}

async fn basics<B: Backend>(s: &B, ns: &str) {
    let k = format!("{ns}:basic");
    assert_eq!(s.get(&k).await.unwrap(), None);
    s.set(&k, Bytes::from_static(b"one"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&b"one"[..]));
    s.set(&k, Bytes::from_static(b"two"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&b"two"[..]));
    assert!(s.delete(&k).await.unwrap());
    assert!(!s.delete(&k).await.unwrap());
    assert_eq!(s.get(&k).await.unwrap(), None);
    // Binary values survive.
    let bin = Bytes::from(vec![0u8, 255, 10, 13, 0]);
    s.set(&k, bin.clone(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.get(&k).await.unwrap(), Some(bin));
    s.ping().await.unwrap();
}

async fn expiry<B: Backend>(s: &B, t: &impl Time, ns: &str) {
    let k = format!("{ns}:ttl");
    s.set(&k, Bytes::from_static(b"v"), Duration::from_millis(300))
        .await
        .unwrap();
    let ttl = s.ttl(&k).await.unwrap().expect("has a ttl");
    close_to(ttl, Duration::from_millis(300), t.slack(), "ttl");
    t.advance(Duration::from_millis(150)).await;
    assert!(s.get(&k).await.unwrap().is_some(), "expired early");
    t.advance(Duration::from_millis(200)).await;
    assert_eq!(s.get(&k).await.unwrap(), None, "not expired");
    assert_eq!(s.ttl(&k).await.unwrap(), None);
}

async fn set_nx<B: Backend>(s: &B, t: &impl Time, ns: &str) {
    let k = format!("{ns}:nx");
    assert!(
        s.set_nx(&k, Bytes::from_static(b"a"), Duration::from_millis(200))
            .await
            .unwrap()
    );
    assert!(
        !s.set_nx(&k, Bytes::from_static(b"b"), Duration::from_millis(200))
            .await
            .unwrap()
    );
    assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&b"a"[..]));
    t.advance(Duration::from_millis(250)).await;
    assert!(
        s.set_nx(&k, Bytes::from_static(b"c"), Duration::from_secs(60))
            .await
            .unwrap(),
        "expired key counts as absent"
    );
}

async fn incr<B: Backend>(s: &B, t: &impl Time, ns: &str) {
    let k = format!("{ns}:incr");
    assert_eq!(s.incr(&k, 1, Duration::from_millis(300)).await.unwrap(), 1);
    assert_eq!(
        s.incr(&k, 5, Duration::from_secs(60)).await.unwrap(),
        6,
        "adds"
    );
    assert_eq!(s.incr(&k, -2, Duration::from_secs(60)).await.unwrap(), 4);
    t.advance(Duration::from_millis(350)).await;
    assert_eq!(
        s.get(&k).await.unwrap(),
        None,
        "the first TTL is kept, not extended"
    );
    assert_eq!(
        s.incr(&k, 1, Duration::from_secs(60)).await.unwrap(),
        1,
        "starts afresh"
    );
    let text = format!("{ns}:incr-text");
    s.set(
        &text,
        Bytes::from_static(b"not a number"),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(
        s.incr(&text, 1, Duration::from_secs(60)).await.is_err(),
        "incr of text must fail"
    );
}

async fn gcra<B: Backend>(s: &B, t: &impl Time, ns: &str) {
    let k = format!("{ns}:gcra");
    // 5 per second, burst 3: T = 200 ms.
    let q = GcraParams::new(5, Duration::from_secs(1), 3).unwrap();
    for expect_remaining in [2, 1, 0] {
        let d = s.gcra(&k, q, 1).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, expect_remaining);
    }
    let d = s.gcra(&k, q, 1).await.unwrap();
    assert!(!d.allowed, "over the burst");
    assert_eq!(d.remaining, 0);
    close_to(
        d.retry_after,
        Duration::from_millis(200),
        t.slack(),
        "retry_after",
    );
    close_to(
        d.reset_after,
        Duration::from_millis(600),
        t.slack(),
        "reset_after",
    );
    let ttl = s.ttl(&k).await.unwrap().expect("state has a ttl");
    assert!(
        ttl <= Duration::from_millis(600),
        "state lives until the bucket is full: {ttl:?}"
    );
    // A peek (cost 0) asks whether one more would pass, without consuming.
    let peek = s.gcra(&k, q, 0).await.unwrap();
    assert!(!peek.allowed, "the bucket is empty: {peek:?}");
    assert_eq!(peek.remaining, 0);
    assert!(
        !s.gcra(&k, q, 1).await.unwrap().allowed,
        "the peek changed nothing"
    );
    t.advance(Duration::from_millis(210)).await;
    let d = s.gcra(&k, q, 1).await.unwrap();
    assert!(d.allowed, "one more after T");
    assert!(!s.gcra(&k, q, 1).await.unwrap().allowed);
    t.advance(Duration::from_millis(700)).await;
    assert_eq!(
        s.ttl(&k).await.unwrap(),
        None,
        "the state expired with a full bucket"
    );
    assert_eq!(s.gcra(&k, q, 1).await.unwrap().remaining, 2);

    // A changed quota keeps what is owed as a number of requests: 3 of 3 per hour used,
    // then raised to 10 per hour, leaves 7 (not none for six minutes); lowered back,
    // the key is over its limit.
    let k = format!("{ns}:gcra-changed");
    let hour = Duration::from_secs(3600);
    let three = GcraParams::new(3, hour, 3).unwrap();
    let ten = GcraParams::new(10, hour, 10).unwrap();
    for _ in 0..3 {
        assert!(s.gcra(&k, three, 1).await.unwrap().allowed);
    }
    assert!(!s.gcra(&k, three, 1).await.unwrap().allowed);
    let mut raised = 0;
    for _ in 0..10 {
        raised += u32::from(s.gcra(&k, ten, 1).await.unwrap().allowed);
    }
    assert_eq!(raised, 7, "3 of the raised 10 were used");
    let d = s.gcra(&k, three, 0).await.unwrap();
    assert!(!d.allowed && d.remaining == 0, "10 owed against 3: {d:?}");
}

/// The stored GCRA state of `key`.
async fn gcra_state<B: Backend>(s: &B, key: &str, q: GcraParams) -> GcraState {
    let raw = s.get(key).await.unwrap().expect("a state");
    let text = std::str::from_utf8(&raw).expect("text");
    GcraState::decode(text, q).unwrap_or_else(|| panic!("{key} holds {text:?}"))
}

async fn gcra_batch<B: Backend>(s: &B, t: &impl Time, ns: &str) {
    // 10 per second, burst 5: T = 100 ms.
    let q = GcraParams::new(10, Duration::from_secs(1), 5).unwrap();
    let ms = Duration::from_millis;
    let batched = format!("{ns}:gcra-batch");
    let single = format!("{ns}:gcra-batch-twin");
    // Two used of five on both keys, the batched one first.
    for k in [&batched, &single] {
        for _ in 0..2 {
            assert!(s.gcra(k, q, 1).await.unwrap().allowed);
        }
    }
    // Room for three: a batch of six admits the first three, in order.
    let ds = s.gcra_batch(&batched, q, 6).await.unwrap();
    for _ in 0..3 {
        assert!(s.gcra(&single, q, 1).await.unwrap().allowed);
    }
    let shape: Vec<_> = ds.iter().map(|d| (d.allowed, d.remaining)).collect();
    assert_eq!(
        shape,
        [
            (true, 2),
            (true, 1),
            (true, 0),
            (false, 0),
            (false, 0),
            (false, 0)
        ],
        "{ds:?}"
    );
    for (d, want) in ds.iter().zip([ms(300), ms(400), ms(500)]) {
        close_to(d.reset_after, want, t.slack(), "an admission's reset_after");
        assert_eq!(d.retry_after, Duration::ZERO);
    }
    assert!(ds[3..].iter().all(|d| *d == ds[3]), "the refused agree");
    close_to(ds[3].retry_after, ms(100), t.slack(), "retry_after");
    close_to(ds[3].reset_after, ms(500), t.slack(), "reset_after");
    // The state is that of three single admissions (made a little later on the twin).
    let (b, one) = (
        gcra_state(s, &batched, q).await,
        gcra_state(s, &single, q).await,
    );
    assert_eq!(b.emission_us, q.emission_us);
    assert!(
        b.tat_us <= one.tat_us && one.tat_us - b.tat_us <= t.slack().as_micros() as u64,
        "batched {b:?}, one by one {one:?}"
    );
    let ttl = s.ttl(&batched).await.unwrap().expect("state has a ttl");
    close_to(ttl, ms(500), t.slack() + ms(1), "the state's ttl");
    assert!(!s.gcra(&batched, q, 1).await.unwrap().allowed, "full");
    // Nothing admitted, nothing written; no request, nothing decided.
    let full = s.gcra_batch(&batched, q, 2).await.unwrap();
    assert!(full.iter().all(|d| !d.allowed), "{full:?}");
    assert_eq!(gcra_state(s, &batched, q).await, b, "a refused batch wrote");
    assert!(s.gcra_batch(&batched, q, 0).await.unwrap().is_empty());
    // Two refill in 200 ms.
    t.advance(ms(210)).await;
    let after: Vec<_> = s
        .gcra_batch(&batched, q, 3)
        .await
        .unwrap()
        .iter()
        .map(|d| d.allowed)
        .collect();
    assert_eq!(after, [true, true, false]);
    // An empty bucket takes a whole burst at once.
    let fresh = format!("{ns}:gcra-batch-fresh");
    let ds = s.gcra_batch(&fresh, q, 5).await.unwrap();
    assert!(ds.iter().all(|d| d.allowed), "{ds:?}");
    assert_eq!(ds[4].remaining, 0);
}

async fn concurrent_increments<B: Backend + Clone + 'static>(s: &B, ns: &str) {
    let k = Arc::new(format!("{ns}:concurrent-incr"));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let s = s.clone();
            let k = k.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    s.incr(&k, 1, Duration::from_secs(60)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        s.incr(&k, 0, Duration::from_secs(60)).await.unwrap(),
        32 * 50,
        "a lost update"
    );
}

async fn concurrent_gcra_admits_exactly_the_burst<B: Backend + Clone + 'static>(s: &B, ns: &str) {
    let k = Arc::new(format!("{ns}:concurrent-gcra"));
    // 20 per minute: nothing refills during the test.
    let q = GcraParams::new(20, Duration::from_secs(60), 20).unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let s = s.clone();
            let k = k.clone();
            tokio::spawn(async move { s.gcra(&k, q, 1).await.unwrap().allowed })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 20, "200 concurrent requests against a quota of 20");
}

async fn concurrent_gcra_batches_admit_exactly_the_burst<B: Backend + Clone + 'static>(
    s: &B,
    ns: &str,
) {
    let k = Arc::new(format!("{ns}:concurrent-gcra-batch"));
    // 20 per minute: nothing refills during the test.
    let q = GcraParams::new(20, Duration::from_secs(60), 20).unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let s = s.clone();
            let k = k.clone();
            tokio::spawn(async move { s.gcra_batch(&k, q, 5).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        let ds = t.await.unwrap();
        assert_eq!(ds.len(), 5);
        let admitted = ds.iter().take_while(|d| d.allowed).count();
        assert!(
            ds[admitted..].iter().all(|d| !d.allowed),
            "the admitted come first: {ds:?}"
        );
        allowed += admitted;
    }
    assert_eq!(
        allowed, 20,
        "200 requests in 40 concurrent batches against a quota of 20"
    );
}

// ---- login lockout, through `SharedStore` ----

use portcullis_core::auth::{LockDecision, LockScope, LockoutPolicy, Username, canonicalize};
use portcullis_core::store::{Routed, SharedStore};

/// Short enough for real time on Redis: a lock of 200 ms doubling to at most 500 ms, a
/// window of 1 s, 10 failures per account per hour, 8 per source per window.
fn lockout_policy() -> LockoutPolicy {
    LockoutPolicy {
        max_failures: 3,
        window: Duration::from_secs(1),
        lock_for: Duration::from_millis(200),
        max_lock: Duration::from_millis(500),
        account_max_failures: 10,
        ip_max_failures: 8,
    }
}

fn shared<T: std::fmt::Debug>(r: Routed<T>, what: &str) -> T {
    match r {
        Routed::Shared(v) => v,
        other => panic!("{what}: expected an answer from the shared store, got {other:?}"),
    }
}

fn account(ns: &str, name: &str) -> Username {
    canonicalize(&format!("{ns}-{name}")).expect("a valid test username")
}

/// Asserts `d` is a lock of `scope` with a wait close to `want`, and its `just_locked`.
fn assert_locked(
    d: LockDecision,
    scope: LockScope,
    want: Duration,
    just: bool,
    t: &impl Time,
    what: &str,
) {
    match d {
        LockDecision::Locked {
            retry_after,
            scope: got,
            just_locked,
        } => {
            assert_eq!(got, scope, "{what}: scope");
            assert_eq!(just_locked, just, "{what}: just_locked");
            close_to(retry_after, want, t.slack(), what);
        }
        LockDecision::Allowed => panic!("{what}: allowed, expected a {scope:?} lock"),
    }
}

/// The lockout rules of `portcullis_core::auth::lockout`, through [`SharedStore`]: pair
/// locks that double up to the cap, the window, success, the account's hourly ceiling,
/// the source's ceiling, refused usernames, admin unlock, and atomicity under concurrency.
/// `ns` keeps accounts and sources of different runs apart.
pub async fn run_lockout(store: &SharedStore, time: &impl Time, ns: &str) {
    lockout_pair_locks_and_doubles(store, time, ns).await;
    lockout_window_forgets(store, time, ns).await;
    lockout_success_resets(store, time, ns).await;
    lockout_account_ceiling_and_unlock(store, time, ns).await;
    lockout_unlock_clears_pairs(store, ns).await;
    lockout_source_ceiling(store, time, ns).await;
    lockout_refused_usernames(store, ns).await;
    lockout_concurrent_failures_lock_once(store, ns).await;
}

async fn lockout_pair_locks_and_doubles(s: &SharedStore, t: &impl Time, ns: &str) {
    let p = lockout_policy();
    let a = account(ns, "pair");
    let src = format!("{ns}-src-pair");
    for i in 0..2 {
        let d = shared(s.lockout_failure(&a, &src, &p).await, "failure");
        assert_eq!(d, LockDecision::Allowed, "failure {i} below max_failures");
    }
    let d = shared(s.lockout_failure(&a, &src, &p).await, "third failure");
    assert_locked(
        d,
        LockScope::Pair,
        p.lock_for,
        true,
        t,
        "the third failure locks",
    );
    let d = shared(s.lockout_check(&a, &src, &p).await, "check");
    assert_locked(
        d,
        LockScope::Pair,
        p.lock_for,
        false,
        t,
        "locked pair, checked",
    );
    let victim = shared(
        s.lockout_check(&a, &format!("{ns}-src-victim"), &p).await,
        "victim",
    );
    assert_eq!(
        victim,
        LockDecision::Allowed,
        "the account from another source"
    );
    let other = shared(
        s.lockout_check(&account(ns, "other"), &src, &p).await,
        "other",
    );
    assert_eq!(
        other,
        LockDecision::Allowed,
        "another account from the source"
    );

    t.advance(p.lock_for + Duration::from_millis(10)).await;
    let d = shared(s.lockout_check(&a, &src, &p).await, "after the lock");
    assert_eq!(d, LockDecision::Allowed, "the lock ran out");
    let d = shared(
        s.lockout_failure(&a, &src, &p).await,
        "failure after the lock",
    );
    assert_locked(
        d,
        LockScope::Pair,
        2 * p.lock_for,
        true,
        t,
        "the next lock doubles",
    );
    t.advance(2 * p.lock_for + Duration::from_millis(10)).await;
    let d = shared(
        s.lockout_failure(&a, &src, &p).await,
        "failure after the second lock",
    );
    assert_locked(
        d,
        LockScope::Pair,
        p.max_lock,
        true,
        t,
        "the third lock is capped",
    );
}

async fn lockout_window_forgets(s: &SharedStore, t: &impl Time, ns: &str) {
    let p = lockout_policy();
    let a = account(ns, "window");
    let src = format!("{ns}-src-window");
    for _ in 0..3 {
        shared(s.lockout_failure(&a, &src, &p).await, "failure");
    }
    t.advance(p.window + Duration::from_millis(50)).await;
    for i in 0..2 {
        let d = shared(s.lockout_failure(&a, &src, &p).await, "failure");
        assert_eq!(d, LockDecision::Allowed, "failure {i} after a quiet window");
    }
    let d = shared(s.lockout_failure(&a, &src, &p).await, "failure");
    assert_locked(
        d,
        LockScope::Pair,
        p.lock_for,
        true,
        t,
        "the level was forgotten too",
    );
}

async fn lockout_success_resets(s: &SharedStore, t: &impl Time, ns: &str) {
    let p = lockout_policy();
    let a = account(ns, "success");
    let src = format!("{ns}-src-success-1");
    for _ in 0..2 {
        shared(s.lockout_failure(&a, &src, &p).await, "failure");
    }
    shared(s.lockout_success(&a, &src, &p).await, "success");
    for i in 0..2 {
        let d = shared(s.lockout_failure(&a, &src, &p).await, "failure");
        assert_eq!(d, LockDecision::Allowed, "failure {i} after a success");
    }
    // And the lock level: a pair locks, succeeds after the lock, locks again. (Another
    // account: this one is close to its ceiling of 10.)
    let a = account(ns, "success-2");
    let src = format!("{ns}-src-success-2");
    for _ in 0..3 {
        shared(s.lockout_failure(&a, &src, &p).await, "failure");
    }
    t.advance(p.lock_for + Duration::from_millis(10)).await;
    shared(s.lockout_success(&a, &src, &p).await, "success");
    for _ in 0..2 {
        let d = shared(s.lockout_failure(&a, &src, &p).await, "failure");
        assert_eq!(d, LockDecision::Allowed);
    }
    let d = shared(s.lockout_failure(&a, &src, &p).await, "failure");
    assert_locked(
        d,
        LockScope::Pair,
        p.lock_for,
        true,
        t,
        "the level was reset",
    );
}

async fn lockout_account_ceiling_and_unlock(s: &SharedStore, t: &impl Time, ns: &str) {
    let p = lockout_policy();
    let a = account(ns, "ceiling");
    let src = |i: u32| format!("{ns}-src-ceiling-{i}");
    for i in 0..9 {
        let d = shared(s.lockout_failure(&a, &src(i), &p).await, "failure");
        assert_eq!(d, LockDecision::Allowed, "failure {i} below the ceiling");
    }
    let d = shared(s.lockout_failure(&a, &src(9), &p).await, "tenth failure");
    let hour = portcullis_core::store::lockout::ACCOUNT_WINDOW;
    // The hour started with the first failure, a moment ago.
    let slack = t.slack() + Duration::from_secs(2);
    let check_hour = |d: LockDecision, just: bool, what: &str| match d {
        LockDecision::Locked {
            retry_after,
            scope,
            just_locked,
        } => {
            assert_eq!((scope, just_locked), (LockScope::Account, just), "{what}");
            assert!(
                retry_after <= hour && retry_after + slack >= hour,
                "{what}: {retry_after:?}"
            );
        }
        LockDecision::Allowed => panic!("{what}: allowed over the ceiling"),
    };
    check_hour(d, true, "the tenth failure reaches the ceiling");
    let d = shared(s.lockout_check(&a, &src(100), &p).await, "fresh source");
    check_hour(d, false, "every source is refused");

    assert!(
        shared(s.lockout_unlock(&a).await, "unlock"),
        "there was state"
    );
    let d = shared(s.lockout_check(&a, &src(100), &p).await, "after unlock");
    assert_eq!(d, LockDecision::Allowed, "unlock lifts the ceiling");
    // The pair (a, src 9) had one failure; unlock forgot it: three more lock it.
    for _ in 0..2 {
        let d = shared(s.lockout_failure(&a, &src(9), &p).await, "failure");
        assert_eq!(d, LockDecision::Allowed, "the pair starts afresh");
    }
    let d = shared(s.lockout_failure(&a, &src(9), &p).await, "failure");
    assert_locked(
        d,
        LockScope::Pair,
        p.lock_for,
        true,
        t,
        "a new count after unlock",
    );
}

async fn lockout_unlock_clears_pairs(s: &SharedStore, ns: &str) {
    let p = lockout_policy();
    let a = account(ns, "unlock");
    let src = format!("{ns}-src-unlock");
    for _ in 0..3 {
        shared(s.lockout_failure(&a, &src, &p).await, "failure");
    }
    assert!(shared(s.lockout_check(&a, &src, &p).await, "check").is_locked());
    assert!(shared(s.lockout_unlock(&a).await, "unlock"));
    let d = shared(s.lockout_check(&a, &src, &p).await, "after unlock");
    assert_eq!(d, LockDecision::Allowed, "the locked pair is released");
    for _ in 0..2 {
        let d = shared(s.lockout_failure(&a, &src, &p).await, "failure");
        assert_eq!(d, LockDecision::Allowed, "its failures were forgotten");
    }
    let d = shared(s.lockout_failure(&a, &src, &p).await, "failure");
    match d {
        LockDecision::Locked { retry_after, .. } => {
            assert!(retry_after <= p.lock_for, "and its level: {retry_after:?}");
        }
        LockDecision::Allowed => panic!("the third failure after unlock must lock"),
    }
    let nobody = account(ns, "never-seen");
    assert!(
        !shared(s.lockout_unlock(&nobody).await, "unlock"),
        "nothing to clear"
    );
}

async fn lockout_source_ceiling(s: &SharedStore, t: &impl Time, ns: &str) {
    let p = lockout_policy();
    let src = format!("{ns}-src-spray");
    for i in 0..7 {
        let d = shared(
            s.lockout_failure(&account(ns, &format!("spray{i}")), &src, &p)
                .await,
            "failure",
        );
        assert_eq!(
            d,
            LockDecision::Allowed,
            "failure {i} below the source ceiling"
        );
    }
    let d = shared(
        s.lockout_failure(&account(ns, "spray7"), &src, &p).await,
        "failure",
    );
    assert_locked(
        d,
        LockScope::Source,
        p.window,
        true,
        t,
        "the eighth failure reaches it",
    );
    let d = shared(
        s.lockout_check(&account(ns, "spray-new"), &src, &p).await,
        "check",
    );
    assert!(
        matches!(
            d,
            LockDecision::Locked {
                scope: LockScope::Source,
                ..
            }
        ),
        "every account from the source: {d:?}"
    );
    let d = shared(
        s.lockout_check(&account(ns, "spray0"), &format!("{ns}-src-elsewhere"), &p)
            .await,
        "check",
    );
    assert_eq!(d, LockDecision::Allowed, "the accounts from elsewhere");
    t.advance(p.window + Duration::from_millis(50)).await;
    let d = shared(
        s.lockout_check(&account(ns, "spray-new"), &src, &p).await,
        "check",
    );
    assert_eq!(d, LockDecision::Allowed, "the source's window ended");
}

async fn lockout_refused_usernames(s: &SharedStore, ns: &str) {
    let p = lockout_policy();
    let src = format!("{ns}-src-refused");
    for i in 0..7 {
        let d = shared(s.lockout_source_failure(&src, &p).await, "source failure");
        assert_eq!(d, LockDecision::Allowed, "refused username {i}");
    }
    let d = shared(s.lockout_source_check(&src, &p).await, "source check");
    assert_eq!(d, LockDecision::Allowed);
    let d = shared(s.lockout_source_failure(&src, &p).await, "source failure");
    assert!(d.just_locked(), "the eighth reaches the ceiling: {d:?}");
    let d = shared(s.lockout_source_check(&src, &p).await, "source check");
    assert!(matches!(
        d,
        LockDecision::Locked {
            scope: LockScope::Source,
            ..
        }
    ));
    let a = account(ns, "refused");
    let d = shared(s.lockout_check(&a, &src, &p).await, "check");
    assert!(matches!(
        d,
        LockDecision::Locked {
            scope: LockScope::Source,
            ..
        }
    ));
    let d = shared(
        s.lockout_check(&a, &format!("{ns}-src-refused-2"), &p)
            .await,
        "check",
    );
    assert_eq!(d, LockDecision::Allowed, "no account was charged");
}

async fn lockout_concurrent_failures_lock_once(s: &SharedStore, ns: &str) {
    // Long locks and high ceilings except the one under test: nothing expires or
    // interferes during the burst.
    let base = LockoutPolicy {
        lock_for: Duration::from_secs(10),
        max_lock: Duration::from_secs(10),
        account_max_failures: 1000,
        ip_max_failures: 1000,
        ..lockout_policy()
    };
    let run = |a: Username, distinct_sources: bool, p: LockoutPolicy| {
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let s = s.clone();
                let a = a.clone();
                let src = if distinct_sources {
                    format!("{ns}-src-burst-{i}")
                } else {
                    format!("{ns}-src-burst")
                };
                tokio::spawn(async move { s.lockout_failure(&a, &src, &p).await })
            })
            .collect::<Vec<_>>();
        async move {
            let mut out = Vec::new();
            for t in tasks {
                out.push(shared(t.await.unwrap(), "concurrent failure"));
            }
            out
        }
    };
    // One pair: exactly one failure locks it; only the two before it are allowed.
    let got = run(account(ns, "burst-pair"), false, base).await;
    assert_eq!(got.iter().filter(|d| d.just_locked()).count(), 1, "{got:?}");
    assert_eq!(got.iter().filter(|d| !d.is_locked()).count(), 2, "{got:?}");
    // One account from forty sources, a ceiling of 20: exactly one failure reaches it.
    let p = LockoutPolicy {
        account_max_failures: 20,
        ..base
    };
    let got = run(account(ns, "burst-account"), true, p).await;
    assert_eq!(got.iter().filter(|d| d.just_locked()).count(), 1, "{got:?}");
    assert_eq!(got.iter().filter(|d| !d.is_locked()).count(), 19, "{got:?}");
}

// ---- sliding-window rate limits, through `SharedStore` ----

use portcullis_core::ratelimit::{Decision, Quota};
use portcullis_core::store::FailMode;

fn sw_quota(limit: u32, per: Duration) -> Quota {
    Quota::new(limit, per, None).expect("a valid test quota")
}

/// One check, answered by the shared store (`Deny`: a fallback would show).
async fn sw(s: &SharedStore, key: &str, q: &Quota, cost: u32) -> Decision {
    let d = shared(
        s.sliding_window(key, q, q, cost, FailMode::Deny).await,
        "sliding window",
    );
    assert_eq!(
        d.limit,
        q.limit.get(),
        "the decision reports the quota's limit"
    );
    d
}

/// The stored state, `window:prev:cur`, read back as numbers.
async fn sw_state(s: &SharedStore, key: &str) -> Option<(u64, u32, u32)> {
    let raw = shared(s.get(key, FailMode::Deny).await, "get")?;
    let text = std::str::from_utf8(&raw).expect("the state is text");
    let parts: Vec<&str> = text.split(':').collect();
    match parts[..] {
        [w, p, c] => Some((
            w.parse().expect("window"),
            p.parse().expect("prev"),
            c.parse().expect("cur"),
        )),
        _ => panic!("the state is window:prev:cur, got {text:?}"),
    }
}

async fn sw_ttl(s: &SharedStore, key: &str) -> Option<Duration> {
    match s.redis_backend() {
        Some(r) => r.ttl(key).await.unwrap(),
        None => s.local().ttl(key).await.unwrap(),
    }
}

/// Waits until just after a window of `per` starts on the store's clock (windows are
/// aligned to the clock's zero), so the steps of a test fall in the windows it means.
/// A first request on a fresh key reports `reset_after = 2 × per − elapsed`.
async fn sw_align(s: &SharedStore, t: &impl Time, key: &str, per: Duration) {
    let d = sw(s, key, &sw_quota(1, per), 1).await;
    let elapsed = (2 * per)
        .checked_sub(d.reset_after)
        .expect("reset_after of a fresh key is at most two windows");
    t.advance(per - elapsed + t.slack() / 4).await;
}

/// The sliding-window counter of `portcullis_core::ratelimit::sliding` through
/// [`SharedStore::sliding_window`]: the limit then a refusal with the computed wait,
/// rollover with the previous window's weight, the stored form and its expiry, peeks,
/// costs, a lowered limit, and exactly the limit admitted under concurrency.
pub async fn run_sliding_window(store: &SharedStore, time: &impl Time, ns: &str) {
    sliding_limit_rollover_and_expiry(store, time, ns).await;
    sliding_peeks_costs_and_a_lowered_limit(store, ns).await;
    sliding_concurrent_checks_admit_exactly_the_limit(store, ns).await;
}

async fn sliding_limit_rollover_and_expiry(s: &SharedStore, t: &impl Time, ns: &str) {
    let per = Duration::from_secs(1);
    let q = sw_quota(10, per);
    let k = format!("{ns}:sw-limit");
    sw_align(s, t, &format!("{ns}:sw-align"), per).await;

    let d = sw(s, &k, &q, 0).await;
    assert!(
        d.allowed && d.remaining == 9,
        "a fresh key, peeked (answered as a request of one): {d:?}"
    );
    assert_eq!(sw_state(s, &k).await, None, "a peek wrote");

    let first = sw(s, &k, &q, 1).await;
    assert!(first.allowed && first.remaining == 9, "{first:?}");
    let (window, prev, cur) = sw_state(s, &k).await.expect("a state");
    assert_eq!((prev, cur), (0, 1));
    for want in (0..9).rev() {
        let d = sw(s, &k, &q, 1).await;
        assert!(d.allowed, "request {} of 10", 10 - want);
        assert_eq!(d.remaining, want);
    }
    // The 11th waits for the next window and a tenth of it (the weight falls to 9):
    // 1.1 s after the window's start, which the first request's reset_after (2 s after
    // it) tells.
    let d = sw(s, &k, &q, 1).await;
    assert!(!d.allowed && d.remaining == 0, "over the limit: {d:?}");
    close_to(
        d.retry_after,
        first.reset_after - per * 9 / 10,
        t.slack(),
        "retry_after at the limit",
    );
    close_to(
        d.reset_after,
        first.reset_after,
        t.slack(),
        "reset_after at the limit",
    );
    let d = sw(s, &k, &q, 0).await;
    assert!(
        !d.allowed && d.remaining == 0,
        "a peek at the limit is refused: {d:?}"
    );
    assert_eq!(
        sw_state(s, &k).await,
        Some((window, 0, 10)),
        "refusals and peeks wrote"
    );
    let ttl = sw_ttl(s, &k).await.expect("the state has a ttl");
    close_to(ttl, 2 * per, t.slack(), "the state lives two windows");

    // Half-way through the next window the previous one weighs 5: five more pass, and
    // the sixth waits until it weighs 4, at 60 % of the window. A peek is answered as a
    // request of one: it would pass and leave 4, and the quota would be whole at the end
    // of the window after this one.
    t.advance(per * 3 / 2).await;
    let peek = sw(s, &k, &q, 0).await;
    assert!(peek.allowed, "{peek:?}");
    assert_eq!(peek.remaining, 4, "the previous window's weight: {peek:?}");
    for i in 0..5 {
        let d = sw(s, &k, &q, 1).await;
        assert!(d.allowed, "request {i} after the rollover");
        assert_eq!(d.remaining, 4 - i);
    }
    let d = sw(s, &k, &q, 1).await;
    assert!(!d.allowed, "the sixth after the rollover: {d:?}");
    close_to(
        d.retry_after,
        peek.reset_after - per - per * 2 / 5,
        t.slack(),
        "retry_after after the rollover",
    );
    assert_eq!(
        sw_state(s, &k).await,
        Some((window + 1, 10, 5)),
        "the counts shifted"
    );

    t.advance(2 * per + Duration::from_millis(50)).await;
    assert_eq!(sw_state(s, &k).await, None, "the state expired");
    assert_eq!(sw_ttl(s, &k).await, None);
    let d = sw(s, &k, &q, 1).await;
    assert!(d.allowed && d.remaining == 9, "a fresh start: {d:?}");
}

async fn sliding_peeks_costs_and_a_lowered_limit(s: &SharedStore, ns: &str) {
    // A minute: nothing decays noticeably during the test.
    let per = Duration::from_secs(60);
    let q = sw_quota(5, per);
    let k = format!("{ns}:sw-peek");
    for _ in 0..20 {
        let d = sw(s, &k, &q, 0).await;
        assert!(d.allowed && d.remaining == 4, "{d:?}");
    }
    assert_eq!(sw_state(s, &k).await, None, "peeks wrote");

    let d = sw(s, &k, &q, 3).await;
    assert!(d.allowed && d.remaining == 2, "a cost of 3: {d:?}");
    let d = sw(s, &k, &q, 3).await;
    assert!(!d.allowed && d.remaining == 2, "3 more do not fit: {d:?}");
    for _ in 0..5 {
        assert_eq!(sw(s, &k, &q, 0).await.remaining, 1, "peeks count nothing");
    }
    let d = sw(s, &k, &q, 2).await;
    assert!(d.allowed && d.remaining == 0, "2 fit: {d:?}");
    let d = sw(s, &k, &q, 6).await;
    assert!(!d.allowed, "a cost above the limit never passes");
    assert_eq!(d.retry_after, per, "and is told to wait one window");
    let (_, prev, cur) = sw_state(s, &k).await.expect("a state");
    assert_eq!((prev, cur), (0, 5));

    // The limit lowered to 3 under the stored 5: a request (and a peek, answered as
    // one) is refused until the 5 have decayed to 2 in the next window, 3/5 into it.
    // Wait and reset come from the same script run, so the relation between them is
    // exact on every backend.
    let lowered = sw_quota(3, per);
    let per_us = per.as_micros() as u64;
    let y = Duration::from_micros(per_us - 2 * per_us / 5);
    for cost in [0, 1] {
        let d = sw(s, &k, &lowered, cost).await;
        assert!(
            !d.allowed && d.remaining == 0,
            "cost {cost} over a lowered limit: {d:?}"
        );
        assert_eq!(d.retry_after, d.reset_after - per + y, "cost {cost}: {d:?}");
    }
}

async fn sliding_concurrent_checks_admit_exactly_the_limit(s: &SharedStore, ns: &str) {
    let k = Arc::new(format!("{ns}:sw-concurrent"));
    // 20 per minute: the previous window's weight cannot let one more in.
    let q = sw_quota(20, Duration::from_secs(60));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let s = s.clone();
            let k = k.clone();
            tokio::spawn(async move { sw(&s, &k, &q, 1).await.allowed })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 20, "200 concurrent checks against a limit of 20");
    let (_, prev, cur) = sw_state(s, &k).await.expect("a state");
    assert_eq!(prev + cur, 20, "every admission counted once");
}
