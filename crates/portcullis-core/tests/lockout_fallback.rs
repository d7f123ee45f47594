//! Login lockout when Redis is unavailable: the login fail mode is `Local` (DESIGN §6), so
//! counters move to this instance's memory and sign-in keeps working, throttled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_core::auth::{LockDecision, LockScope, LockoutPolicy, canonicalize};
use portcullis_core::breaker::{BreakerConfig, BreakerState};
use portcullis_core::store::{
    Backend, MemoryStore, NoObserver, RedisConfig, RedisStore, Routed, SharedStore,
};
use portcullis_core::{Secret, SystemClock};
use portcullis_testkit::ports::free_addr;
use portcullis_testkit::redis::RedisServer;

fn store(url: String) -> SharedStore {
    let redis = RedisStore::new(
        RedisConfig {
            url: Secret::new(url),
            command_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(200),
            breaker: BreakerConfig {
                min_calls: 2,
                window: Duration::from_secs(1),
                open_for: Duration::from_millis(100),
                max_open_for: Duration::from_millis(200),
                half_open_probes: 1,
                slow_call: Duration::from_millis(150),
                jitter: false,
                ..BreakerConfig::default()
            },
        },
        Arc::new(SystemClock),
        Arc::new(NoObserver),
    )
    .unwrap();
    SharedStore::redis(redis, MemoryStore::new(10_000, Arc::new(SystemClock)), "t")
}

fn local<T: std::fmt::Debug>(r: Routed<T>, what: &str) -> T {
    match r {
        Routed::Local(v) => v,
        other => panic!("{what}: expected a local answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_to_memory_when_redis_is_gone() {
    let s = store(format!("redis://{}", free_addr()));
    let p = LockoutPolicy::default();
    let alice = canonicalize("alice").unwrap();
    for i in 0..4 {
        let d = local(
            s.lockout_failure(&alice, "203.0.113.7", &p).await,
            "failure",
        );
        assert_eq!(d, LockDecision::Allowed, "failure {i}");
    }
    let d = local(s.lockout_failure(&alice, "203.0.113.7", &p).await, "fifth");
    assert!(d.just_locked(), "{d:?}");
    let d = local(s.lockout_check(&alice, "203.0.113.7", &p).await, "check");
    assert!(
        matches!(d, LockDecision::Locked { scope: LockScope::Pair, retry_after, .. } if retry_after <= p.lock_for),
        "{d:?}"
    );
    let d = local(s.lockout_check(&alice, "198.51.100.1", &p).await, "victim");
    assert_eq!(d, LockDecision::Allowed);
    local(
        s.lockout_success(&alice, "198.51.100.1", &p).await,
        "success",
    );
    assert!(local(s.lockout_unlock(&alice).await, "unlock"));
    let d = local(
        s.lockout_check(&alice, "203.0.113.7", &p).await,
        "after unlock",
    );
    assert_eq!(d, LockDecision::Allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlock_with_redis_back_also_clears_what_an_outage_left_in_memory() {
    let mut server = RedisServer::start();
    let s = store(server.url());
    let p = LockoutPolicy::default();
    let bob = canonicalize("bob").unwrap();
    let d = s.lockout_check(&bob, "x", &p).await;
    assert_eq!(d, Routed::Shared(LockDecision::Allowed));

    server.kill();
    for _ in 0..5 {
        local(
            s.lockout_failure(&bob, "x", &p).await,
            "failure during the outage",
        );
    }
    assert!(local(s.lockout_check(&bob, "x", &p).await, "check").is_locked());

    server.restart();
    let redis = s.redis_backend().unwrap();
    let give_up = Instant::now() + Duration::from_secs(10);
    while redis.ping().await.is_err() || redis.breaker_state() != BreakerState::Closed {
        assert!(Instant::now() < give_up, "Redis did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Redis lost everything with the restart; the lock lives only in memory.
    assert_eq!(
        s.lockout_check(&bob, "x", &p).await,
        Routed::Shared(LockDecision::Allowed)
    );
    assert_eq!(s.lockout_unlock(&bob).await, Routed::Shared(false));

    server.kill();
    let d = local(s.lockout_check(&bob, "x", &p).await, "next outage");
    assert_eq!(
        d,
        LockDecision::Allowed,
        "the unlock reached the local counters"
    );
}
