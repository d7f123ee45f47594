//! Security headers and CORS, on every kind of response, through the gateway process.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, Reply};
use portcullis_testkit::upstream::Upstream;

const LIMIT: Duration = Duration::from_secs(20);

/// helmet 8.3.0's default headers, byte for byte (HSTS aside: only over TLS).
const HELMET: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("origin-agent-cluster", "?1"),
    ("referrer-policy", "no-referrer"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-dns-prefetch-control", "off"),
    ("x-download-options", "noopen"),
    ("x-frame-options", "SAMEORIGIN"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-xss-protection", "0"),
];

const API: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-resource-policy", "same-origin"),
];

fn start(dir: &TempDir, up: &Upstream, config: &str, env: &[(&str, &str)]) -> GatewayProcess {
    let cfg = dir.write("gw.toml", config);
    let mut cmd = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--upstream",
            &up.url(),
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.start()
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send("GET", url, headers).await
}

async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Client::new()
        .send(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

fn all(r: &Reply, name: &str) -> Vec<String> {
    r.headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// Every header of `want` is there once with exactly its value.
fn assert_set(r: &Reply, want: &[(&str, &str)], what: &str) {
    for (name, value) in want {
        assert_eq!(all(r, name), [*value], "{what}: {name}");
    }
}

const ROUTES: &str = r#"
[rate_limit.tiers]
anonymous = { limit = 10000, per = "1m" }

[[routes]]
name = "limited"
path = "/limited/**"
rate_limit = { limit = 1, per = "1m", key = "ip" }

[[routes]]
name = "site"
path = "/site/**"
headers = "web"

[[routes]]
name = "raw"
path = "/raw/**"
headers = "off"

[[routes]]
name = "members"
path = "/members/**"
roles = ["user"]

[headers.set]
"Permissions-Policy" = "geolocation=()"
"X-Download-Options" = ""
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_replace_upstream_headers_on_every_response() {
    let dir = TempDir::new("headers");
    let up = Upstream::start();
    let gw = start(&dir, &up, ROUTES, &[]);
    let upstream_says = [
        ("x-upstream-set", "X-Frame-Options: ALLOWALL"),
        ("x-upstream-set", "Server: Apache/2.4.1"),
        ("x-upstream-set", "X-Powered-By: Express"),
        ("x-upstream-set", "X-AspNet-Version: 4.0"),
        ("x-upstream-set", "Strict-Transport-Security: max-age=1"),
        ("x-upstream-set", "X-Custom: kept"),
    ];

    // `api` (the default), over plain HTTP: no HSTS, upstream values replaced.
    let r = get(&gw.url("/api/x"), &upstream_says).await;
    assert_eq!(r.status, 200);
    assert_set(&r, API, "api");
    assert_eq!(
        all(&r, "cache-control"),
        ["no-store"],
        "no-store when the upstream sent none"
    );
    assert_eq!(all(&r, "x-custom"), ["kept"]);
    for gone in [
        "server",
        "x-powered-by",
        "x-aspnet-version",
        "strict-transport-security",
    ] {
        assert!(
            r.headers.get(gone).is_none(),
            "{gone} must go: {:?}",
            r.headers
        );
    }
    assert_eq!(
        all(&r, "permissions-policy"),
        ["geolocation=()"],
        "[headers.set]"
    );
    // The upstream's own Cache-Control stays.
    let r = get(
        &gw.url("/api/y"),
        &[("x-upstream-set", "Cache-Control: max-age=60")],
    )
    .await;
    assert_eq!(all(&r, "cache-control"), ["max-age=60"]);

    // `web` = helmet, over plain HTTP: without HSTS and upgrade-insecure-requests; with
    // a trusted proxy saying https, exactly helmet's set.
    let r = get(&gw.url("/site/page"), &upstream_says).await;
    let csp = &all(&r, "content-security-policy")[0];
    assert!(!csp.contains("upgrade-insecure-requests"), "{csp}");
    assert!(r.headers.get("strict-transport-security").is_none());
    drop(gw);
    let gw = start(
        &dir,
        &up,
        ROUTES,
        &[("PORTCULLIS_TRUSTED_PROXIES", "127.0.0.1/32")],
    );
    let r = get(&gw.url("/site/page"), &[("x-forwarded-proto", "https")]).await;
    let helmet: Vec<(&str, &str)> = HELMET
        .iter()
        .copied()
        .filter(|(n, _)| *n != "x-download-options") // removed by [headers.set]
        .collect();
    assert_set(&r, &helmet, "web over https");
    assert!(
        r.headers.get("x-download-options").is_none(),
        "[headers.set] removes"
    );
    let r = get(&gw.url("/api/x"), &[("x-forwarded-proto", "https")]).await;
    assert_eq!(
        all(&r, "strict-transport-security"),
        ["max-age=31536000; includeSubDomains"]
    );

    // `off`: the upstream's headers as they are (but [headers.set] still applies).
    let r = get(&gw.url("/raw/x"), &upstream_says).await;
    assert_eq!(all(&r, "x-frame-options"), ["ALLOWALL"]);
    assert_eq!(all(&r, "server"), ["Apache/2.4.1"]);
    assert!(r.headers.get("content-security-policy").is_none());

    // Refusals carry them too: 401, 404-less 400, 405, 429, 502.
    let r = get(&gw.url("/members/x"), &[]).await;
    assert_eq!(r.status, 401);
    assert_set(&r, API, "401");
    let r = send("TRACE", &gw.url("/x"), &[]).await;
    assert_eq!(r.status, 405);
    assert_set(&r, API, "405");
    let r = get(&gw.url("/a/..%2f..%2fetc"), &[]).await;
    assert_eq!(r.status, 400);
    assert_set(&r, API, "400");
    let r = send(
        "POST",
        &gw.url("/api/x"),
        &[("cookie", "sid=1"), ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(r.status, 403, "a cross-site POST with cookies");
    assert_set(&r, API, "403");
    drop(up);
    let r = get(&gw.url("/api/down"), &[]).await;
    assert_eq!(r.status, 502);
    assert_set(&r, API, "502");
    let first = get(&gw.url("/limited/z"), &[]).await;
    assert_eq!(first.status, 502, "the first passes the quota of 1");
    let r = get(&gw.url("/limited/z"), &[]).await;
    assert_eq!(r.status, 429);
    assert_set(&r, API, "429");
}

const CORS: &str = r#"
[cors]
allowed_origins = ["https://app.example", "http://localhost:3000"]
allowed_methods = ["GET", "POST", "PUT"]
allowed_headers = ["content-type", "x-csrf-token"]
allow_credentials = true
max_age = "5m"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_echoes_allowed_origins_and_answers_preflights_itself() {
    let dir = TempDir::new("cors");
    let up = Upstream::start();
    let gw = start(&dir, &up, CORS, &[]);

    // An allowed origin, with credentials: echoed exactly, never `*`.
    let r = get(
        &gw.url("/data"),
        &[
            ("origin", "https://app.example"),
            ("x-upstream-set", "Access-Control-Allow-Origin: *"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        all(&r, "access-control-allow-origin"),
        ["https://app.example"]
    );
    assert_eq!(all(&r, "access-control-allow-credentials"), ["true"]);
    assert!(
        all(&r, "vary")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("origin"))
    );
    // Default port spelled out: the same origin.
    let r = get(&gw.url("/data"), &[("origin", "https://APP.example:443")]).await;
    assert_eq!(all(&r, "access-control-allow-origin").len(), 1);

    // Disallowed, `null`, and no origin: no CORS headers at all (the upstream's removed),
    // `Vary: Origin` still.
    for origin in [
        Some("https://evil.example"),
        Some("null"),
        Some("http://localhost:3001"),
        None,
    ] {
        let mut h = vec![("x-upstream-set", "Access-Control-Allow-Origin: *")];
        if let Some(o) = origin {
            h.push(("origin", o));
        }
        let r = get(&gw.url("/data"), &h).await;
        assert_eq!(r.status, 200);
        assert!(
            r.headers.get("access-control-allow-origin").is_none()
                && r.headers.get("access-control-allow-credentials").is_none(),
            "{origin:?}: {:?}",
            r.headers
        );
        assert!(
            all(&r, "vary")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("origin"))
        );
    }

    // Preflights: answered by the gateway, never proxied.
    let pre = |origin: &'static str, method: &'static str, headers: &'static str| {
        let url = gw.url("/data");
        async move {
            let mut h = vec![
                ("origin", origin),
                ("access-control-request-method", method),
            ];
            if !headers.is_empty() {
                h.push(("access-control-request-headers", headers));
            }
            send("OPTIONS", &url, &h).await
        }
    };
    let r = pre("https://app.example", "PUT", "Content-Type, X-CSRF-Token").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        all(&r, "access-control-allow-origin"),
        ["https://app.example"]
    );
    assert_eq!(all(&r, "access-control-allow-credentials"), ["true"]);
    assert_eq!(all(&r, "access-control-max-age"), ["300"]);
    let methods = all(&r, "access-control-allow-methods").join(",");
    assert!(methods.contains("PUT"), "{methods}");
    for (origin, method, headers, what) in [
        ("https://app.example", "DELETE", "", "a method not allowed"),
        (
            "https://app.example",
            "POST",
            "x-secret",
            "a header not allowed",
        ),
        ("https://evil.example", "GET", "", "an origin not allowed"),
        ("null", "GET", "", "the null origin"),
    ] {
        let r = pre(origin, method, headers).await;
        assert_eq!(r.status, 403, "{what}");
        assert!(
            r.headers.get("access-control-allow-origin").is_none(),
            "{what}"
        );
        assert!(
            r.headers.get("access-control-allow-methods").is_none(),
            "{what}"
        );
    }
    assert!(
        up.requests().await.iter().all(|r| r["method"] != "OPTIONS"),
        "no preflight reached the upstream"
    );

    // Without credentials, `*` allows any origin, still echoed.
    drop(gw);
    let gw = start(&dir, &up, "[cors]\nallowed_origins = [\"*\"]\n", &[]);
    let r = get(&gw.url("/data"), &[("origin", "https://any.example")]).await;
    assert_eq!(
        all(&r, "access-control-allow-origin"),
        ["https://any.example"]
    );
    assert!(r.headers.get("access-control-allow-credentials").is_none());
    let r = get(&gw.url("/data"), &[("origin", "null")]).await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
}

#[test]
fn cors_and_header_settings_that_cannot_work_are_configuration_errors() {
    let dir = TempDir::new("cors-bad");
    for (config, key) in [
        (
            "[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true\n",
            "cors.allowed_origins",
        ),
        (
            "[cors]\nallowed_origins = [\"null\"]\n",
            "cors.allowed_origins",
        ),
        (
            "[cors]\nallowed_origins = [\"https://app.example/path\"]\n",
            "cors.allowed_origins",
        ),
        ("[headers]\nprofile = \"strict\"\n", "headers.profile"),
        (
            "[headers.set]\n\"Bad Name\" = \"x\"\n",
            "headers.set.Bad Name",
        ),
        ("[headers.set]\n\"X-A\" = 3\n", "headers.set.X-A"),
        (
            "[csrf]\ntrusted_origins = [\"app.example\"]\n",
            "csrf.trusted_origins",
        ),
        (
            "[[routes]]\npath = \"/a\"\nheaders = \"loud\"\n",
            "routes[0].headers",
        ),
    ] {
        let cfg = dir.write(
            "bad.toml",
            format!("upstream = \"http://127.0.0.1:3000\"\n{config}"),
        );
        let out = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check-config", "--config", cfg.to_str().unwrap()])
            .run(LIMIT);
        assert_eq!(out.code, Some(2), "{config}: {out:?}");
        assert!(
            out.stderr.contains(key),
            "{config}: stderr lacks {key:?}:\n{}",
            out.stderr
        );
    }
}
