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
