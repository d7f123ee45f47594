//! W3C Trace Context through the gateway: a valid `traceparent` is continued with the
//! gateway's hop as the upstream's parent, an invalid one replaced, and the access log
//! names the trace.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_testkit::gateway::GatewayCmd;
use portcullis_testkit::http::Client;
use portcullis_testkit::upstream::Upstream;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_continued_validated_and_logged() {
    let up = Upstream::start();
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--upstream", &up.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_RATE_LIMIT_ENABLED", "false")
        .start();
    let send = |tp: &'static str, ts: &'static str| {
        let url = gw.url("/t");
        async move {
            let mut req = Request::get(url).header("tracestate", ts);
            if !tp.is_empty() {
                req = req.header("traceparent", tp);
            }
            Client::new()
                .send(req.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap()
        }
    };
    let r = send(PARENT, "vendor=abc").await;
    let id = r.header("x-request-id").unwrap().to_owned();
    let seen = r.json();
    let tp = seen["headers"]["traceparent"][0].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "the gateway's hop is the new parent: {tp}"
    );
    assert!(tp.ends_with("-01"));
    assert_eq!(seen["headers"]["tracestate"][0], "vendor=abc");

    let r = send("00-BAD-00f067aa0ba902b7-01", "vendor=abc").await;
    let seen = r.json();
    let tp = seen["headers"]["traceparent"][0].as_str().unwrap();
    assert_eq!(tp.len(), 55);
    assert!(!tp.contains("BAD"));
    assert!(
        seen["headers"].get("tracestate").is_none(),
        "dropped with an invalid parent"
    );

    let r = send("", "").await;
    let new_trace = r.json()["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(new_trace.len(), 55, "a trace is started when none came");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let line = gw
        .json_lines()
        .into_iter()
        .find(|l| l["request_id"] == id.as_str() && l["target"] == "portcullis::access")
        .expect("the access line");
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}
