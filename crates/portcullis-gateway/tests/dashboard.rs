//! The Grafana dashboard in `docs/grafana/` is built on metrics the gateway exports: every
//! metric its queries name appears on `/metrics` of a running gateway.

use std::collections::BTreeSet;

use portcullis_testkit::gateway::GatewayCmd;
use portcullis_testkit::http::Client;
use portcullis_testkit::redis::RedisServer;
use portcullis_testkit::upstream::Upstream;
use serde_json::Value;

const DASHBOARD: &str = include_str!("../../../docs/grafana/portcullis-dashboard.json");

/// The metric names in a PromQL expression (histogram series named by their family).
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("portcullis_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        out.push(family);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_an_exported_metric() {
    let dash: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut wanted = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            wanted.extend(metrics_in(target["expr"].as_str().unwrap()));
        }
    }
    assert!(wanted.len() >= 8, "{wanted:?}");

    let redis = RedisServer::start();
    let up = Upstream::start();
    let hook = Upstream::start();
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--upstream",
            &up.url(),
            "--redis-url",
            &redis.url(),
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env(
            "PORTCULLIS_ALERTS_WEBHOOK_URL",
            &format!("{}/hook", hook.url()),
        )
        .start();
    let client = Client::new();
    for path in ["/a", "/b"] {
        assert_eq!(client.get(&gw.url(path)).await.unwrap().status, 200);
    }
    let metrics =
        String::from_utf8_lossy(&client.get(&gw.admin_url("/metrics")).await.unwrap().body)
            .into_owned();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|m| !metrics.lines().any(|l| l.starts_with(m.as_str())))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{metrics}");
}
