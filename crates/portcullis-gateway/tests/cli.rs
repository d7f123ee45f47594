//! The command line: exit codes, `check-config`, `config-reference`, the demo.

use std::time::Duration;

use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::GatewayCmd;
use portcullis_testkit::http::Client;

fn portcullis() -> GatewayCmd {
    GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
}

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn docs_configuration_md_is_the_generated_reference() {
    let out = portcullis().args(["config-reference"]).run(LIMIT);
    assert_eq!(out.code, Some(0));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == out.stdout,
        "docs/configuration.md is stale; regenerate it with\n  cargo run -q -p portcullis-gateway -- config-reference > docs/configuration.md"
    );
    for var in [
        "PORTCULLIS_LISTEN",
        "PORTCULLIS_LIMITS_BODY",
        "PORTCULLIS_LOG_REDACT_HEADERS",
        "[[routes]]",
    ] {
        assert!(out.stdout.contains(var), "reference lacks {var}");
    }
}

#[test]
fn docs_errors_md_lists_every_problem_type() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
    let doc = std::fs::read_to_string(path).expect("docs/errors.md");
    for kind in portcullis::ProblemKind::ALL {
        assert!(
            doc.contains(&format!("`{}`", kind.slug())),
            "docs/errors.md lacks {}",
            kind.slug()
        );
    }
}

#[test]
fn check_config_summarises_a_valid_configuration() {
    let dir = TempDir::new("cli-ok");
    let cfg = dir.write(
        "ok.toml",
        "upstream = \"http://127.0.0.1:3000\"\n[limits]\nbody = \"2MiB\"\n[[routes]]\nname = \"admin\"\npath = \"/admin/**\"\n",
    );
    let out = portcullis()
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .run(LIMIT);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("configuration OK"));
    assert!(out.stdout.contains("admin /admin/**"));
}

#[test]
fn bad_configuration_exits_2_naming_every_problem_and_binds_nothing() {
    let dir = TempDir::new("cli-bad");
    let cfg = dir.write("bad.toml", "upstream = \"http://127.0.0.1:3000\"\nlisten = \"127.0.0.1:1\"\n[limits]\nbody = \"lots\"\n");
    let port = portcullis_testkit::ports::free_port();
    for sub in ["check-config", "serve"] {
        let out = portcullis()
            .args([
                sub,
                "--config",
                cfg.to_str().unwrap(),
                "--admin-listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("PORTCULLIS_SHUTDOWN_GRAEC", "1s")
            .env("PORTCULLIS_LOG_FORMAT", "yaml")
            .run(LIMIT);
        assert_eq!(out.code, Some(2), "{sub}: {out:?}");
        for needle in [
            "limits.body",
            "bad.toml line 4",
            "PORTCULLIS_SHUTDOWN_GRAEC",
            "did you mean PORTCULLIS_SHUTDOWN_GRACE",
            "log.format",
            "from environment variable PORTCULLIS_LOG_FORMAT",
        ] {
            assert!(
                out.stderr.contains(needle),
                "{sub}: stderr lacks {needle:?}:\n{}",
                out.stderr
            );
        }
        assert!(
            !out.stdout.contains("listening"),
            "{sub} started despite errors"
        );
    }
    // Nothing was bound: the admin port is still free.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn serve_requires_an_upstream() {
    let out = portcullis()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .run(LIMIT);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("upstream: required"), "{}", out.stderr);
}

#[test]
fn bad_flags_exit_2() {
    let out = portcullis().args(["serve", "--no-such-flag"]).run(LIMIT);
    assert_eq!(out.code, Some(2));
    let out = portcullis()
        .args(["serve", "--upstream", "http://x:1", "--listen", "nowhere"])
        .run(LIMIT);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("listen") && out.stderr.contains("from flag --listen"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_port_in_use_is_a_clear_runtime_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = portcullis()
        .args([
            "serve",
            "--upstream",
            "http://127.0.0.1:1",
            "--listen",
            &addr,
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .run(LIMIT);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("listen") && out.stderr.contains(&addr),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_echo_upstream_and_prints_a_walkthrough() {
    let gw = portcullis()
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .start();
    let reply = Client::new().get(&gw.url("/anything")).await.unwrap();
    assert_eq!(reply.status, 200);
    let id = reply
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned();
    let body = reply.json();
    assert_eq!(body["echo"], true);
    assert_eq!(body["path"], "/anything");
    assert_eq!(body["headers"]["x-request-id"], id.as_str());
    let out = gw.stdout_lines().join("\n");
    assert!(
        out.contains("curl -i http://"),
        "no walkthrough printed:\n{out}"
    );
    assert!(
        out.contains("/auth/csrf") && out.contains("x-csrf-token: $CSRF"),
        "the walkthrough shows a cookie-mode POST with its CSRF token:\n{out}"
    );
}
