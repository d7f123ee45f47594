//! OpenTelemetry export, end to end: the gateway binary exports its spans over OTLP/HTTP
//! to the testkit's receiver. The request span continues the client's trace, the
//! upstream is sent the exported span's id, protection steps and store calls are its
//! children, and a collector that is down or hanging neither fails nor slows requests
//! nor grows the gateway's memory: spans are dropped and counted instead.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, Reply};
use portcullis_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use portcullis_testkit::upstream::Upstream;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const LIMIT: Duration = Duration::from_secs(15);

const SCHEMA: &str =
    r#"{"type":"object","properties":{"qty":{"type":"integer"}},"required":["qty"]}"#;

fn gateway(dir: &TempDir, up: &Upstream, endpoint: &str) -> GatewayProcess {
    dir.write("item.json", SCHEMA);
    let cfg = dir.write(
        "gw.toml",
        format!(
            r#"upstream = "{}"
[rate_limit.tiers]
anonymous = {{ limit = 100000, per = "1s" }}
[[routes]]
name = "items"
path = "/items"
schema = "item.json"
"#,
            up.url()
        ),
    );
    GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_TRACE_OTLP_ENDPOINT", endpoint)
        .env("PORTCULLIS_TRACE_SERVICE_NAME", "edge")
        .start()
}

async fn send(
    gw: &GatewayProcess,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = Request::builder().method(method).uri(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Client::new()
        .send(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap()
}

fn named<'a>(spans: &'a [ReceivedSpan], parent: &str, name: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.parent_span_id == parent && s.name == name)
}

fn server_span<'a>(spans: &'a [ReceivedSpan], request_id: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.kind == 2 && s.attr("portcullis.request_id") == Some(request_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_client_trace_and_nest_the_protections_under_the_request() {
    let otlp = OtlpReceiver::start();
    let up = Upstream::start();
    let dir = TempDir::new("otlp");
    let gw = gateway(&dir, &up, &otlp.url());

    // A proxied request continuing the client's trace.
    let r = send(&gw, "GET", "/t?secret=x", &[("traceparent", PARENT)], "").await;
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").unwrap().to_owned();
    let sent = r.json()["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_owned();

    // A schema refusal, a CSRF refusal, and a request starting a new trace.
    let bad = send(
        &gw,
        "POST",
        "/items",
        &[("content-type", "application/json")],
        r#"{"qty":"many"}"#,
    )
    .await;
    assert_eq!(bad.status, 422);
    let bad_id = bad.header("x-request-id").unwrap().to_owned();
    let forged = send(&gw, "POST", "/t", &[("cookie", "sid=1")], "{}").await;
    assert_eq!(forged.status, 403);
    let forged_id = forged.header("x-request-id").unwrap().to_owned();
    let fresh = send(&gw, "GET", "/fresh", &[], "").await;
    let fresh_id = fresh.header("x-request-id").unwrap().to_owned();
    let fresh_sent = fresh.json()["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_owned();

    let spans = otlp.wait_for(LIMIT, |s| {
        [&id, &bad_id, &forged_id, &fresh_id]
            .iter()
            .all(|i| server_span(s, i).is_some())
    });

    // The request span: the client's trace, the client's span as parent, and the span
    // id the upstream was sent.
    let req = server_span(&spans, &id).unwrap_or_else(|| panic!("no request span: {spans:#?}"));
    assert_eq!(req.service, "edge");
    assert_eq!(req.trace_id, TRACE);
    assert_eq!(req.parent_span_id, CLIENT_SPAN);
    assert_eq!(sent, format!("00-{TRACE}-{}-01", req.span_id));
    assert_eq!(req.name, "GET default");
    assert_eq!(req.attr("http.request.method"), Some("GET"));
    assert_eq!(req.attr("http.response.status_code"), Some("200"));
    assert_eq!(req.attr("http.route"), Some("default"));
    assert_eq!(req.attr("url.path"), Some("/t"), "no query string");

    // Its protection steps are its children, in its trace; the store call is the rate
    // limit's child.
    for step in ["identity", "rate_limit", "upstream"] {
        let s = named(&spans, &req.span_id, step)
            .unwrap_or_else(|| panic!("no {step} span under the request: {spans:#?}"));
        assert_eq!(s.trace_id, TRACE, "{step}");
        assert_eq!(s.kind, 1, "{step}");
    }
    let limit = named(&spans, &req.span_id, "rate_limit").unwrap();
    assert_eq!(limit.attr("portcullis.decision"), Some("allowed"));
    let store = named(&spans, &limit.span_id, "store.rate_limit")
        .unwrap_or_else(|| panic!("no store span under the rate limit: {spans:#?}"));
    assert_eq!(store.attr("db.system.name"), Some("memory"));
    assert_eq!(store.attr("portcullis.store.routed"), Some("shared"));
    assert_eq!(store.kind, 3);
    assert_eq!(
        named(&spans, &req.span_id, "upstream")
            .unwrap()
            .attr("http.response.status_code"),
        Some("200")
    );

    // The refusals: a validation span and a CSRF span saying so.
    let bad = server_span(&spans, &bad_id).unwrap();
    assert_eq!(bad.attr("http.route"), Some("items"));
    assert_eq!(bad.attr("portcullis.refusal"), Some("invalid-body"));
    let v = named(&spans, &bad.span_id, "validation").expect("validation span");
    assert_eq!(v.attr("portcullis.decision"), Some("refused"));
    assert!(named(&spans, &bad.span_id, "upstream").is_none());
    let forged = server_span(&spans, &forged_id).unwrap();
    let c = named(&spans, &forged.span_id, "csrf").expect("csrf span");
    assert_eq!(c.attr("portcullis.decision"), Some("refused"));

    // A new trace: a root span whose ids are the ones the upstream was sent.
    let fresh = server_span(&spans, &fresh_id).unwrap();
    assert_eq!(fresh.parent_span_id, "");
    assert_eq!(
        fresh_sent,
        format!("00-{}-{}-01", fresh.trace_id, fresh.span_id)
    );

    // The access lines name the exported traces.
    let lines = gw.json_lines();
    let access = |rid: &str| {
        lines
            .iter()
            .find(|l| l["target"] == "portcullis::access" && l["request_id"] == rid)
            .unwrap_or_else(|| panic!("no access line for {rid}"))
            .clone()
    };
    assert_eq!(access(&id)["trace_id"], TRACE);
    assert_eq!(access(&fresh_id)["trace_id"], fresh.trace_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_client_trace_is_followed_and_spans_are_flushed_on_sigterm() {
    let otlp = OtlpReceiver::start();
    let up = Upstream::start();
    let dir = TempDir::new("otlp-flush");
    let mut gw = gateway(&dir, &up, &otlp.url());
    let unsampled = format!("00-{TRACE}-{CLIENT_SPAN}-00");
    let r = send(&gw, "GET", "/quiet", &[("traceparent", &unsampled)], "").await;
    let sent = r.json()["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(sent.starts_with(&format!("00-{TRACE}-")), "{sent}");
    assert!(
        sent.ends_with("-00"),
        "not sampled downstream either: {sent}"
    );
    let r = send(&gw, "GET", "/last", &[], "").await;
    let id = r.header("x-request-id").unwrap().to_owned();

    // Stopped at once: the batch delay has not passed, so only the flush can send it.
    gw.terminate();
    let status = gw.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success());
    let spans = otlp.wait_for(Duration::from_secs(2), |s| server_span(s, &id).is_some());
    assert!(
        server_span(&spans, &id).is_some(),
        "the last request's span was flushed: {spans:#?}"
    );
    assert!(
        spans.iter().all(|s| s.trace_id != TRACE),
        "nothing of the unsampled trace is exported"
    );
}

/// The dropped-span counters from `/metrics`, by reason.
async fn dropped(gw: &GatewayProcess) -> (u64, u64) {
    let text = Client::new()
        .get(&gw.admin_url("/metrics"))
        .await
        .unwrap()
        .body;
    let text = String::from_utf8_lossy(&text);
    let count = |reason: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("portcullis_trace_spans_dropped_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    (count("queue_full"), count("export_failed"))
}

/// 2,000 requests, 8 at a time: every one must succeed. Returns the gateway's resident
/// memory growth over the last 1,500 (KiB) and the time taken.
async fn load(gw: &GatewayProcess) -> (i64, Duration) {
    let client = Client::new();
    let one = |i: usize| {
        let client = client.clone();
        let url = gw.url(&format!("/load/{i}"));
        async move {
            let r = client
                .send(
                    Request::get(url)
                        .header("traceparent", PARENT)
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200, "request {i}");
        }
    };
    let start = Instant::now();
    let mut rss_after_warmup = 0;
    for wave in 0..250 {
        if wave == 62 {
            rss_after_warmup = gw.rss_kib() as i64;
        }
        futures_util::future::join_all((0..8).map(|k| one(wave * 8 + k))).await;
    }
    (gw.rss_kib() as i64 - rss_after_warmup, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_hanging_costs_requests_nothing() {
    let up = Upstream::start();

    // Down: nothing listens on the port.
    let dir = TempDir::new("otlp-down");
    let closed = portcullis_testkit::ports::free_addr();
    let gw = gateway(&dir, &up, &format!("http://{closed}"));
    let (grown, took) = load(&gw).await;
    eprintln!("collector down: 2000 requests in {took:?}, RSS grew {grown} KiB");
    let (_, failed) = {
        // Failed exports are counted once their batch was tried.
        let start = Instant::now();
        loop {
            let d = dropped(&gw).await;
            if d.1 > 0 || start.elapsed() > LIMIT {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(failed > 0, "spans of failed exports are counted");
    assert!(grown < 32 * 1024, "RSS grew {grown} KiB");
    drop(gw);

    // Hanging: the collector accepts and never answers; exports wait out their timeout
    // while the queue fills, and the rest is dropped, counted.
    let hanging = OtlpReceiver::start_hanging();
    let dir = TempDir::new("otlp-hang");
    let gw = gateway(&dir, &up, &hanging.url());
    let (grown, took) = load(&gw).await;
    let (full, _) = dropped(&gw).await;
    eprintln!(
        "collector hanging: 2000 requests in {took:?}, RSS grew {grown} KiB, {full} spans dropped (queue full)"
    );
    assert!(full > 0, "a full queue drops spans and counts them");
    assert!(grown < 32 * 1024, "RSS grew {grown} KiB");
}
