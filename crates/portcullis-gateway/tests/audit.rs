//! The audit log: sensitive operations appended as hash-chained JSON lines, continued
//! across restarts, and `portcullis audit verify` finding the first bad record.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_core::token::KeySet;
use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, Reply};
use portcullis_testkit::upstream::Upstream;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

fn portcullis() -> GatewayCmd {
    GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn start(dir: &TempDir, up: &Upstream) -> GatewayProcess {
    let cfg = dir.path().join("gw.toml");
    portcullis()
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--upstream",
            &up.url(),
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .start()
}

async fn post(url: &str, body: &str) -> Reply {
    Client::new()
        .send(
            Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .unwrap()
}

fn records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(path: &std::path::Path) -> portcullis_testkit::gateway::Finished {
    portcullis()
        .args(["audit", "verify", path.to_str().unwrap()])
        .run(LIMIT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_operations_are_chained_and_tampering_is_named() {
    let dir = TempDir::new("audit");
    let key = dir.write("signing.pem", KeySet::generate_pem().unwrap());
    let users_file = dir.path().join("users.toml");
    portcullis_testkit::write_users(
        &users_file,
        &[("alice", "correct horse battery", &["user"])],
    );
    let log = dir.path().join("audit.log");
    dir.write(
        "gw.toml",
        format!(
            "[audit]\nfile = \"{}\"\n[auth]\nsigning_key_file = \"{}\"\nusers_file = \"{}\"\n[rate_limit]\nenabled = false\n[[routes]]\nname = \"payouts\"\npath = \"/payouts/**\"\naudit = true\n",
            log.display(),
            key.display(),
            users_file.display()
        ),
    );
    let up = Upstream::start();
    let gw = start(&dir, &up);
    let login = gw.url("/auth/login");
    let r = post(
        &login,
        r#"{"username":"alice","password":"wrong password"}"#,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = post(
        &login,
        r#"{"username":"alice","password":"correct horse battery"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = Client::new().get(&gw.url("/payouts/42")).await.unwrap();
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").unwrap().to_owned();
    let r = Client::new().get(&gw.url("/elsewhere")).await.unwrap();
    assert_eq!(r.status, 200, "not an audited route");

    // Written before each response: all there now, in order.
    let recs = records(&log);
    let got: Vec<(&str, &str, &str)> = recs
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["target"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("login", "alice", "failed"),
            ("login", "alice", "ok"),
            ("route.request", "payouts GET /payouts/42", "200"),
        ]
    );
    assert_eq!(recs[2]["request_id"], id.as_str());
    assert_eq!(recs[0]["seq"], 1);
    let out = verify(&log);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("3 records"), "{}", out.stdout);

    // A restart continues the chain.
    drop(gw);
    let gw = start(&dir, &up);
    let r = Client::new().get(&gw.url("/payouts/43")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(records(&log).len(), 4);
    assert_eq!(verify(&log).code, Some(0));
    drop(gw);

    // Tampering: a changed, a removed and a reordered record are each named by seq.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut changed = lines.clone();
    changed[1] = changed[1].replace("\"ok\"", "\"failed\"");
    let mut removed = lines.clone();
    removed.remove(1);
    let mut reordered = lines.clone();
    reordered.swap(2, 3);
    let cases = [
        ("changed", changed, "record 2"),
        ("removed", removed, "record 3"),
        ("reordered", reordered, "record 4"),
    ];
    for (what, l, needle) in cases {
        let tampered = dir.write("tampered.log", l.join("\n") + "\n");
        let out = verify(&tampered);
        assert_eq!(out.code, Some(1), "{what}: {out:?}");
        assert!(out.stderr.contains(needle), "{what}: {}", out.stderr);
    }
}

#[test]
fn an_unwritable_audit_file_is_a_configuration_error() {
    let dir = TempDir::new("audit-bad");
    let cfg = dir.write(
        "gw.toml",
        "upstream = \"http://127.0.0.1:3000\"\n[audit]\nfile = \"/nonexistent-dir/audit.log\"\n",
    );
    let out = portcullis()
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .run(LIMIT);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("audit.file"), "{}", out.stderr);
}
