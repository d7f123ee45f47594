//! The store conformance suite: one set of checks that every [`Backend`] must pass with
//! the same results. `portcullis-core/tests/store_conformance.rs` runs it against the
//! memory backend (on a fake clock) and against a real `redis-server` (real expiry).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use portcullis_core::ManualClock;
use portcullis_core::ratelimit::GcraParams;
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
    concurrent_increments(store, ns).await;
    concurrent_gcra_admits_exactly_the_burst(store, ns).await;
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
    // A peek (cost 0) reports without consuming.
    assert_eq!(s.gcra(&k, q, 0).await.unwrap().remaining, 0);
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
