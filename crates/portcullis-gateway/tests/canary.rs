//! Planted secrets never leave the gateway through its logs, its alerts or its audit file.
//!
//! One gateway process (real Redis store, log file at level `debug`, audit file, alert
//! webhook at a recording receiver) is sent requests carrying unique canary strings
//! wherever the documented redaction promises to hide them: the headers of
//! `log.redact_headers`, query parameters and JSON fields (at depth) named in
//! `log.redact_fields`, the password and refresh-token fields of the auth routes, and token
//! values. They go through every kind of route: plain proxied, login (good and bad
//! password), refresh, a schema refusal, an audited route, the admin API, a CSRF refusal, a
//! rate-limit refusal and invalid bearer tokens (which raise `invalid_token` events, logged
//! and sent to the webhook). Then no canary may appear in any log file, any alert the
//! receiver got, the audit file, or the process's own output, and every line of every log
//! file and of the audit file must be one JSON object: requests with encoded and raw CR, LF,
//! NEL and U+2028 try to forge lines.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use portcullis_core::token::KeySet;
use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess, log_files};
use portcullis_testkit::http::{Client, Reply, raw_exchange};
use portcullis_testkit::redis::RedisServer;
use portcullis_testkit::upstream::Upstream;
use serde_json::{Value, json};

/// Every secret planted, with a label saying where, so a leak names its source.
struct Canaries {
    nonce: String,
    planted: Vec<(String, String)>,
}

impl Canaries {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Self {
            nonce: format!("{:x}{:x}", std::process::id(), nanos % (1 << 40)),
            planted: Vec::new(),
        }
    }

    /// A new unique canary: letters and digits only, so it is the same text in a header,
    /// a query string, JSON and base64url.
    fn plant(&mut self, label: &str) -> String {
        let value = format!(
            "CANARY{}{}z{}",
            label.replace(|c: char| !c.is_ascii_alphanumeric(), ""),
            self.planted.len(),
            self.nonce
        );
        self.planted.push((label.to_owned(), value.clone()));
        value
    }

    /// A secret the gateway issued (a token), watched like a planted one.
    fn watch(&mut self, label: &str, value: &str) {
        assert!(value.len() >= 16, "{label}: too short to watch: {value:?}");
        self.planted.push((label.to_owned(), value.to_owned()));
    }

    /// Panics naming the first secret found in `text` (from `source`).
    fn assert_absent(&self, source: &str, text: &str) {
        for (label, value) in &self.planted {
            if let Some(at) = text.find(value.as_str()) {
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                panic!(
                    "the {label} secret reached {source}:\n{}",
                    &text[line_start..line_end]
                );
            }
        }
    }
}

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "card_number": { "type": "string", "pattern": "^[0-9]{16}$" },
    "payment": {
      "type": "object",
      "properties": { "cvv": { "type": "string", "maxLength": 4 } }
    }
  },
  "required": ["card_number"]
}"#;

struct Setup {
    dir: TempDir,
    log_dir: PathBuf,
    audit_file: PathBuf,
    config: PathBuf,
}

fn setup(carol_pw: &str, root_pw: &str, hook: &Upstream) -> Setup {
    let dir = TempDir::new("canary");
    let key = dir.write("signing.pem", KeySet::generate_pem().unwrap());
    let users = dir.path().join("users.toml");
    portcullis_testkit::write_users(
        &users,
        &[
            ("carol", carol_pw, &["user"]),
            ("root", root_pw, &["user", "admin"]),
        ],
    );
    let schema = dir.write("order.schema.json", SCHEMA);
    let log_dir = dir.path().join("logs");
    let audit_dir = dir.path().join("audit");
    std::fs::create_dir_all(&audit_dir).unwrap();
    let audit_file = audit_dir.join("audit.log");
    let config = dir.write(
        "gw.toml",
        format!(
            r#"
[auth]
signing_key_file = "{key}"
users_file = "{users}"
cookies = true

[log]
level = "debug"
file = "{log}"

[audit]
file = "{audit}"

[alerts]
webhook_url = "{hook}/hook"
dedup_window = "1s"

[rate_limit.tiers]
anonymous = {{ limit = 10000, per = "1m" }}
user = {{ limit = 10000, per = "1m" }}
admin = {{ limit = 10000, per = "1m" }}

[[routes]]
name = "limited"
path = "/limited/**"
rate_limit = {{ limit = 1, per = "1m", key = "ip" }}

[[routes]]
name = "orders"
path = "/orders/**"
schema = "{schema}"

[[routes]]
name = "payouts"
path = "/payouts/**"
audit = true
"#,
            key = key.display(),
            users = users.display(),
            log = log_dir.join("gateway.log").display(),
            audit = audit_file.display(),
            hook = hook.url(),
            schema = schema.display(),
        ),
    );
    Setup {
        dir,
        log_dir,
        audit_file,
        config,
    }
}

fn start(s: &Setup, up: &Upstream, redis: &RedisServer) -> GatewayProcess {
    GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", s.config.to_str().unwrap()])
        .args(["--upstream", &up.url(), "--redis-url", &redis.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        // Calls given time on a loaded machine.
        .env("PORTCULLIS_REDIS_COMMAND_TIMEOUT", "1s")
        .env("PORTCULLIS_REDIS_BREAKER_SLOW_CALL", "750ms")
        .start_logging_to(&s.log_dir)
}

async fn send(url: &str, method: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Reply {
    Client::new().send_json(method, url, headers, body).await
}

fn expect(r: &Reply, status: u16, what: &str) {
    assert_eq!(
        r.status.as_u16(),
        status,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
}

/// A token shaped like the gateway's own (header.payload.signature) that fails
/// verification: its `kid` is `kid` and its payload and signature hold canaries.
fn forged_jwt(kid: &str, sub: &str, signature: &str) -> String {
    let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": kid }).to_string();
    let payload = json!({
        "sub": sub, "roles": ["admin"], "iss": "portcullis", "aud": "api",
        "exp": 4_000_000_000u64, "iat": 1, "nbf": 1, "sid": sub, "jti": sub,
    })
    .to_string();
    format!("{}.{}.{signature}", B64.encode(header), B64.encode(payload))
}

/// The alerts the webhook received so far, as JSON, with their raw bodies.
async fn alerts(hook: &Upstream) -> Vec<(String, Value)> {
    hook.requests()
        .await
        .iter()
        .filter(|r| r["path"] == "/hook")
        .map(|r| {
            let body = r["body"].as_str().unwrap_or_default().to_owned();
            let v = serde_json::from_str(&body).unwrap_or(Value::Null);
            (body, v)
        })
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every line of `text` is one JSON object none of whose members was forged by input.
fn assert_json_lines(source: &str, text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{source}: a line is not JSON ({e}): {line}"));
            assert!(v.is_object(), "{source}: not an object: {line}");
            assert!(v.get("forged").is_none(), "{source}: a forged line: {line}");
            for c in ['\u{2028}', '\u{2029}', '\u{85}', '\r'] {
                assert!(!line.contains(c), "{source}: unescaped {c:?} in {line}");
            }
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_reach_no_log_alert_or_audit_record() {
    let mut c = Canaries::new();
    let carol_pw = c.plant("password of carol");
    let root_pw = c.plant("password of root");
    let up = Upstream::start();
    let hook = Upstream::start();
    let redis = RedisServer::start();
    let s = setup(&carol_pw, &root_pw, &hook);
    let mut gw = start(&s, &up, &redis);
    let url = |p: &str| gw.url(p);

    // 1. A plain proxied route: secrets in every redacted header, in redacted query
    //    parameters, and in redacted JSON fields at depth.
    let basic = format!("Basic {}", c.plant("basic credentials"));
    let proxy_auth = format!("Basic {}", c.plant("proxy credentials"));
    let cookie = format!("sid={}; theme=dark", c.plant("session cookie"));
    let api_key = c.plant("api key");
    let csrf_header = c.plant("csrf header");
    let set_cookie = format!("sid={}", c.plant("request set-cookie"));
    let card = format!("4111111111111111{}", c.plant("card in query"));
    c.watch("bare card number", "4111111111111111");
    let query = format!(
        "/things/1?page=2&password={}&token={}&card_number={card}&access_token={}",
        c.plant("query password"),
        c.plant("query token"),
        c.plant("query access token"),
    );
    let r = send(
        &url(&query),
        "GET",
        &[
            ("authorization", &basic),
            ("proxy-authorization", &proxy_auth),
            ("cookie", &cookie),
            ("x-api-key", &api_key),
            ("x-csrf-token", &csrf_header),
            ("set-cookie", &set_cookie),
        ],
        None,
    )
    .await;
    expect(&r, 200, "plain GET");
    let seen = &up.requests().await[0];
    assert_eq!(
        seen["query"].as_str().unwrap(),
        &query["/things/1?".len()..],
        "the canaries reached the upstream: the test exercises them"
    );
    let nested = json!({
        "user": {
            "name": "carol",
            "profile": { "credentials": { "password": c.plant("nested password") } },
            "cards": [ { "card_number": format!("4111111111111111{}", c.plant("nested card")), "cvv": c.plant("nested cvv") } ],
        },
        "client_secret": c.plant("client secret"),
        "refresh_token": c.plant("body refresh token"),
    });
    let r = send(
        &url("/things"),
        "POST",
        &[("authorization", &basic), ("x-api-key", &api_key)],
        Some(&nested),
    )
    .await;
    expect(&r, 200, "plain POST");

    // 2. Login with a good and a bad password; the tokens issued are secrets too.
    let login = url("/auth/login");
    let bad_pw = c.plant("wrong password");
    let r = send(
        &login,
        "POST",
        &[],
        Some(&json!({ "username": "carol", "password": bad_pw })),
    )
    .await;
    expect(&r, 401, "bad login");
    let r = send(
        &login,
        "POST",
        &[],
        Some(&json!({ "username": "carol", "password": carol_pw })),
    )
    .await;
    expect(&r, 200, "good login");
    let carol_access = r.json()["access_token"].as_str().unwrap().to_owned();
    let carol_refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    c.watch("carol's access token", &carol_access);
    c.watch(
        "carol's access token signature",
        carol_access.rsplit('.').next().unwrap(),
    );
    c.watch("carol's refresh token", &carol_refresh);

    // 3. Refresh: with a canary (refused) and with the real token (rotated).
    let refresh = url("/auth/refresh");
    let r = send(
        &refresh,
        "POST",
        &[],
        Some(&json!({ "refresh_token": c.plant("refresh token") })),
    )
    .await;
    expect(&r, 401, "refresh with a canary");
    let r = send(
        &refresh,
        "POST",
        &[],
        Some(&json!({ "refresh_token": carol_refresh })),
    )
    .await;
    expect(&r, 200, "refresh");
    c.watch(
        "rotated access token",
        r.json()["access_token"].as_str().unwrap(),
    );
    c.watch(
        "rotated refresh token",
        r.json()["refresh_token"].as_str().unwrap(),
    );

    // 4. A schema refusal whose refused values are canaries; the problem names places,
    //    never values.
    let refused_card = format!("4111111111111111{}", c.plant("refused card"));
    let r = send(
        &url("/orders/new"),
        "POST",
        &[("x-api-key", &api_key)],
        Some(&json!({
            "card_number": refused_card,
            "payment": { "cvv": c.plant("refused cvv"), "password": c.plant("refused password") },
        })),
    )
    .await;
    expect(&r, 422, "schema refusal");
    c.assert_absent("the 422 problem body", &String::from_utf8_lossy(&r.body));

    // 5. An audited route.
    let audited = format!(
        "/payouts/7?token={}&card_number={}",
        c.plant("audited token"),
        c.plant("audited card")
    );
    let r = send(
        &url(&audited),
        "GET",
        &[("x-api-key", &api_key), ("authorization", &basic)],
        None,
    )
    .await;
    expect(&r, 200, "audited route");

    // 6. The admin API: a purge whose key holds a secret query parameter.
    let r = send(
        &login,
        "POST",
        &[],
        Some(&json!({ "username": "root", "password": root_pw })),
    )
    .await;
    expect(&r, 200, "admin login");
    let root_access = r.json()["access_token"].as_str().unwrap().to_owned();
    c.watch("root's access token", &root_access);
    c.watch(
        "root's refresh token",
        r.json()["refresh_token"].as_str().unwrap(),
    );
    let admin_auth = format!("Bearer {root_access}");
    let purge_key = format!(
        "GET /products?page=1&token={}&password={}",
        c.plant("purged token"),
        c.plant("purged password")
    );
    let r = send(
        &gw.admin_url("/admin/cache/purge"),
        "POST",
        &[("authorization", &admin_auth), ("x-api-key", &api_key)],
        Some(&json!({ "key": purge_key })),
    )
    .await;
    expect(&r, 200, "admin purge");

    // 7. CSRF refusals in cookie mode: cross-site, and same-origin with a bad token.
    let cookies = format!(
        "__Host-access={carol_access}; __Host-csrf={}; sid={}",
        c.plant("csrf cookie"),
        c.plant("csrf session cookie")
    );
    for (site, what) in [("cross-site", "cross-site"), ("same-origin", "bad token")] {
        let r = send(
            &url("/things/update"),
            "POST",
            &[
                ("cookie", &cookies),
                ("sec-fetch-site", site),
                ("x-csrf-token", &csrf_header),
            ],
            Some(&json!({ "password": c.plant("csrf body password") })),
        )
        .await;
        expect(&r, 403, &format!("CSRF refusal ({what})"));
    }

    // 8. A rate-limit refusal.
    let limited = format!("/limited/a?password={}", c.plant("limited password"));
    for status in [200, 429] {
        let r = send(
            &url(&limited),
            "GET",
            &[("authorization", &basic), ("cookie", &cookie)],
            None,
        )
        .await;
        expect(&r, status, "rate limit");
    }

    // 9. Invalid bearer tokens that are themselves secrets: opaque, and shaped like the
    //    gateway's with a long `kid` whose tail is a secret (logs keep 128 characters of
    //    it), a secret payload and a secret signature; and one in the access cookie.
    let opaque = c.plant("opaque bearer token");
    let kid_tail = c.plant("kid tail");
    let long_kid = format!("kid-{}{kid_tail}", "k".repeat(200));
    let sub = c.plant("token subject");
    let forged = forged_jwt(&long_kid, &sub, &c.plant("token signature"));
    c.watch("forged token", &forged);
    c.watch("forged token payload", forged.split('.').nth(1).unwrap());
    let forged_cookie = forged_jwt(
        "k1",
        &c.plant("cookie token subject"),
        &c.plant("cookie token signature"),
    );
    c.watch("forged cookie token", &forged_cookie);
    // A kid that tries to end the line and start a forged one.
    let evil = forged_jwt(
        "k\r\n{\"forged\":true,\"level\":\"error\"}\u{2028}\u{85}x",
        &c.plant("evil token subject"),
        &c.plant("evil token signature"),
    );
    for (auth, what) in [
        (format!("Bearer {opaque}"), "opaque"),
        (format!("Bearer {forged}"), "forged"),
        (format!("bearer {evil}"), "evil kid"),
    ] {
        let r = send(&url("/things/2"), "GET", &[("authorization", &auth)], None).await;
        expect(&r, 401, &format!("invalid token ({what})"));
    }
    let r = send(
        &url("/things/3"),
        "GET",
        &[("cookie", &format!("__Host-access={forged_cookie}"))],
        None,
    )
    .await;
    expect(&r, 401, "invalid access cookie");

    // 10. Lines forged through a header and a query string (raw NEL and U+2028, encoded
    //     CR/LF and U+2028), and through the path.
    let raw = format!(
        "GET /notes?q=%0D%0A%7B%22forged%22%3Atrue%7D%E2%80%A8&password={} HTTP/1.1\r\nHost: a\r\nX-Note: a\u{2028}{{\"forged\":true}}\u{85}b %0D%0A{{\"forged\":1}}\r\nX-Api-Key: {api_key}\r\nConnection: close\r\n\r\n",
        c.plant("forging password")
    );
    let r = raw_exchange(gw.listen, raw.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(r.status(), Some(200), "{}", r.text());
    let r = raw_exchange(
        gw.listen,
        b"GET /x%0D%0A%7B%22forged%22:1%7D%E2%80%A8 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.status(), Some(400), "{}", r.text());

    // The webhook gets the alerts (the folded ones after the 1 s window), then the
    // gateway stops, flushing its log.
    let start = Instant::now();
    let wanted = ["invalid_token", "csrf_rejected", "rate_limited"];
    let got = loop {
        let got = alerts(&hook).await;
        let kinds: Vec<&str> = got.iter().filter_map(|(_, v)| v["kind"].as_str()).collect();
        let folded = got
            .iter()
            .any(|(_, v)| v["kind"] == "invalid_token" && v["count"].as_u64() > Some(1));
        if (wanted.iter().all(|k| kinds.contains(k)) && folded)
            || start.elapsed() > Duration::from_secs(15)
        {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<&str> = got.iter().filter_map(|(_, v)| v["kind"].as_str()).collect();
    for k in wanted {
        assert!(kinds.contains(&k), "no {k} alert: {got:?}");
    }
    gw.terminate();
    assert!(
        gw.wait_exit(Duration::from_secs(15)).is_some(),
        "the gateway stops on SIGTERM"
    );

    // Nothing leaked, and every line is one JSON object.
    for (body, _) in &got {
        c.assert_absent("an alert", body);
    }
    let files = log_files(&s.log_dir);
    assert!(!files.is_empty(), "no log file in {}", s.log_dir.display());
    let mut lines = Vec::new();
    for f in &files {
        let text = read(f);
        c.assert_absent(&format!("log file {}", f.display()), &text);
        lines.extend(assert_json_lines(&f.display().to_string(), &text));
    }
    let audit = read(&s.audit_file);
    c.assert_absent("the audit file", &audit);
    let records = assert_json_lines("the audit file", &audit);
    c.assert_absent("the gateway's stdout", &gw.stdout_lines().join("\n"));
    c.assert_absent("the gateway's stderr", &gw.stderr_lines().join("\n"));

    // The test saw what it meant to: debug lines with redacted headers, the refusals, the
    // truncated kid, the escaped forgery attempts, the admin change, and the audit trail.
    let headers_logged = lines
        .iter()
        .filter(|l| l["msg"] == "request headers")
        .count();
    assert!(headers_logged >= 15, "debug header lines: {headers_logged}");
    let notes: Vec<Value> = lines
        .iter()
        .filter(|l| l["msg"] == "request headers")
        .filter_map(|l| serde_json::from_str::<Value>(l["headers"].as_str()?).ok())
        .filter(|h| h.get("x-note").is_some())
        .collect();
    assert_eq!(
        notes.len(),
        1,
        "the header with U+2028 and NEL is logged once"
    );
    assert_eq!(
        notes[0]["x-note"], "a\u{2028}{\"forged\":true}\u{85}b %0D%0A{\"forged\":1}",
        "logged whole, inside its line"
    );
    for reason in ["csrf", "quota-exceeded", "invalid-token", "invalid-body"] {
        assert!(
            lines
                .iter()
                .any(|l| l["target"] == "portcullis::access" && l["reason"] == reason),
            "no access line with reason {reason}"
        );
    }
    let kid_logged = format!("kid=kid-{}", "k".repeat(124));
    let invalid: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "invalid_token")
        .filter_map(|l| l["detail"].as_str())
        .collect();
    assert!(
        invalid
            .iter()
            .any(|d| d.ends_with(&kid_logged) && !d.contains(&format!("{kid_logged}k"))),
        "the untrusted kid is logged, truncated to 128 characters: {invalid:?}"
    );
    assert!(
        invalid
            .iter()
            .any(|d| d.contains("kid=k\r\n{\"forged\":true") && d.contains('\u{2028}')),
        "the evil kid is logged, escaped, inside its line: {invalid:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "cache.purge" && l.to_string().contains("[redacted]")),
        "the admin change is logged, its secret query parameters redacted"
    );
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default(),
                r["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for want in [
        ("login", "failed"),
        ("login", "ok"),
        ("route.request", "200"),
        ("cache.purge", "ok"),
    ] {
        assert!(actions.contains(&want), "audit lacks {want:?}: {actions:?}");
    }
    let out = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["audit", "verify", s.audit_file.to_str().unwrap()])
        .run(Duration::from_secs(20));
    assert_eq!(out.code, Some(0), "{out:?}");
    drop(s.dir);
}
