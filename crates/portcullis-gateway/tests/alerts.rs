//! Security events to the alert webhook: de-duplicated with a count, a threshold rule,
//! and retried until a webhook that was down comes up; under load, a thousand identical
//! events make one alert now and one folded count, at most one alert per window; and a
//! webhook that fails or hangs does not slow requests. The webhook is a recording upstream
//! process (one started to answer 503, or to hang, where that is the point).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::Client;
use portcullis_testkit::upstream::{Answer, Upstream};
use serde_json::Value;

fn gateway(up: &Upstream, hook: &str) -> GatewayProcess {
    gateway_with_window(up, hook, "2s")
}

fn gateway_with_window(up: &Upstream, hook: &str, dedup_window: &str) -> GatewayProcess {
    GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--upstream", &up.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_RATE_LIMIT_ENABLED", "false")
        .env("PORTCULLIS_ALERTS_WEBHOOK_URL", hook)
        .env("PORTCULLIS_ALERTS_DEDUP_WINDOW", dedup_window)
        .env("PORTCULLIS_ALERTS_SUSPICIOUS_PER_MINUTE", "5")
        .start()
}

async fn bad_token(gw: &GatewayProcess) {
    assert_eq!(bad_token_with(&Client::new(), gw, None).await, 401);
}

/// One request with an invalid token (an `invalid_token` event), from `forwarded_for`
/// when the gateway trusts the test as a proxy; its status.
async fn bad_token_with(
    client: &Client,
    gw: &GatewayProcess,
    forwarded_for: Option<&str>,
) -> http::StatusCode {
    let mut req = Request::get(gw.url("/x")).header("authorization", "Bearer not-a-token");
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    client
        .send(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
        .status
}

/// The value of an unlabelled or exactly labelled sample on the gateway's `/metrics`.
async fn metric(gw: &GatewayProcess, sample: &str) -> Option<f64> {
    let text = Client::new().get(&gw.admin_url("/metrics")).await.unwrap();
    String::from_utf8_lossy(&text.body).lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok())?
    })
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

/// `invalid_token` alerts about `key`.
fn invalid_about<'a>(got: &'a [Value], key: &str) -> Vec<&'a Value> {
    got.iter()
        .filter(|a| a["kind"] == "invalid_token" && a["key"] == key)
        .collect()
}

fn total_count(alerts: &[&Value]) -> u64 {
    alerts
        .iter()
        .map(|a| a["count"].as_u64().unwrap_or(0))
        .sum()
}

/// 1,000 invalid-token requests from one client, four at a time; how long they took.
async fn thousand_bad_tokens(
    gw: &GatewayProcess,
    pause_every: Option<(usize, Duration)>,
) -> Duration {
    const EVENTS: usize = 1000;
    const LANES: usize = 4;
    let client = Client::new();
    let start = Instant::now();
    let mut sent = 0;
    while sent < EVENTS {
        let batch = pause_every.map_or(EVENTS, |(n, _)| n).min(EVENTS - sent);
        let lanes = (0..LANES).map(|lane| {
            let client = client.clone();
            let n = batch / LANES + usize::from(lane < batch % LANES);
            async move {
                let mut statuses = Vec::with_capacity(n);
                for _ in 0..n {
                    statuses.push(bad_token_with(&client, gw, None).await);
                }
                statuses
            }
        });
        for statuses in futures_util::future::join_all(lanes).await {
            assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
            sent += statuses.len();
        }
        if let Some((_, pause)) = pause_every
            && sent < EVENTS
        {
            tokio::time::sleep(pause).await;
        }
    }
    assert_eq!(sent, EVENTS);
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_identical_events_are_one_alert_now_and_one_with_the_folded_count() {
    let up = Upstream::start();
    let hook = Upstream::start();
    let window = Duration::from_secs(5);
    let gw = gateway_with_window(&up, &format!("{}/hook", hook.url()), "5s");
    let took = thousand_bad_tokens(&gw, None).await;
    eprintln!("1000 invalid-token requests took {took:?}");
    assert!(
        took < window,
        "the burst must fit in one dedup window for this test; it took {took:?}"
    );
    let got = alerts(&hook, window + Duration::from_secs(5), |a| {
        total_count(&invalid_about(a, "127.0.0.1")) >= 1000
    })
    .await;
    // Nothing more comes after the folded alert.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_later = alerts(&hook, Duration::ZERO, |_| true).await;
    assert_eq!(got_later.len(), got.len(), "{got_later:?}");
    let invalid = invalid_about(&got, "127.0.0.1");
    let counts: Vec<u64> = invalid
        .iter()
        .map(|a| a["count"].as_u64().unwrap())
        .collect();
    assert_eq!(
        counts,
        [1, 999],
        "the first at once, then the other 999 folded into one alert: {got:?}"
    );
    assert!(
        invalid[1]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("998 more")),
        "{}",
        invalid[1]
    );
    for field in ["first_seen", "last_seen"] {
        assert!(invalid[1][field].is_string(), "{field}: {}", invalid[1]);
    }
    let others: Vec<&Value> = got
        .iter()
        .filter(|a| a["kind"] != "invalid_token" && a["kind"] != "suspicious_activity")
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(
        metric(
            &gw,
            "portcullis_security_events_total{kind=\"invalid_token\"}"
        )
        .await,
        Some(1000.0)
    );
    assert_eq!(
        metric(&gw, "portcullis_alerts_dropped_total")
            .await
            .unwrap_or(0.0),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_keep_coming_give_one_alert_per_window() {
    // A 1 s window and the thousand events spread over about two seconds: the windows'
    // ends fall inside the stream. Each alert's arrival is noted by polling the receiver.
    let up = Upstream::start();
    let hook = Upstream::start();
    let window = Duration::from_secs(1);
    let gw = gateway_with_window(&up, &format!("{}/hook", hook.url()), "1s");
    let watch = {
        let url = hook.url();
        tokio::spawn(async move {
            let client = Client::new();
            let mut arrivals: Vec<(Instant, Value)> = Vec::new();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                let res = client
                    .get(&format!("{url}/__upstream/requests"))
                    .await
                    .unwrap();
                let all: Vec<Value> = serde_json::from_slice(&res.body).unwrap();
                for r in all.iter().skip(arrivals.len()) {
                    let a = serde_json::from_str(r["body"].as_str().unwrap_or("null")).unwrap();
                    arrivals.push((Instant::now(), a));
                }
                let total: u64 = arrivals
                    .iter()
                    .filter(|(_, a)| a["kind"] == "invalid_token")
                    .map(|(_, a)| a["count"].as_u64().unwrap_or(0))
                    .sum();
                if total >= 1000 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            arrivals
        })
    };
    let took = thousand_bad_tokens(&gw, Some((100, Duration::from_millis(150)))).await;
    let arrivals = watch.await.unwrap();
    let invalid: Vec<&(Instant, Value)> = arrivals
        .iter()
        .filter(|(_, a)| a["kind"] == "invalid_token")
        .collect();
    let counts: Vec<u64> = invalid
        .iter()
        .map(|(_, a)| a["count"].as_u64().unwrap())
        .collect();
    let gaps: Vec<Duration> = invalid.windows(2).map(|w| w[1].0 - w[0].0).collect();
    eprintln!("1000 events over {took:?}: alerts {counts:?}, gaps {gaps:?}");
    assert!(took > window, "the stream outlasts a window: {took:?}");
    assert_eq!(counts.iter().sum::<u64>(), 1000, "{counts:?}");
    assert_eq!(counts[0], 1, "the first event is sent at once");
    // Arrivals are seen to within a poll (25 ms plus its round trip): half a window
    // apart is a loose bound that two alerts sent back to back still fail.
    for (i, gap) in gaps.iter().enumerate() {
        assert!(
            *gap >= window / 2,
            "alerts {i} and {} came {gap:?} apart: more than one in a window ({counts:?}, {gaps:?})",
            i + 1
        );
    }
    let most = took.as_millis() / window.as_millis() + 2;
    assert!(
        counts.len() as u128 <= most,
        "{} alerts for a stream of {took:?}: {counts:?}",
        counts.len()
    );
}

/// p99 of `n` sequential requests that each raise an `invalid_token` event about a
/// source of its own (so each is a first event, and an alert is queued for each).
async fn p99_of_requests_raising_events(gw: &GatewayProcess, n: usize, first: usize) -> Duration {
    let client = Client::new();
    let mut times = Vec::with_capacity(n);
    for i in first..first + n {
        let ip = format!("10.{}.{}.7", i / 250, i % 250);
        let start = Instant::now();
        let status = bad_token_with(&client, gw, Some(&ip)).await;
        times.push(start.elapsed());
        assert_eq!(status, 401, "request {i}");
    }
    times.sort();
    times[(n * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_or_hangs_does_not_slow_requests() {
    const WARM_UP: usize = 50;
    const TIMED: usize = 500;
    let up = Upstream::start();
    let dir = portcullis_testkit::TempDir::new("alerts-latency");
    let mut p99 = Vec::new();
    for (name, receiver) in [
        ("healthy", None),
        ("503", Some(Answer::Status(503))),
        ("hanging", Some(Answer::Hang)),
    ] {
        let hook = match receiver {
            None => Upstream::start(),
            Some(a) => Upstream::start_answering(a),
        };
        // The test is a trusted proxy, so each request's X-Forwarded-For is its source.
        let cfg = dir.write(
            &format!("{name}.toml"),
            format!(
                "trusted_proxies = [\"127.0.0.1/32\"]\n[rate_limit]\nenabled = false\n[alerts]\nwebhook_url = \"{}/hook\"\n",
                hook.url()
            ),
        );
        let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .args(["--upstream", &up.url()])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .start();
        p99_of_requests_raising_events(&gw, WARM_UP, 0).await;
        let p = p99_of_requests_raising_events(&gw, TIMED, WARM_UP).await;
        // The receiver was really tried: it got at least the first alert.
        let tried = alerts(&hook, Duration::from_secs(5), |a| !a.is_empty()).await;
        assert!(!tried.is_empty(), "{name}: the webhook was never called");
        if receiver.is_none() {
            let all = alerts(&hook, Duration::from_secs(10), |a| {
                a.len() >= WARM_UP + TIMED
            })
            .await;
            assert_eq!(all.len(), WARM_UP + TIMED, "{name}: one alert per source");
        }
        p99.push((name, p));
    }
    let healthy = p99[0].1;
    for (name, p) in &p99 {
        eprintln!(
            "alert webhook {name}: p99 of {TIMED} requests {:.2} ms, {:.2}x healthy",
            p.as_secs_f64() * 1000.0,
            p.as_secs_f64() / healthy.as_secs_f64()
        );
    }
    // Loose on purpose (a noisy 2-core machine): a request that waited on the webhook
    // would take a 5 s attempt timeout, or at least a connection's round trip each.
    let bound = (healthy * 10).max(Duration::from_millis(20));
    for (name, p) in &p99[1..] {
        assert!(
            *p < bound && *p < Duration::from_millis(250),
            "{name}: p99 {p:?} against healthy {healthy:?}"
        );
    }
}
