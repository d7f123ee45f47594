//! Every line logged while a request is answered names the request and its trace, not
//! only the access line: the upstream-failure warning and the security-event line carry
//! the request's `request_id` and `trace_id`, once each.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_testkit::gateway::GatewayCmd;
use portcullis_testkit::http::Client;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_logged_inside_a_request_name_its_request_and_trace() {
    // Nothing listens at the upstream's address: every proxied request fails there.
    let gone = portcullis_testkit::ports::free_addr();
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--upstream", &format!("http://{gone}")])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_RATE_LIMIT_ENABLED", "false")
        .start();
    let send = |auth: Option<&'static str>| {
        let url = gw.url("/x");
        async move {
            let mut req = Request::get(url).header("traceparent", PARENT);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            Client::new()
                .send(req.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap()
        }
    };
    let failed = send(None).await;
    assert_eq!(failed.status, 502);
    let failed_id = failed.header("x-request-id").unwrap().to_owned();
    let refused = send(Some("Bearer not-a-token")).await;
    assert_eq!(refused.status, 401);
    let refused_id = refused.header("x-request-id").unwrap().to_owned();

    let warning = gw
        .wait_for_line(Duration::from_secs(5), |l| {
            l["msg"] == "upstream connection failed"
        })
        .expect("the upstream failure is logged");
    assert_eq!(warning["level"], "warn");
    assert_eq!(warning["request_id"], failed_id.as_str());
    assert_eq!(warning["trace_id"], TRACE);

    let event = gw
        .wait_for_line(Duration::from_secs(5), |l| {
            l["target"] == "portcullis::security" && l["event"] == "invalid_token"
        })
        .expect("the security event is logged");
    assert_eq!(event["request_id"], refused_id.as_str());
    assert_eq!(event["trace_id"], TRACE);

    let lines = gw.stdout_lines();
    for line in &lines {
        for key in ["\"request_id\":", "\"trace_id\":"] {
            assert!(line.matches(key).count() <= 1, "{key} twice: {line}");
        }
    }
    let listening = gw
        .json_lines()
        .into_iter()
        .find(|l| l["msg"] == "listening")
        .unwrap();
    assert!(
        listening.get("request_id").is_none(),
        "a line outside any request names none"
    );
}
