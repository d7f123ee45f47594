//! The gateway with Redis: `/readyz` and `/metrics` through an outage and a recovery.

use std::time::{Duration, Instant};

use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::Client;
use portcullis_testkit::redis::RedisServer;
use portcullis_testkit::upstream::Upstream;
use serde_json::Value;

fn gateway(upstream: &Upstream, redis_url: &str) -> GatewayProcess {
    GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--upstream",
            &upstream.url(),
            "--redis-url",
            redis_url,
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_REDIS_BREAKER_MIN_CALLS", "2")
        .env("PORTCULLIS_REDIS_BREAKER_WINDOW", "5s")
        .env("PORTCULLIS_REDIS_BREAKER_OPEN_FOR", "300ms")
        .env("PORTCULLIS_REDIS_BREAKER_MAX_OPEN_FOR", "1s")
        .env("PORTCULLIS_REDIS_BREAKER_HALF_OPEN_PROBES", "1")
        .start()
}

async fn readyz(gw: &GatewayProcess) -> (u16, Value) {
    let r = Client::new().get(&gw.admin_url("/readyz")).await.unwrap();
    (r.status.as_u16(), r.json())
}

async fn wait_for(
    gw: &GatewayProcess,
    limit: Duration,
    want_status: &str,
    want_breaker: &str,
) -> Value {
    let start = Instant::now();
    loop {
        let (code, body) = readyz(gw).await;
        assert_eq!(code, 200, "/readyz stays 200 while degraded: {body}");
        if body["status"] == want_status && body["components"]["store"]["breaker"] == want_breaker {
            return body;
        }
        assert!(
            start.elapsed() < limit,
            "still {body} after {limit:?}, waiting for {want_status}/{want_breaker}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics(gw: &GatewayProcess) -> String {
    String::from_utf8_lossy(
        &Client::new()
            .get(&gw.admin_url("/metrics"))
            .await
            .unwrap()
            .body,
    )
    .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_redis_outage_and_the_recovery() {
    let up = Upstream::start();
    let mut redis = RedisServer::start();
    let gw = gateway(&up, &redis.url());

    let body = wait_for(&gw, Duration::from_secs(5), "ok", "closed").await;
    assert_eq!(body["components"]["store"]["backend"], "redis");

    redis.kill();
    let body = wait_for(&gw, Duration::from_secs(10), "degraded", "open").await;
    assert!(
        body["components"]["store"]["last_error"].is_string(),
        "{body}"
    );
    let m = metrics(&gw).await;
    assert!(
        m.contains("portcullis_breaker_state{backend=\"redis\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_security_events_total{kind=\"breaker_opened\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_store_calls_total{backend=\"redis\",result=\"short_circuited\"}"),
        "{m}"
    );
    // Requests are still served during the outage.
    assert_eq!(
        Client::new().get(&gw.url("/during")).await.unwrap().status,
        200
    );
    let opened = gw
        .wait_for_line(Duration::from_secs(2), |v| v["event"] == "breaker_opened")
        .expect("a breaker_opened log line");
    assert_eq!(opened["level"], "warn");

    redis.restart();
    wait_for(&gw, Duration::from_secs(10), "ok", "closed").await;
    let m = metrics(&gw).await;
    assert!(
        m.contains("portcullis_breaker_state{backend=\"redis\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_security_events_total{kind=\"breaker_closed\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_starts_while_redis_is_down() {
    let up = Upstream::start();
    let dead = format!("redis://{}", portcullis_testkit::ports::free_addr());
    let gw = gateway(&up, &dead);
    assert_eq!(Client::new().get(&gw.url("/x")).await.unwrap().status, 200);
    wait_for(&gw, Duration::from_secs(10), "degraded", "open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_store_is_memory_and_ready() {
    let up = Upstream::start();
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--upstream",
            &up.url(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .start();
    let (code, body) = readyz(&gw).await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["components"]["store"]["backend"], "memory");
    assert!(
        !metrics(&gw).await.contains("portcullis_breaker_state"),
        "no breaker without Redis"
    );
}
