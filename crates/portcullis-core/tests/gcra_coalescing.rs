//! Concurrent GCRA checks of one key through `SharedStore::rate_limit`, coalesced into
//! few script calls against a real `redis-server`: exact admissions within one instance
//! and across two, calls counted by Redis (`INFO commandstats`), a dropped first check, a
//! full batch, checks that must not join, and Redis paused or killed under a batch.
//!
//! The tests on the current-thread runtime (`#[tokio::test]`) are deterministic: spawned
//! checks run in order, and the batch's task, which yields once, runs after them all.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portcullis_core::breaker::{BreakerConfig, BreakerState};
use portcullis_core::ratelimit::{Algorithm, Decision, Quota};
use portcullis_core::store::{
    CallResult, FailMode, MemoryStore, RedisConfig, RedisStore, Routed, SharedStore, StoreObserver,
};
use portcullis_core::{Secret, SystemClock};
use portcullis_testkit::redis::RedisServer;
use tokio::task::JoinHandle;

/// Counts the store's calls.
#[derive(Debug, Default)]
struct Calls(AtomicUsize);

impl StoreObserver for Calls {
    fn call(&self, _: &'static str, _: CallResult) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn breaker(&self, _: &'static str, _: BreakerState, _: BreakerState, _: &str) {}
}

impl Calls {
    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

fn instance(server: &RedisServer, command_timeout: Duration) -> (SharedStore, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let redis = RedisStore::new(
        RedisConfig {
            url: Secret::new(server.url()),
            command_timeout,
            connect_timeout: Duration::from_millis(500),
            breaker: BreakerConfig::default(),
        },
        Arc::new(SystemClock),
        calls.clone(),
    )
    .unwrap();
    let local = MemoryStore::new(10_000, Arc::new(SystemClock));
    (SharedStore::redis(redis, local, "t"), calls)
}

/// `limit` per minute, all at once: nothing refills during a test.
fn per_minute(limit: u32) -> Quota {
    Quota::new(limit, Duration::from_secs(60), None).unwrap()
}

/// How many `EVALSHA` Redis has run since the last `CONFIG RESETSTAT`.
fn evalsha(server: &RedisServer) -> u64 {
    let stats = server.command(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// Connects and loads the GCRA scripts (on another key), then zeroes Redis's counters.
async fn warm_up(server: &RedisServer, store: &SharedStore) {
    let q = per_minute(10);
    // A check (the batch script) and a peek (the single one).
    for cost in [1, 0] {
        let d = store
            .rate_limit("warm-up", Algorithm::Gcra, &q, &q, cost, FailMode::Deny)
            .await;
        assert!(matches!(d, Routed::Shared(d) if d.allowed), "{d:?}");
    }
    assert!(
        server
            .command(&["CONFIG", "RESETSTAT"])
            .unwrap()
            .starts_with("+OK")
    );
}

fn spawn_check(
    store: &SharedStore,
    key: &str,
    shared: Quota,
    local: Quota,
    mode: FailMode,
) -> JoinHandle<Routed<Decision>> {
    let (store, key) = (store.clone(), key.to_owned());
    tokio::spawn(async move {
        store
            .rate_limit(&key, Algorithm::Gcra, &shared, &local, 1, mode)
            .await
    })
}

async fn join_all(tasks: Vec<JoinHandle<Routed<Decision>>>) -> Vec<Routed<Decision>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Admissions, all answered by Redis.
fn admitted(answers: &[Routed<Decision>]) -> usize {
    answers
        .iter()
        .map(|a| match a {
            Routed::Shared(d) => usize::from(d.allowed),
            other => panic!("expected an answer from Redis, got {other:?}"),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_one_key_admit_the_burst_in_few_calls() {
    let server = RedisServer::start();
    let (store, _) = instance(&server, Duration::from_millis(500));
    warm_up(&server, &store).await;
    let q = per_minute(20);
    let tasks = (0..200)
        .map(|_| spawn_check(&store, "hot", q, q, FailMode::Local))
        .collect();
    let answers = join_all(tasks).await;
    assert_eq!(admitted(&answers), 20, "200 concurrent checks, burst 20");
    let calls = evalsha(&server);
    eprintln!("200 checks: {calls} script calls");
    assert!(calls <= 40, "{calls} script calls for 200 checks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_quota_exactly() {
    let server = RedisServer::start();
    let (a, _) = instance(&server, Duration::from_millis(500));
    let (b, _) = instance(&server, Duration::from_millis(500));
    warm_up(&server, &a).await;
    warm_up(&server, &b).await;
    let q = per_minute(20);
    let tasks = (0..400)
        .map(|i| {
            spawn_check(
                if i % 2 == 0 { &a } else { &b },
                "hot",
                q,
                q,
                FailMode::Local,
            )
        })
        .collect();
    let answers = join_all(tasks).await;
    assert_eq!(
        admitted(&answers),
        20,
        "400 checks on two instances, burst 20"
    );
    let calls = evalsha(&server);
    eprintln!("400 checks on two instances: {calls} script calls");
    assert!(calls <= 80, "{calls} script calls for 400 checks");
}

/// The checks of one batch are decided in the order they came, as if made one by one.
#[tokio::test]
async fn a_batch_decides_in_arrival_order_and_a_full_one_goes_at_once() {
    let server = RedisServer::start();
    let (store, calls) = instance(&server, Duration::from_millis(500));
    warm_up(&server, &store).await;
    let before = calls.get();
    let q = per_minute(20);
    let tasks = (0..300)
        .map(|_| spawn_check(&store, "hot", q, q, FailMode::Local))
        .collect();
    let answers = join_all(tasks).await;
    for (i, a) in answers.iter().enumerate() {
        let Routed::Shared(d) = a else {
            panic!("check {i}: {a:?}")
        };
        assert_eq!(d.allowed, i < 20, "check {i}: {d:?}");
        assert_eq!(d.remaining, 19u32.saturating_sub(i as u32), "check {i}");
        assert_eq!(d.limit, 20);
    }
    // 256 in the first batch, sent when full; the other 44 in a second.
    assert_eq!(evalsha(&server), 2);
    assert_eq!(calls.get() - before, 2, "store calls");
}

/// A check whose future is dropped (its client went away) leaves the others answered;
/// dropped before the call, it is not counted.
#[tokio::test]
async fn a_dropped_first_check_strands_nobody_and_is_not_counted() {
    let server = RedisServer::start();
    let (store, _) = instance(&server, Duration::from_millis(500));
    warm_up(&server, &store).await;
    let q = per_minute(3);
    let mut first = Box::pin(store.rate_limit("k", Algorithm::Gcra, &q, &q, 1, FailMode::Local));
    // Polled once: it opened the batch and waits for it.
    tokio::select! {
        biased;
        d = &mut first => panic!("answered alone: {d:?}"),
        () = std::future::ready(()) => {}
    }
    let tasks = (0..5)
        .map(|_| spawn_check(&store, "k", q, q, FailMode::Local))
        .collect();
    drop(first);
    let answers = join_all(tasks).await;
    let allowed: Vec<bool> = answers
        .iter()
        .map(|a| matches!(a, Routed::Shared(d) if d.allowed))
        .collect();
    assert_eq!(allowed, [true, true, true, false, false], "{answers:?}");
    assert_eq!(evalsha(&server), 1, "one call for the five");

    // Dropped while the call waits for Redis: it was counted, the others are answered.
    let q = per_minute(2);
    server.pause();
    let mut first = Box::pin(store.rate_limit("k2", Algorithm::Gcra, &q, &q, 1, FailMode::Local));
    tokio::select! {
        biased;
        d = &mut first => panic!("answered alone: {d:?}"),
        () = std::future::ready(()) => {}
    }
    let tasks = (0..3)
        .map(|_| spawn_check(&store, "k2", q, q, FailMode::Local))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(first);
    server.resume();
    let answers = join_all(tasks).await;
    let allowed: Vec<bool> = answers
        .iter()
        .map(|a| matches!(a, Routed::Shared(d) if d.allowed))
        .collect();
    assert_eq!(allowed, [true, false, false], "{answers:?}");
}

/// Checks of one key with other quotas or another fail mode make their own calls; peeks
/// and sliding windows are not coalesced.
#[tokio::test]
async fn only_alike_checks_join() {
    let server = RedisServer::start();
    let (store, _) = instance(&server, Duration::from_millis(500));
    warm_up(&server, &store).await;
    let q = per_minute(20);
    let fewer = per_minute(5);
    let tasks = vec![
        spawn_check(&store, "k", q, q, FailMode::Local),
        spawn_check(&store, "k", q, q, FailMode::Deny),
        spawn_check(&store, "k", q, fewer, FailMode::Local),
        spawn_check(&store, "k", q, q, FailMode::Local),
    ];
    let answers = join_all(tasks).await;
    assert_eq!(admitted(&answers), 4);
    let mut remaining: Vec<u32> = answers
        .iter()
        .filter_map(|a| a.clone().value().map(|d| d.remaining))
        .collect();
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        [16, 17, 18, 19],
        "four admissions, one at a time"
    );
    assert_eq!(evalsha(&server), 3, "the first and the last together");

    // The sliding-window script loaded, the counters zeroed.
    let d = store
        .rate_limit(
            "warm-up",
            Algorithm::SlidingWindow,
            &q,
            &q,
            1,
            FailMode::Deny,
        )
        .await;
    assert!(matches!(d, Routed::Shared(d) if d.allowed), "{d:?}");
    assert!(
        server
            .command(&["CONFIG", "RESETSTAT"])
            .unwrap()
            .starts_with("+OK")
    );
    let mut tasks = Vec::new();
    for algorithm in [Algorithm::Gcra, Algorithm::SlidingWindow] {
        for cost in [0, 1] {
            if algorithm == Algorithm::Gcra && cost == 1 {
                continue;
            }
            for _ in 0..5 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    store
                        .rate_limit("other", algorithm, &q, &q, cost, FailMode::Local)
                        .await
                }));
            }
        }
    }
    let answers = join_all(tasks).await;
    assert_eq!(admitted(&answers), 15);
    assert_eq!(evalsha(&server), 15, "one call each");
}

/// Ten checks per fail mode, one batch per mode, started while Redis is stopped.
fn checks_per_mode(store: &SharedStore) -> Vec<(FailMode, Vec<JoinHandle<Routed<Decision>>>)> {
    let (shared, local) = (per_minute(100), per_minute(3));
    [
        FailMode::Local,
        FailMode::Allow,
        FailMode::Deny,
        FailMode::Stateless,
        FailMode::FailClosed,
    ]
    .into_iter()
    .map(|mode| {
        let key = format!("{mode:?}");
        let tasks = (0..10)
            .map(|_| spawn_check(store, &key, shared, local, mode))
            .collect();
        (mode, tasks)
    })
    .collect()
}

/// Every check of a failed batch gets its mode's fallback: with `Local`, the batch on
/// this instance's memory against the local quota (3 of 10), in order.
async fn assert_fallbacks(
    checks: Vec<(FailMode, Vec<JoinHandle<Routed<Decision>>>)>,
    started: Instant,
    within: Duration,
) {
    for (mode, tasks) in checks {
        let answers = join_all(tasks).await;
        assert!(
            started.elapsed() <= within,
            "{mode:?}: answered after {:?}",
            started.elapsed()
        );
        match mode {
            FailMode::Local => {
                let got: Vec<_> = answers
                    .iter()
                    .map(|a| match a {
                        Routed::Local(d) => (d.allowed, d.limit),
                        other => panic!("Local: {other:?}"),
                    })
                    .collect();
                let want: Vec<_> = (0..10).map(|i| (i < 3, 3)).collect();
                assert_eq!(got, want, "the local quota, in order");
            }
            FailMode::Allow => assert!(answers.iter().all(|a| *a == Routed::Allow)),
            FailMode::Stateless => assert!(answers.iter().all(|a| *a == Routed::Stateless)),
            FailMode::Deny | FailMode::FailClosed => {
                assert!(
                    answers.iter().all(|a| *a == Routed::Unavailable),
                    "{mode:?}"
                );
            }
        }
    }
}

/// Redis stopped (`SIGSTOP`): one call per batch, which times out; every check answers
/// its fallback within `command_timeout` and a scheduler turn.
#[tokio::test]
async fn a_paused_redis_answers_every_waiter_after_one_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(150);
    let server = RedisServer::start();
    let (store, calls) = instance(&server, TIMEOUT);
    warm_up(&server, &store).await;
    let before = calls.get();
    server.pause();
    let started = Instant::now();
    let checks = checks_per_mode(&store);
    assert_fallbacks(checks, started, TIMEOUT + Duration::from_millis(100)).await;
    assert!(started.elapsed() >= TIMEOUT, "waited for the call");
    assert_eq!(calls.get() - before, 5, "one call per batch");
    server.resume();
}

/// Redis killed (`kill -9`) while the batches' calls wait for it: every check answers its
/// fallback at once, long before `command_timeout`.
#[tokio::test]
async fn redis_killed_under_a_batch_answers_every_waiter() {
    const TIMEOUT: Duration = Duration::from_secs(3);
    let mut server = RedisServer::start();
    let (store, calls) = instance(&server, TIMEOUT);
    warm_up(&server, &store).await;
    let before = calls.get();
    server.pause();
    let checks = checks_per_mode(&store);
    // The batches are sent and wait for the stopped server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(calls.get(), before, "no call has ended");
    let killed = Instant::now();
    server.kill();
    assert_fallbacks(checks, killed, Duration::from_secs(1)).await;
    assert_eq!(calls.get() - before, 5, "one call per batch");
}
