//! Error tracking: a panic inside request handling is answered 500 problem+json, logged
//! once with the request id, counted, and the gateway keeps serving; upstream failures
//! are counted by kind.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, Reply};
use portcullis_testkit::upstream::Upstream;

async fn get(client: &Client, gw: &GatewayProcess, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client
        .send(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

async fn errors_total(gw: &GatewayProcess, kind: &str) -> u64 {
    let body = Client::new()
        .get(&gw.admin_url("/metrics"))
        .await
        .unwrap()
        .body;
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| {
            l.starts_with("portcullis_errors_total") && l.contains(&format!("kind=\"{kind}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no portcullis_errors_total{{kind={kind:?}}}"))
}

/// Debug builds only: the panic is asked for through the debug-build hook
/// (`PORTCULLIS_DEBUG_PANIC_PATH`), which release builds do not have.
#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_answered_500_logged_once_counted_and_serving_goes_on() {
    let up = Upstream::start();
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--upstream", &up.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_RATE_LIMIT_ENABLED", "false")
        .env("PORTCULLIS_DEBUG_PANIC_PATH", "/boom")
        .start();
    // One keep-alive client: the connection that saw the panic serves the next request.
    let client = Client::new();
    for round in 0..3 {
        let r = get(&client, &gw, "/boom", &[]).await;
        assert_eq!(r.status, 500, "round {round}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let body = r.json();
        assert!(
            body["type"].as_str().unwrap().ends_with("/internal"),
            "{body}"
        );
        assert_eq!(body["status"], 500);
        let id = r.header("x-request-id").unwrap();
        assert_eq!(body["request_id"], id);
        assert!(
            !body.to_string().contains("PORTCULLIS_DEBUG_PANIC_PATH"),
            "nothing internal in the body: {body}"
        );
        let ok = get(&client, &gw, "/fine", &[]).await;
        assert_eq!(ok.status, 200, "still serving after round {round}");
    }
    let r = get(&client, &gw, "/boom", &[]).await;
    let id = r.header("x-request-id").unwrap().to_owned();
    assert_eq!(errors_total(&gw, "panic").await, 4);
    assert_eq!(
        errors_total(&gw, "internal").await,
        0,
        "a panic counts once"
    );

    let line = gw
        .wait_for_line(Duration::from_secs(5), |l| {
            l["level"] == "error" && l["request_id"] == id.as_str()
        })
        .expect("the panic is logged at error with the request id");
    assert!(
        line["panic"]
            .as_str()
            .unwrap()
            .contains("asked for a panic on /boom"),
        "{line}"
    );
    assert!(
        line["panic"].as_str().unwrap().contains("errors.rs:"),
        "{line}"
    );
    assert_eq!(line["trace_id"].as_str().unwrap().len(), 32);
    std::thread::sleep(Duration::from_millis(200));
    let logged: Vec<_> = gw
        .json_lines()
        .into_iter()
        .filter(|l| l["request_id"] == id.as_str())
        .collect();
    assert_eq!(
        logged.iter().filter(|l| l["level"] == "error").count(),
        1,
        "logged once: {logged:#?}"
    );
    let access = logged
        .iter()
        .find(|l| l["target"] == "portcullis::access")
        .expect("an access line");
    assert_eq!(access["status"], 500);
    assert_eq!(access["reason"], "internal");
    assert!(
        !gw.stderr_lines().iter().any(|l| l.contains("panicked")),
        "not printed a second time by the default hook: {:?}",
        gw.stderr_lines()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_counted_by_kind() {
    let up = Upstream::start();
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--upstream", &up.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_RATE_LIMIT_ENABLED", "false")
        .env("PORTCULLIS_LIMITS_REQUEST_TIMEOUT", "300ms")
        .start();
    let client = Client::new();
    let slow = get(&client, &gw, "/slow", &[("x-upstream-delay", "2s")]).await;
    assert_eq!(slow.status, 504);
    assert_eq!(errors_total(&gw, "upstream_timeout").await, 1);
    assert_eq!(errors_total(&gw, "upstream_refused").await, 0);
    drop(up);
    let gone = get(&Client::new(), &gw, "/gone", &[]).await;
    assert_eq!(gone.status, 502);
    assert_eq!(errors_total(&gw, "upstream_refused").await, 1);
    assert_eq!(errors_total(&gw, "panic").await, 0);
}
