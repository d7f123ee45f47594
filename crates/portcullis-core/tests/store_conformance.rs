//! The store conformance suite against both backends: memory on a fake clock, Redis on
//! a real `redis-server` started for the test.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::breaker::BreakerConfig;
use portcullis_core::store::{MemoryStore, NoObserver, RedisConfig, RedisStore};
use portcullis_core::{ManualClock, Secret, SystemClock};
use portcullis_testkit::conformance::{self, FakeTime, RealTime};
use portcullis_testkit::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conforms() {
    let clock = ManualClock::new();
    let store = MemoryStore::new(100_000, Arc::new(clock.clone()));
    conformance::run(&store, &FakeTime(clock), "t").await;
}

fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::new(
        RedisConfig {
            url: Secret::new(server.url()),
            command_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            breaker: BreakerConfig::default(),
        },
        Arc::new(SystemClock),
        Arc::new(NoObserver),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_conforms() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    conformance::run(&store, &RealTime, "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_lockout_conforms() {
    let clock = ManualClock::new();
    let store = portcullis_core::store::SharedStore::memory(
        MemoryStore::new(100_000, Arc::new(clock.clone())),
        "t",
    );
    conformance::run_lockout(&store, &FakeTime(clock), "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lockout_conforms() {
    let server = RedisServer::start();
    let local = MemoryStore::new(100_000, Arc::new(SystemClock));
    let store = portcullis_core::store::SharedStore::redis(redis_store(&server), local, "t");
    conformance::run_lockout(&store, &RealTime, "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sliding_window_conforms() {
    let clock = ManualClock::new();
    let store = portcullis_core::store::SharedStore::memory(
        MemoryStore::new(100_000, Arc::new(clock.clone())),
        "t",
    );
    conformance::run_sliding_window(&store, &FakeTime(clock), "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sliding_window_conforms() {
    let server = RedisServer::start();
    let local = MemoryStore::new(100_000, Arc::new(SystemClock));
    let store = portcullis_core::store::SharedStore::redis(redis_store(&server), local, "t");
    conformance::run_sliding_window(&store, &RealTime, "t").await;
}

/// The server's clock, in microseconds, as the script reads it.
async fn server_time(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(c).await.unwrap();
    s * 1_000_000 + us
}

/// The Lua script against `ratelimit::sliding::decide`, from states written directly: a
/// previous, current, older or later window, counts below and above the limit, costs
/// from a peek to above the limit. The script runs at a server time between two `TIME`
/// readings `t0 ≤ t1`. While nothing else is admitted the estimate only decays, so the
/// outcome can only turn from refused to allowed, and for one outcome within one window
/// `remaining` only grows and the waits only shrink: the script's answer must lie between
/// `decide` at `t0` and at `t1`. And where the quota is whole again at the same instant
/// for both, the script's `reset_after` gives its exact time, at which `decide` must
/// agree to the microsecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sliding_window_script_agrees_with_decide() {
    use portcullis_core::ratelimit::sliding::{SlidingParams, SlidingState, decide};
    use portcullis_core::ratelimit::{Decision, Quota};
    use portcullis_core::store::{FailMode, Routed};

    let server = RedisServer::start();
    let local = MemoryStore::new(1000, Arc::new(SystemClock));
    let store = portcullis_core::store::SharedStore::redis(redis_store(&server), local, "t");
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let pers = [250_000u64, 1_000_000, 1_000_003, 7_777_777, 60_000_000];
    let mut exact = 0;
    for i in 0..500 {
        let limit = 1 + next(12) as u32;
        let per_us = pers[next(pers.len() as u64) as usize];
        let q = Quota::new(limit, Duration::from_micros(per_us), None).unwrap();
        let p = SlidingParams::from(&q);
        let shift = next(10); // 0..=5 back, 6..=8 none, 9 ahead
        let prev = next(u64::from(limit) + 4) as u32;
        let cur = next(u64::from(limit) + 4) as u32;
        let cost = next(u64::from(limit) + 2) as u32;
        let key = format!("sw-diff:{i}");

        let t0 = server_time(&mut c).await;
        let state = (shift < 9).then(|| SlidingState {
            window: match shift {
                0..=2 => t0 / per_us,
                3 | 4 => t0 / per_us - 1,
                5 => t0 / per_us - 2,
                _ => t0 / per_us + 1,
            },
            prev,
            cur,
        });
        if let Some(s) = state {
            let raw = format!("{}:{}:{}", s.window, s.prev, s.cur);
            redis::cmd("SET")
                .arg(&key)
                .arg(raw)
                .arg("PX")
                .arg(60_000)
                .query_async::<()>(&mut c)
                .await
                .unwrap();
        }
        let got = match store
            .sliding_window(&key, &q, &q, cost, FailMode::Deny)
            .await
        {
            Routed::Shared(d) => d,
            other => panic!("case {i}: {other:?}"),
        };
        let t1 = server_time(&mut c).await;
        let (d0, w0) = decide(t0, state, p, cost);
        let (d1, w1) = decide(t1, state, p, cost);
        let what = format!(
            "case {i}: {state:?} limit {limit} per {per_us} cost {cost}: got {got:?}, decide {d0:?} .. {d1:?}"
        );
        if shift == 9 && t0 / per_us != t1 / per_us {
            // A later window is read as the current one, whichever that is: not monotonic
            // across a rollover.
            continue;
        }
        assert_eq!(got.limit, limit, "{what}");
        if d0.allowed {
            assert!(got.allowed, "{what}");
        }
        if !d1.allowed {
            assert!(!got.allowed, "{what}");
        }
        // For one outcome, within one window: remaining grows, the waits shrink.
        if t0 / per_us == t1 / per_us {
            if d0.allowed == got.allowed {
                assert!(d0.remaining <= got.remaining, "{what}");
                assert!(got.reset_after <= d0.reset_after, "{what}");
                assert!(got.retry_after <= d0.retry_after, "{what}");
            }
            if d1.allowed == got.allowed {
                assert!(got.remaining <= d1.remaining, "{what}");
                assert!(d1.reset_after <= got.reset_after, "{what}");
                assert!(d1.retry_after <= got.retry_after, "{what}");
            }
        }
        if got.allowed {
            assert_eq!(got.retry_after, Duration::ZERO, "{what}");
        } else {
            assert!(!got.retry_after.is_zero(), "{what}");
        }
        let stored: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        let written =
            |w: Option<SlidingState>| w.map(|s| format!("{}:{}:{}", s.window, s.prev, s.cur));
        if got.allowed && cost > 0 {
            let stored = stored.expect("an admission writes");
            assert!(
                Some(&stored) == written(w0).as_ref() || Some(&stored) == written(w1).as_ref(),
                "{what}: stored {stored}"
            );
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            let two = i64::try_from(2 * per_us / 1000).unwrap();
            assert!(pttl <= two + 1 && pttl >= two - 100, "{what}: pttl {pttl}");
        } else {
            let before = state.map(|s| format!("{}:{}:{}", s.window, s.prev, s.cur));
            assert_eq!(stored, before, "{what}: a refusal or a peek wrote");
        }
        // The quota is whole again at one instant, whenever the script ran: where
        // `decide` says so at both ends, `got.reset_after` tells the script's time, and
        // at that time `decide` must give exactly `got`.
        let reset_at = |t: u64, d: &Decision| t + d.reset_after.as_micros() as u64;
        if reset_at(t0, &d0) == reset_at(t1, &d1) && !got.reset_after.is_zero() {
            let ran = reset_at(t0, &d0) - got.reset_after.as_micros() as u64;
            assert!(t0 <= ran && ran <= t1, "{what}: ran at {ran}");
            assert_eq!(got, decide(ran, state, p, cost).0, "{what}: at {ran}");
            exact += 1;
        } else if d0 == d1 {
            assert_eq!(got, d0, "{what}");
            exact += 1;
        }
    }
    assert!(
        exact > 400,
        "only {exact} cases of 500 were checked exactly"
    );
}

/// `gcra_batch.lua` against `GcraBatch::decide`, from states written directly: none, a
/// TAT behind the server's clock, a TAT ahead by up to more than the burst, bare (of the
/// current `T`), written under another `T` (what is owed is rescaled) or under `T = 0`.
/// The script reports its time, so the comparison is exact: the TAT it started from, how
/// many it admitted, the state it wrote and its time to live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_gcra_batch_script_agrees_with_decide_batch() {
    use portcullis_core::ratelimit::GcraBatch;
    use portcullis_core::ratelimit::gcra::{GcraParams, GcraState};

    let server = RedisServer::start();
    let store = redis_store(&server);
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // Every product in the script's rescale stays below 2^53, where Lua's doubles are
    // exact integers.
    let pers = [100_000u64, 1_000_000, 7_777_777];
    let (mut partial, mut rescaled) = (0, 0);
    for i in 0..600 {
        let quota = |next: &mut dyn FnMut(u64) -> u64| {
            let per = pers[next(pers.len() as u64) as usize];
            let limit = 1 + next(20) as u32;
            let burst = 1 + next(20) as u32;
            GcraParams::new(limit, Duration::from_micros(per), burst).unwrap()
        };
        let p = quota(&mut next);
        let writer = quota(&mut next);
        let n = 1 + next(40) as u32;
        let key = format!("gcra-batch-diff:{i}");
        let t0 = server_time(&mut c).await;
        let kind = next(6);
        let tat = match next(4) {
            0 => t0.saturating_sub(next(2_000_000)),
            _ => t0 + next((u64::from(writer.burst.get()) + 3) * writer.emission_us),
        };
        let (raw, state) = match kind {
            0 => (None, None),
            1 => (
                Some(tat.to_string()),
                Some(GcraState {
                    tat_us: tat,
                    emission_us: p.emission_us,
                }),
            ),
            2 => (
                Some(format!("{tat}:0")),
                Some(GcraState {
                    tat_us: tat,
                    emission_us: 0,
                }),
            ),
            3 | 4 => {
                let s = GcraState {
                    tat_us: tat,
                    emission_us: writer.emission_us,
                };
                (Some(s.encode()), Some(s))
            }
            _ => {
                let s = GcraState {
                    tat_us: tat,
                    emission_us: p.emission_us,
                };
                (Some(s.encode()), Some(s))
            }
        };
        if let Some(raw) = &raw {
            redis::cmd("SET")
                .arg(&key)
                .arg(raw)
                .arg("PX")
                .arg(60_000)
                .query_async::<()>(&mut c)
                .await
                .unwrap();
        }
        let got = store.gcra_batch_outcome(&key, p, n).await.unwrap();
        let t1 = server_time(&mut c).await;
        let want = GcraBatch::decide(got.now_us, state, p, n);
        let what = format!("case {i}: {raw:?} under {p:?}, n {n}: got {got:?}, want {want:?}");
        assert!(t0 <= got.now_us && got.now_us <= t1, "{what}");
        assert_eq!(got, want, "{what}");
        if 0 < got.admitted && got.admitted < n {
            partial += 1;
        }
        if state.is_some_and(|s| {
            s.emission_us != p.emission_us && s.emission_us != 0 && s.tat_us > got.now_us
        }) {
            rescaled += 1;
        }
        let stored: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        match want.state(p) {
            Some(w) => {
                assert_eq!(stored, Some(w.encode()), "{what}");
                let pttl: u64 = redis::cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                let ms = (w.tat_us - got.now_us).div_ceil(1000).max(1);
                let elapsed = (server_time(&mut c).await - got.now_us).div_ceil(1000);
                assert!(
                    pttl <= ms && pttl + elapsed + 1 >= ms,
                    "{what}: pttl {pttl}, want {ms}"
                );
            }
            None => assert_eq!(stored, raw, "{what}: a batch admitting none wrote"),
        }
    }
    assert!(
        partial > 100 && rescaled > 50,
        "too few interesting cases: {partial} partly admitted, {rescaled} rescaled"
    );
}

/// With Redis gone, `FailMode::Local` answers from this instance's memory against the
/// local quota; the other modes answer without state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sliding_window_falls_back_to_the_local_quota() {
    use portcullis_core::ratelimit::Quota;
    use portcullis_core::store::{FailMode, Routed};

    let mut server = RedisServer::start();
    let local = MemoryStore::new(1000, Arc::new(SystemClock));
    let store = portcullis_core::store::SharedStore::redis(redis_store(&server), local, "t");
    let shared = Quota::new(10, Duration::from_secs(60), None).unwrap();
    let local = Quota::new(2, Duration::from_secs(60), None).unwrap();
    let d = store
        .sliding_window("fb", &shared, &local, 1, FailMode::Local)
        .await;
    assert!(
        matches!(d, Routed::Shared(d) if d.allowed && d.remaining == 9),
        "{d:?}"
    );
    server.kill();
    let mut got = Vec::new();
    for _ in 0..3 {
        match store
            .sliding_window("fb", &shared, &local, 1, FailMode::Local)
            .await
        {
            Routed::Local(d) => got.push((d.allowed, d.limit, d.remaining)),
            other => panic!("expected a local answer, got {other:?}"),
        }
    }
    assert_eq!(
        got,
        [(true, 2, 1), (true, 2, 0), (false, 2, 0)],
        "the local quota"
    );
    for (mode, want) in [
        (FailMode::Allow, Routed::Allow),
        (FailMode::Deny, Routed::Unavailable),
        (FailMode::FailClosed, Routed::Unavailable),
    ] {
        assert_eq!(
            store.sliding_window("fb", &shared, &local, 1, mode).await,
            want
        );
    }
}
