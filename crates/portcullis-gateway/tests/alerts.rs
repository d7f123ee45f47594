//! Security events to the alert webhook: de-duplicated with a count, a threshold rule,
//! and retried until a webhook that was down comes up. The webhook is a recording
//! upstream process.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::Client;
use portcullis_testkit::upstream::Upstream;
use serde_json::Value;

fn gateway(up: &Upstream, hook: &str) -> GatewayProcess {
    GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--upstream", &up.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_RATE_LIMIT_ENABLED", "false")
        .env("PORTCULLIS_ALERTS_WEBHOOK_URL", hook)
        .env("PORTCULLIS_ALERTS_DEDUP_WINDOW", "2s")
        .env("PORTCULLIS_ALERTS_SUSPICIOUS_PER_MINUTE", "5")
        .start()
}

async fn bad_token(gw: &GatewayProcess) {
    let r = Client::new()
        .send(
            Request::get(gw.url("/x"))
                .header("authorization", "Bearer not-a-token")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
}

/// The alerts the webhook received, waiting (at most `limit`) until `done` holds.
async fn alerts(hook: &Upstream, limit: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let got: Vec<Value> = hook
            .requests()
            .await
            .iter()
            .filter(|r| r["path"] == "/hook")
            .map(|r| serde_json::from_str(r["body"].as_str().unwrap_or("null")).unwrap())
            .collect();
        if done(&got) || start.elapsed() > limit {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_deduplicated_counted_and_thresholds_raise_their_own_alert() {
    let up = Upstream::start();
    let hook = Upstream::start();
    let gw = gateway(&up, &format!("{}/hook", hook.url()));
    for _ in 0..6 {
        bad_token(&gw).await;
    }
    let got = alerts(&hook, Duration::from_secs(8), |a| {
        a.iter()
            .any(|x| x["kind"] == "invalid_token" && x["count"] == 5)
    })
    .await;
    let invalid: Vec<&Value> = got
        .iter()
        .filter(|a| a["kind"] == "invalid_token")
        .collect();
    assert_eq!(invalid.len(), 2, "one at once, one folded: {got:?}");
    assert_eq!(invalid[0]["count"], 1);
    assert_eq!(invalid[1]["count"], 5, "the five folded within the window");
    assert_eq!(invalid[0]["key"], "127.0.0.1");
    for a in &invalid {
        for field in ["severity", "summary", "first_seen", "last_seen"] {
            assert!(a[field].is_string(), "{field}: {a}");
        }
    }
    let suspicious: Vec<&Value> = got
        .iter()
        .filter(|a| a["kind"] == "suspicious_activity")
        .collect();
    assert_eq!(suspicious.len(), 1, "{got:?}");
    assert_eq!(suspicious[0]["severity"], "critical");
    assert_eq!(suspicious[0]["key"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_was_down_gets_the_alert_when_it_comes_up() {
    let up = Upstream::start();
    let addr: SocketAddr = portcullis_testkit::ports::free_addr();
    let gw = gateway(&up, &format!("http://{addr}/hook"));
    let start = Instant::now();
    bad_token(&gw).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the request did not wait for the webhook"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hook = Upstream::start_on(addr);
    let got = alerts(&hook, Duration::from_secs(10), |a| !a.is_empty()).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["kind"], "invalid_token");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "retried within seconds, not minutes: {:?}",
        start.elapsed()
    );
}
