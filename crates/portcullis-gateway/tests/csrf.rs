//! CSRF, black box: forged requests of every kind are refused and never reach the
//! upstream; the app's own requests pass; tokens survive a Redis outage (`stateless`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_core::ManualClock;
use portcullis_core::csrf::{Binding, CsrfKey, CsrfMode, CsrfTokens};
use portcullis_core::store::{MemoryStore, SharedStore};
use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, Reply};
use portcullis_testkit::redis::RedisServer;
use portcullis_testkit::upstream::Upstream;
use serde_json::Value;

const SECRET: &str = "a test secret that is long enough to sign csrf tokens with";

struct Setup {
    dir: TempDir,
    up: Upstream,
    gw: GatewayProcess,
}

fn start(redis: Option<&RedisServer>, extra: &[(&str, &str)]) -> Setup {
    let dir = TempDir::new("csrf");
    let secret = dir.write("csrf.secret", SECRET);
    let up = Upstream::start();
    let mut cmd = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--upstream", &up.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_RATE_LIMIT_ENABLED", "false")
        .env("PORTCULLIS_CSRF_SECRET_FILE", secret.to_str().unwrap())
        .env("PORTCULLIS_REDIS_BREAKER_MIN_CALLS", "2")
        .env("PORTCULLIS_REDIS_COMMAND_TIMEOUT", "200ms")
        .env("PORTCULLIS_REDIS_BREAKER_SLOW_CALL", "150ms");
    if let Some(r) = redis {
        cmd = cmd.env("PORTCULLIS_REDIS_URL", &r.url());
    }
    for (k, v) in extra {
        cmd = cmd.env(k, v);
    }
    Setup {
        gw: cmd.start(),
        dir,
        up,
    }
}

async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Client::new()
        .send(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap()
}

/// A new browser session: its session cookie and its token.
async fn session(gw: &GatewayProcess) -> (String, String) {
    let r = send("GET", &gw.url("/auth/csrf"), &[], "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let cookies: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = cookies
        .iter()
        .find_map(|c| c.strip_prefix("__Host-csrf-session="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let token_cookie = cookies
        .iter()
        .find(|c| c.starts_with("__Host-csrf="))
        .expect("the token cookie");
    assert!(token_cookie.contains(&token));
    assert!(token_cookie.contains("Secure") && token_cookie.contains("SameSite=Strict"));
    assert!(
        !token_cookie.contains("HttpOnly"),
        "scripts must read it: {token_cookie}"
    );
    (format!("__Host-csrf-session={session}"), token)
}

/// What a forged request is, its headers, its body, the problem type it gets.
type Forged<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, &'a str);

async fn orders(up: &Upstream) -> Vec<Value> {
    up.requests()
        .await
        .into_iter()
        .filter(|r| r["path"] == "/orders")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_requests_are_refused_and_the_apps_pass() {
    let s = start(None, &[]);
    let own = format!("http://{}", s.gw.listen);
    let url = s.gw.url("/orders");
    let (cookie, token) = session(&s.gw).await;
    let (other_cookie, other_token) = session(&s.gw).await;
    assert_ne!(token, other_token);

    // A token that expired: minted with the gateway's secret on a clock 3 hours back.
    let clock = Arc::new(ManualClock::new());
    let store = SharedStore::memory(MemoryStore::new(1000, clock.clone()), "x");
    let minted = CsrfTokens::new(
        store,
        vec![CsrfKey::derive(SECRET.as_bytes())],
        clock.clone(),
        Duration::from_secs(7200),
        CsrfMode::Stateless,
    );
    let value = cookie.strip_prefix("__Host-csrf-session=").unwrap();
    let expired = minted.issue(&Binding::cookie(value)).await.unwrap();
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });

    let forged: Vec<Forged> = vec![
        ("no token", vec![("cookie", &cookie)], "{}".into(), "csrf"),
        (
            "cross-site Fetch Metadata",
            vec![
                ("cookie", &cookie),
                ("x-csrf-token", &token),
                ("sec-fetch-site", "cross-site"),
            ],
            "{}".into(),
            "csrf",
        ),
        (
            "same-site Fetch Metadata",
            vec![
                ("cookie", &cookie),
                ("x-csrf-token", &token),
                ("sec-fetch-site", "same-site"),
            ],
            "{}".into(),
            "csrf",
        ),
        (
            "a foreign Origin",
            vec![
                ("cookie", &cookie),
                ("x-csrf-token", &token),
                ("origin", "https://evil.example"),
            ],
            "{}".into(),
            "csrf",
        ),
        (
            "the null Origin",
            vec![
                ("cookie", &cookie),
                ("x-csrf-token", &token),
                ("origin", "null"),
            ],
            "{}".into(),
            "csrf",
        ),
        (
            "a foreign Referer",
            vec![
                ("cookie", &cookie),
                ("x-csrf-token", &token),
                ("referer", "https://evil.example/x"),
            ],
            "{}".into(),
            "csrf",
        ),
        (
            "another session's token",
            vec![("cookie", &cookie), ("x-csrf-token", &other_token)],
            "{}".into(),
            "csrf",
        ),
        (
            "an expired token",
            vec![("cookie", &cookie), ("x-csrf-token", &expired)],
            "{}".into(),
            "csrf",
        ),
        (
            "a tampered token",
            vec![("cookie", &cookie), ("x-csrf-token", &tampered)],
            "{}".into(),
            "csrf",
        ),
        (
            "a token in a JSON body",
            vec![("cookie", &cookie), ("content-type", "application/json")],
            format!("{{\"_csrf\":\"{token}\"}}"),
            "csrf",
        ),
        (
            "a token without its session",
            vec![("cookie", "unrelated=1"), ("x-csrf-token", &token)],
            "{}".into(),
            "csrf",
        ),
    ];
    for (what, headers, body, slug) in &forged {
        let r = send("POST", &url, headers, body).await;
        assert_eq!(
            r.status,
            403,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let p = r.json();
        assert!(p["type"].as_str().unwrap().ends_with(slug), "{what}: {p}");
        assert_eq!(p["request_id"].as_str(), r.header("x-request-id"));
        let vary = r.header("vary").unwrap_or_default().to_ascii_lowercase();
        assert!(
            vary.contains("origin") && vary.contains("sec-fetch-site"),
            "{what}: {vary}"
        );
    }
    // In the query string it does not count either.
    let r = send(
        "POST",
        &format!("{url}?_csrf={token}"),
        &[("cookie", &cookie)],
        "{}",
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(
        orders(&s.up).await.is_empty(),
        "nothing forged reached the upstream"
    );

    // The app's requests: header (with its own Origin, or Fetch Metadata same-origin),
    // urlencoded and multipart forms (bodies forwarded intact), and the other tab.
    let r = send(
        "POST",
        &url,
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &token),
            ("origin", &own),
            ("sec-fetch-site", "same-origin"),
        ],
        "{\"a\":1}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let form = format!("a=1&_csrf={}&b=%20x", token);
    let r = send(
        "POST",
        &url,
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &form,
    )
    .await;
    assert_eq!(r.status, 200);
    let multipart = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n{token}\r\n--XyZ--\r\n"
    );
    let r = send(
        "POST",
        &url,
        &[
            ("cookie", &cookie),
            ("content-type", "multipart/form-data; boundary=XyZ"),
        ],
        &multipart,
    )
    .await;
    assert_eq!(r.status, 200);
    let (_, again) = {
        // The same session asking again (another tab) gets the same token.
        let r = send("GET", &s.gw.url("/auth/csrf"), &[("cookie", &cookie)], "").await;
        ((), r.json()["token"].as_str().unwrap().to_owned())
    };
    assert_eq!(again, token, "one token per session, shared by its tabs");
    let r = send(
        "POST",
        &url,
        &[("cookie", &other_cookie), ("x-csrf-token", &other_token)],
        "{}",
    )
    .await;
    assert_eq!(r.status, 200, "the other session's own token");
    // Safe methods and bearer requests are not checked.
    let r = send("GET", &url, &[("cookie", &cookie)], "").await;
    assert_eq!(r.status, 200);
    let r = send(
        "POST",
        &url,
        &[("cookie", &cookie), ("authorization", "Bearer x")],
        "{}",
    )
    .await;
    assert_ne!(r.status, 403, "bearer requests are exempt (auth decides)");

    let bodies: Vec<String> = orders(&s.up)
        .await
        .iter()
        .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(bodies[..3], ["{\"a\":1}".to_owned(), form, multipart]);
    let events = s.gw.json_lines();
    assert!(
        events
            .iter()
            .any(|l| l["kind"] == "csrf_rejected" || l["event"] == "csrf_rejected"),
        "csrf_rejected events are logged"
    );
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_issued_before_a_redis_outage_still_validate_stateless() {
    let mut redis = RedisServer::start();
    let s = start(Some(&redis), &[]);
    let url = s.gw.url("/orders");
    let (cookie, token) = session(&s.gw).await;
    let r = send(
        "POST",
        &url,
        &[("cookie", &cookie), ("x-csrf-token", &token)],
        "{}",
    )
    .await;
    assert_eq!(r.status, 200);
    redis.kill();
    for i in 0..5 {
        let r = send(
            "POST",
            &url,
            &[("cookie", &cookie), ("x-csrf-token", &token)],
            "{}",
        )
        .await;
        assert_eq!(r.status, 200, "request {i} during the outage");
        let mut bad = token.clone();
        bad.insert(5, 'x');
        let r = send(
            "POST",
            &url,
            &[("cookie", &cookie), ("x-csrf-token", &bad)],
            "{}",
        )
        .await;
        assert_eq!(r.status, 403, "a tampered token during the outage");
    }
    // New tokens cannot be issued without the store.
    let r = send("GET", &s.gw.url("/auth/csrf"), &[("cookie", &cookie)], "").await;
    assert_eq!(r.status, 503);

    // `deny`: 503 with Retry-After while Redis is down.
    let mut redis = RedisServer::start();
    let s = start(Some(&redis), &[("PORTCULLIS_CSRF_ON_REDIS_DOWN", "deny")]);
    let (cookie, token) = session(&s.gw).await;
    redis.kill();
    let r = send(
        "POST",
        &s.gw.url("/orders"),
        &[("cookie", &cookie), ("x-csrf-token", &token)],
        "{}",
    )
    .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());
    assert!(orders(&s.up).await.is_empty());
}

/// With the gateway's own login (cookie mode): a token from before login stops working
/// after it, the session's token works, and after logout it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_renews_and_logout_revokes_the_sessions_tokens() {
    use portcullis_core::token::KeySet;

    let dir = TempDir::new("csrf-login");
    let key = dir.write("signing.pem", KeySet::generate_pem().unwrap());
    let users_file = dir.path().join("users.toml");
    portcullis_testkit::write_users(
        &users_file,
        &[("alice", "correct horse battery", &["user"])],
    );
    let s = start(
        None,
        &[
            ("PORTCULLIS_AUTH_COOKIES", "true"),
            ("PORTCULLIS_AUTH_SIGNING_KEY_FILE", key.to_str().unwrap()),
            ("PORTCULLIS_AUTH_USERS_FILE", users_file.to_str().unwrap()),
        ],
    );
    let url = s.gw.url("/orders");
    let (pre_cookie, pre_token) = session(&s.gw).await;
    // Login from the pre-login session needs its token.
    let body = r#"{"username":"alice","password":"correct horse battery"}"#;
    let r = send(
        "POST",
        &s.gw.url("/auth/login"),
        &[
            ("cookie", &pre_cookie),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 403, "login riding on cookies needs a token");
    // A form body does not carry it for the gateway's own (JSON) routes.
    let r = send(
        "POST",
        &s.gw.url("/auth/login"),
        &[
            ("cookie", &pre_cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &format!("username=alice&_csrf={pre_token}"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let r = send(
        "POST",
        &s.gw.url("/auth/login"),
        &[
            ("cookie", &pre_cookie),
            ("x-csrf-token", &pre_token),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let access = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("__Host-access="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let cookies = format!("{pre_cookie}; __Host-access={access}");
    // The pre-login token is bound to the old session: refused now.
    let r = send(
        "POST",
        &url,
        &[("cookie", &cookies), ("x-csrf-token", &pre_token)],
        "{}",
    )
    .await;
    assert_eq!(r.status, 403);
    // The logged-in session's token works.
    let r = send("GET", &s.gw.url("/auth/csrf"), &[("cookie", &cookies)], "").await;
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_ne!(token, pre_token);
    let r = send(
        "POST",
        &url,
        &[("cookie", &cookies), ("x-csrf-token", &token)],
        "{}",
    )
    .await;
    assert_eq!(r.status, 200);
    // Logout needs no token (but the source checks).
    let r = send(
        "POST",
        &s.gw.url("/auth/logout"),
        &[("cookie", &cookies), ("sec-fetch-site", "cross-site")],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "a cross-site logout is refused");
    let r = send(
        "POST",
        &s.gw.url("/auth/logout"),
        &[("cookie", &cookies)],
        "",
    )
    .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let r = send(
        "POST",
        &url,
        &[("cookie", &cookies), ("x-csrf-token", &token)],
        "{}",
    )
    .await;
    assert_ne!(r.status, 200, "after logout the session's token is dead");
    let r = send(
        "POST",
        &url,
        &[("cookie", &pre_cookie), ("x-csrf-token", &token)],
        "{}",
    )
    .await;
    assert_eq!(r.status, 403, "and it is bound to the logged-out session");
    assert_eq!(orders(&s.up).await.len(), 1);
}

/// Behind a trusted proxy that rewrites `Host`, the gateway's own origin is the one the
/// browser used: the proxy's `X-Forwarded-Host` and `X-Forwarded-Proto`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_public_origin_is_the_own_one() {
    let s = start(None, &[("PORTCULLIS_TRUSTED_PROXIES", "127.0.0.1/32")]);
    let (cookie, token) = session(&s.gw).await;
    let url = s.gw.url("/orders");
    let proxied = |origin: &'static str| {
        vec![
            ("cookie", cookie.clone()),
            ("x-csrf-token", token.clone()),
            ("x-forwarded-host", "app.example".to_owned()),
            ("x-forwarded-proto", "https".to_owned()),
            ("origin", origin.to_owned()),
        ]
    };
    for (origin, want) in [
        ("https://app.example", 200),
        ("http://app.example", 403),
        ("https://evil.example", 403),
    ] {
        let h = proxied(origin);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = send("POST", &url, &h, "{}").await;
        assert_eq!(
            r.status,
            want,
            "{origin}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // From an untrusted peer, X-Forwarded-Host is not believed.
    let t = start(None, &[]);
    let (cookie, token) = session(&t.gw).await;
    let r = send(
        "POST",
        &t.gw.url("/orders"),
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &token),
            ("x-forwarded-host", "app.example"),
            ("origin", "http://app.example"),
        ],
        "{}",
    )
    .await;
    assert_eq!(r.status, 403);
}
