//! Refresh families and revocations against both backends: memory on a fake clock, a
//! real redis-server with real time.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::breaker::BreakerConfig;
use portcullis_core::session::{
    Family, RefreshToken, RotateArgs, Rotation, open_successor, seal_successor,
};
use portcullis_core::store::{
    FailMode, MemoryStore, NoObserver, RedisConfig, RedisStore, Routed, SharedStore,
};
use portcullis_core::{ManualClock, Secret, SystemClock};
use portcullis_testkit::redis::RedisServer;

fn family(token: &RefreshToken, roles: &[&str]) -> Family {
    Family {
        sub: "alice".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        cur: token.hash(),
        prev: String::new(),
        prev_at: 0,
        succ: String::new(),
        generation: 0,
        abs: 0,
        rev: false,
    }
}

/// Presents `t`; returns the outcome and the successor made for it.
async fn refresh(
    store: &SharedStore,
    t: &RefreshToken,
    grace: Duration,
) -> (Rotation, RefreshToken) {
    let next = RefreshToken::next_in(&t.family);
    let args = RotateArgs {
        presented: &t.hash(),
        next_hash: &next.hash(),
        next_sealed: &seal_successor(t, &next),
        grace_ms: grace.as_millis() as u64,
        idle_ms: 3_600_000,
    };
    match store
        .session_rotate(&t.family, args, FailMode::FailClosed)
        .await
    {
        Routed::Shared(r) => (r, next),
        other => panic!("unexpected {other:?}"),
    }
}

async fn suite(store: &SharedStore, roles: &[&str], advance: impl AsyncFn(Duration)) {
    let t0 = RefreshToken::new_family();
    let created = store
        .session_create(
            &t0.family,
            &family(&t0, roles),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            FailMode::FailClosed,
        )
        .await;
    assert_eq!(created, Routed::Shared(()));

    // Rotate t0 -> t1.
    let (r, t1) = refresh(store, &t0, Duration::from_secs(5)).await;
    let Rotation::Rotated(f) = r else {
        panic!("{r:?}")
    };
    assert_eq!(f.sub, "alice");
    assert_eq!(f.roles.len(), roles.len());
    // t0 again within grace: the same successor, sealed for t0's holder.
    let (r, _) = refresh(store, &t0, Duration::from_secs(5)).await;
    let Rotation::Replayed(f) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        open_successor(&t0, &f.succ).unwrap(),
        t1,
        "the same successor comes back"
    );
    // t1 rotates on.
    let (r, t2) = refresh(store, &t1, Duration::ZERO).await;
    assert!(matches!(r, Rotation::Rotated(_)));
    // t1 again after the grace window (0 here, plus time passing): reuse, the family dies.
    advance(Duration::from_millis(20)).await;
    let (r, _) = refresh(store, &t1, Duration::ZERO).await;
    assert!(matches!(r, Rotation::Reused(_)), "{r:?}");
    let (r, _) = refresh(store, &t2, Duration::ZERO).await;
    assert_eq!(
        r,
        Rotation::Invalid,
        "the latest successor dies with the family"
    );

    // Logout revokes.
    let a = RefreshToken::new_family();
    store
        .session_create(
            &a.family,
            &family(&a, roles),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            FailMode::FailClosed,
        )
        .await;
    let revoked = store.session_revoke(&a.family, FailMode::FailClosed).await;
    assert!(matches!(revoked, Routed::Shared(Some(ref f)) if f.rev));
    assert_eq!(
        refresh(store, &a, Duration::ZERO).await.0,
        Rotation::Invalid
    );
    assert_eq!(
        store
            .session_revoke("nonexistent", FailMode::FailClosed)
            .await,
        Routed::Shared(None)
    );

    // Absolute lifetime.
    let b = RefreshToken::new_family();
    store
        .session_create(
            &b.family,
            &family(&b, roles),
            Duration::from_millis(300),
            Duration::from_secs(3600),
            FailMode::FailClosed,
        )
        .await;
    advance(Duration::from_millis(400)).await;
    assert_eq!(
        refresh(store, &b, Duration::ZERO).await.0,
        Rotation::Invalid
    );

    // Concurrent refreshes with one token: one successor only.
    let c = RefreshToken::new_family();
    store
        .session_create(
            &c.family,
            &family(&c, roles),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            FailMode::FailClosed,
        )
        .await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (store, c) = (store.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            refresh(&store, &c, Duration::from_secs(10)).await
        }));
    }
    let mut successors = std::collections::HashSet::new();
    let mut rotated = 0;
    for t in tasks {
        match t.await.unwrap() {
            (Rotation::Rotated(_), next) => {
                rotated += 1;
                successors.insert(next.encode());
            }
            (Rotation::Replayed(f), _) => {
                successors.insert(open_successor(&c, &f.succ).unwrap().encode());
            }
            (other, _) => panic!("{other:?}"),
        }
    }
    assert_eq!(rotated, 1, "exactly one rotation");
    assert_eq!(
        successors.len(),
        1,
        "every answer carries the same successor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_memory() {
    let clock = ManualClock::new();
    let store = SharedStore::memory(MemoryStore::new(10_000, Arc::new(clock.clone())), "t");
    for roles in [&["user"][..], &[]] {
        let c = clock.clone();
        suite(&store, roles, async move |d| c.advance(d)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_redis() {
    let server = RedisServer::start();
    let redis = RedisStore::new(
        RedisConfig {
            url: Secret::new(server.url()),
            command_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            breaker: BreakerConfig::default(),
        },
        Arc::new(SystemClock),
        Arc::new(NoObserver),
    )
    .unwrap();
    let store = SharedStore::redis(redis, MemoryStore::new(1000, Arc::new(SystemClock)), "t");
    for roles in [&["user", "admin"][..], &[]] {
        suite(&store, roles, async |d| tokio::time::sleep(d).await).await;
    }

    // Revocations reach other instances through the shared list.
    let (_, c0) = store
        .revocations_since(0, Duration::from_secs(600))
        .await
        .unwrap();
    store.revocation_publish("s1", 4_000_000_000).await.unwrap();
    store.revocation_publish("s2", 4_000_000_001).await.unwrap();
    let (rows, c1) = store
        .revocations_since(c0, Duration::from_secs(600))
        .await
        .unwrap();
    let sids: Vec<&str> = rows.iter().map(|r| r.sid.as_str()).collect();
    assert_eq!(sids, ["s1", "s2"]);
    assert_eq!(rows[0].until, 4_000_000_000);
    let (rows, _) = store
        .revocations_since(c1, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(rows.is_empty(), "the cursor moves past what was read");

    // While Redis is down, rotation fails closed.
    drop(server);
    let t = RefreshToken::new_family();
    let next = RefreshToken::next_in(&t.family);
    let args = RotateArgs {
        presented: &t.hash(),
        next_hash: &next.hash(),
        next_sealed: "x",
        grace_ms: 0,
        idle_ms: 1000,
    };
    assert_eq!(
        store
            .session_rotate(&t.family, args, FailMode::FailClosed)
            .await,
        Routed::Unavailable
    );
}
