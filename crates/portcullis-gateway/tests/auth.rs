//! Identity end to end: the gateway binary, a recording upstream, real tokens.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_core::auth::password;
use portcullis_core::auth::username::canonicalize;
use portcullis_core::auth::users::{Role, UsersFile};
use portcullis_core::token::{AccessClaims, KeySet};
use portcullis_core::{ManualClock, SystemClock};
use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, Reply};
use portcullis_testkit::redis::RedisServer;
use portcullis_testkit::upstream::Upstream;
use serde_json::{Value, json};

const ALICE_PW: &str = "correct horse battery";
const ADMIN_PW: &str = "admin pass phrase 42";

struct Setup {
    dir: TempDir,
    key_file: PathBuf,
    users_file: PathBuf,
    keys: KeySet,
}

fn setup() -> Setup {
    let dir = TempDir::new("auth");
    let pem = KeySet::generate_pem().unwrap();
    let key_file = dir.write("signing.pem", &pem);
    let mut users = UsersFile::new();
    for (name, pw, roles) in [
        ("alice", ALICE_PW, vec!["user"]),
        ("admin", ADMIN_PW, vec!["user", "admin"]),
    ] {
        let roles = roles.into_iter().map(|r| Role::new(r).unwrap()).collect();
        users
            .upsert(
                canonicalize(name).unwrap(),
                password::hash(pw).unwrap(),
                roles,
            )
            .unwrap();
    }
    let users_file = dir.path().join("users.toml");
    users.save(&users_file).unwrap();
    Setup {
        keys: KeySet::from_pem(&pem).unwrap(),
        dir,
        key_file,
        users_file,
    }
}

/// These tests send many anonymous and bad-token requests from one address; the anonymous
/// quota is raised so that they test identity (rate limits are tested in ratelimit.rs).
const ROUTES: &str = r#"
[rate_limit.tiers]
anonymous = { limit = 10000, per = "1m" }

[[routes]]
name = "admin-area"
path = "/admin-area/**"
roles = ["admin"]

[[routes]]
name = "members"
path = "/members/**"
roles = ["user"]
"#;

fn gateway(s: &Setup, up: &Upstream, extra: &[(&str, &str)]) -> GatewayProcess {
    let cfg = s.dir.write("gw.toml", ROUTES);
    let mut cmd = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--upstream",
            &up.url(),
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env(
            "PORTCULLIS_AUTH_SIGNING_KEY_FILE",
            s.key_file.to_str().unwrap(),
        )
        .env("PORTCULLIS_AUTH_USERS_FILE", s.users_file.to_str().unwrap());
    for (k, v) in extra {
        cmd = cmd.env(k, v);
    }
    cmd.start()
}

async fn post_json(url: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Client::new()
        .send(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap()
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Client::new()
        .send(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

async fn login(gw: &GatewayProcess, user: &str, pw: &str, headers: &[(&str, &str)]) -> Reply {
    post_json(
        &gw.url("/auth/login"),
        json!({"username": user, "password": pw}),
        headers,
    )
    .await
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_call_refresh_logout() {
    let s = setup();
    let up = Upstream::start();
    let gw = gateway(&s, &up, &[]);
    let r = login(&gw, "Alice", ALICE_PW, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    // The upstream sees the verified identity; a client's own identity headers are gone.
    let r = get(
        &gw.url("/members/profile"),
        &[
            ("authorization", &bearer(&access)),
            ("x-auth-subject", "admin"),
            ("X_Auth_Roles", "admin"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("cache-control"),
        Some("private"),
        "authenticated answers are private"
    );
    let rec = up.requests().await.pop().unwrap();
    assert_eq!(rec["headers"]["x-auth-subject"], json!(["alice"]));
    assert_eq!(rec["headers"]["x-auth-roles"], json!(["user"]));
    assert!(rec["headers"].get("x_auth_roles").is_none());

    // Roles: alice is not an admin; nobody is nobody.
    let r = get(
        &gw.url("/admin-area/x"),
        &[("authorization", &bearer(&access))],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["type"],
        "https://portcullis.dev/problems/forbidden"
    );
    let r = get(&gw.url("/admin-area/x"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    // Refresh: a new pair; the old refresh token is spent.
    let r = post_json(
        &gw.url("/auth/refresh"),
        json!({"refresh_token": refresh}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let next = r.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next, refresh);

    // Logout with the access token: 204, then the token is refused.
    let r = post_json(
        &gw.url("/auth/logout"),
        json!({}),
        &[("authorization", &bearer(&access))],
    )
    .await;
    assert_eq!(r.status, 204);
    let r = get(
        &gw.url("/members/profile"),
        &[("authorization", &bearer(&access))],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    let r = post_json(
        &gw.url("/auth/refresh"),
        json!({"refresh_token": next}),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "the session's refresh token died with it");

    // The JWKS publishes the signing key.
    let jwks = get(&gw.url("/.well-known/jwks.json"), &[]).await.json();
    assert_eq!(jwks["keys"][0]["kid"], s.keys.signing_kid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_attack_table_never_reaches_the_upstream() {
    let s = setup();
    let up = Upstream::start();
    let gw = gateway(&s, &up, &[]);
    let clock = ManualClock::new();
    let good = AccessClaims::new(
        "alice",
        &["user".into()],
        "sid1",
        "portcullis",
        "api",
        &clock,
        Duration::from_secs(600),
    );
    let kid = s.keys.signing_kid().to_owned();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = |h: Value, c: &AccessClaims| {
        format!("{}.{}.", b64(&h), b64(&serde_json::to_value(c).unwrap()))
    };
    let jku_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    jku_listener.set_nonblocking(true).unwrap();
    let jku = format!("http://{}/jwks.json", jku_listener.local_addr().unwrap());
    let hs256 = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.clone());
        h.typ = Some("at+jwt".into());
        let x = s.keys.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
        jsonwebtoken::encode(
            &h,
            &good,
            &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let with = |f: &dyn Fn(&mut AccessClaims)| {
        let mut c = good.clone();
        f(&mut c);
        s.keys.sign(&c).unwrap()
    };
    let valid = s.keys.sign(&good).unwrap();
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            unsigned(json!({"alg": "none", "typ": "at+jwt", "kid": kid}), &good),
        ),
        ("HS256 with the public key", hs256),
        ("expired", with(&|c| c.exp = c.iat - 3600)),
        ("not yet valid", with(&|c| c.nbf = c.iat + 3600)),
        ("wrong iss", with(&|c| c.iss = "evil".into())),
        ("wrong aud", with(&|c| c.aud = "other".into())),
        (
            "wrong typ",
            unsigned(json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}), &good),
        ),
        (
            "unknown kid",
            KeySet::ephemeral().unwrap().sign(&good).unwrap(),
        ),
        (
            "kid with a path",
            unsigned(
                json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "../../../etc/passwd"}),
                &good,
            ),
        ),
        (
            "kid with SQL",
            unsigned(
                json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "x' OR '1'='1"}),
                &good,
            ),
        ),
        (
            "jku to a local listener",
            unsigned(
                json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jku": jku}),
                &good,
            ),
        ),
        ("truncated", valid[..valid.len() - 12].to_owned()),
        ("garbage", "definitely.not.ajwt".into()),
        ("empty", String::new()),
    ];
    for (name, token) in &cases {
        up.clear().await;
        let r = get(&gw.url("/open/x"), &[("authorization", &bearer(token))]).await;
        assert_eq!(
            r.status,
            401,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\""),
            "{name}"
        );
        assert_eq!(
            r.json()["type"],
            "https://portcullis.dev/problems/invalid-token",
            "{name}"
        );
        assert!(
            up.requests().await.is_empty(),
            "{name} reached the upstream"
        );
    }
    assert!(
        jku_listener.accept().is_err(),
        "a token's jku made the gateway connect"
    );
    // Two Authorization headers: refused, never proxied.
    let r = get(
        &gw.url("/open/x"),
        &[
            ("authorization", &bearer(&valid)),
            ("authorization", &bearer(&valid)),
        ],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(up.requests().await.is_empty());
    // The scheme matches in any case; the good token passes.
    let r = get(
        &gw.url("/open/x"),
        &[("authorization", &format!("bEARer {valid}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    // Each refusal is an invalid_token event with its reason, header values truncated.
    let line = gw
        .wait_for_line(Duration::from_secs(5), |v| {
            v["event"] == "invalid_token"
                && v["detail"].as_str().unwrap_or("").starts_with("algorithm")
        })
        .expect("invalid_token events");
    assert!(line["detail"].as_str().unwrap().contains("alg=none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_share_one_successor_and_reuse_kills_the_family() {
    let s = setup();
    let up = Upstream::start();
    let gw = gateway(&s, &up, &[("PORTCULLIS_AUTH_REFRESH_REUSE_GRACE", "2s")]);
    let body = login(&gw, "alice", ALICE_PW, &[]).await.json();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let url = gw.url("/auth/refresh");
    let (a, b) = tokio::join!(
        post_json(&url, json!({"refresh_token": refresh}), &[]),
        post_json(&url, json!({"refresh_token": refresh}), &[])
    );
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    let (ra, rb) = (
        a.json()["refresh_token"].clone(),
        b.json()["refresh_token"].clone(),
    );
    assert_eq!(ra, rb, "one successor, carried by both answers");
    let successor = ra.as_str().unwrap().to_owned();
    // The successor works (and rotates on).
    let c = post_json(&url, json!({"refresh_token": successor}), &[]).await;
    assert_eq!(c.status, 200);
    let latest = c.json()["refresh_token"].as_str().unwrap().to_owned();
    let latest_access = c.json()["access_token"].as_str().unwrap().to_owned();
    // The first token again, after the grace window: reuse.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = post_json(&url, json!({"refresh_token": refresh}), &[]).await;
    assert_eq!(r.status, 401);
    let r = post_json(&url, json!({"refresh_token": latest}), &[]).await;
    assert_eq!(r.status, 401, "the latest successor died with the family");
    let r = get(
        &gw.url("/members/x"),
        &[("authorization", &bearer(&latest_access))],
    )
    .await;
    assert_eq!(r.status, 401, "and so did its access token");
    assert!(
        gw.wait_for_line(Duration::from_secs(3), |v| v["event"] == "refresh_reuse")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_locks_the_pair_not_the_victim() {
    let s = setup();
    let up = Upstream::start();
    let gw = gateway(
        &s,
        &up,
        &[
            ("PORTCULLIS_TRUSTED_PROXIES", "127.0.0.0/8"),
            ("PORTCULLIS_AUTH_LOCKOUT_MAX_FAILURES", "3"),
            ("PORTCULLIS_AUTH_LOCKOUT_ACCOUNT_MAX_FAILURES", "12"),
            ("PORTCULLIS_AUTH_LOCKOUT_IP_MAX_FAILURES", "1000"),
        ],
    );
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for _ in 0..3 {
        let r = login(&gw, "alice", "wrong password", &from("203.0.113.66")).await;
        assert_eq!(r.status, 401);
    }
    // The attacker's pair is locked, even with the right password.
    let r = login(&gw, "alice", ALICE_PW, &from("203.0.113.66")).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    let locked_body = r.json();
    // Alice, from her own address, still gets in.
    let r = login(&gw, "alice", ALICE_PW, &from("198.51.100.7")).await;
    assert_eq!(r.status, 200);
    // Same answer for an account that does not exist.
    for _ in 0..3 {
        login(&gw, "nobody", "wrong password", &from("203.0.113.66")).await;
    }
    let r = login(&gw, "nobody", "whatever", &from("203.0.113.66")).await;
    assert_eq!(r.status, 429);
    let ghost = r.json();
    for k in ["type", "title", "status", "detail"] {
        assert_eq!(locked_body[k], ghost[k], "{k} tells the accounts apart");
    }
    // Look-alike spellings are the same account.
    let r = login(&gw, "ＡＬＩＣＥ", ALICE_PW, &from("203.0.113.66")).await;
    assert_eq!(r.status, 429, "a fullwidth spelling dodged the lock");
    // The per-account ceiling holds across many sources.
    for i in 0..12 {
        let ip = format!("192.0.2.{}", 10 + i);
        login(
            &gw,
            "alice",
            "wrong password",
            &[("x-forwarded-for", ip.as_str())],
        )
        .await;
    }
    let r = login(&gw, "alice", ALICE_PW, &from("198.51.100.99")).await;
    assert_eq!(r.status, 429, "the hourly ceiling of the account");
    assert!(
        gw.wait_for_line(Duration::from_secs(3), |v| v["event"] == "lockout")
            .is_some()
    );

    // An admin unlocks alice.
    let admin = login(&gw, "admin", ADMIN_PW, &from("198.51.100.50"))
        .await
        .json();
    let token = admin["access_token"].as_str().unwrap().to_owned();
    let r = post_json(
        &gw.admin_url("/admin/accounts/Alice/unlock"),
        json!({}),
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["unlocked"], true);
    let r = login(&gw, "alice", ALICE_PW, &from("203.0.113.66")).await;
    assert_eq!(r.status, 200);
    let events = get(
        &gw.admin_url("/admin/security-events?limit=1000"),
        &[("authorization", &bearer(&token))],
    )
    .await
    .json();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"lockout") && kinds.contains(&"login_throttled"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_admin_role_and_documents_itself() {
    let s = setup();
    let up = Upstream::start();
    let gw = gateway(&s, &up, &[]);
    let r = get(&gw.admin_url("/admin/security-events"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let alice = login(&gw, "alice", ALICE_PW, &[]).await.json();
    let r = get(
        &gw.admin_url("/admin/openapi.json"),
        &[(
            "authorization",
            &bearer(alice["access_token"].as_str().unwrap()),
        )],
    )
    .await;
    assert_eq!(r.status, 403);
    let admin = login(&gw, "admin", ADMIN_PW, &[]).await.json();
    let r = get(
        &gw.admin_url("/admin/openapi.json"),
        &[(
            "authorization",
            &bearer(admin["access_token"].as_str().unwrap()),
        )],
    )
    .await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/.well-known/jwks.json",
        "/admin/security-events",
        "/admin/accounts/{username}/unlock",
        "/admin/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} undocumented");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_instance_is_enforced_on_another_within_a_second() {
    let s = setup();
    let up = Upstream::start();
    let redis = RedisServer::start();
    let a = gateway(&s, &up, &[("PORTCULLIS_REDIS_URL", &redis.url())]);
    let b = gateway(&s, &up, &[("PORTCULLIS_REDIS_URL", &redis.url())]);
    let body = login(&a, "alice", ALICE_PW, &[]).await.json();
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&b.url("/members/x"), &[("authorization", &bearer(&access))])
            .await
            .status,
        200,
        "B verifies A's token"
    );
    let r = post_json(
        &a.url("/auth/logout"),
        json!({}),
        &[("authorization", &bearer(&access))],
    )
    .await;
    assert_eq!(r.status, 204);
    let logged_out = Instant::now();
    assert_eq!(
        get(&a.url("/members/x"), &[("authorization", &bearer(&access))])
            .await
            .status,
        401
    );
    loop {
        let st = get(&b.url("/members/x"), &[("authorization", &bearer(&access))])
            .await
            .status;
        if st == 401 {
            break;
        }
        assert!(
            logged_out.elapsed() < Duration::from_secs(1),
            "instance B still accepts the token after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("logout on A enforced on B after {:?}", logged_out.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_login_works_refresh_fails_closed_tokens_verify() {
    let s = setup();
    let up = Upstream::start();
    let mut redis = RedisServer::start();
    let gw = gateway(&s, &up, &[("PORTCULLIS_REDIS_URL", &redis.url())]);
    let before = login(&gw, "alice", ALICE_PW, &[]).await.json();
    redis.kill();
    let r = login(&gw, "alice", ALICE_PW, &[]).await;
    assert_eq!(r.status, 200, "login works while Redis is down");
    let r = post_json(
        &gw.url("/auth/refresh"),
        json!({"refresh_token": before["refresh_token"]}),
        &[],
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        r.json()["type"],
        "https://portcullis.dev/problems/store-unavailable"
    );
    let access = before["access_token"].as_str().unwrap();
    let r = get(&gw.url("/members/x"), &[("authorization", &bearer(access))]).await;
    assert_eq!(r.status, 200, "access tokens keep verifying");
    // Lockout counters are local meanwhile: failures still lock.
    for _ in 0..5 {
        login(&gw, "alice", "wrong", &[]).await;
    }
    assert_eq!(login(&gw, "alice", ALICE_PW, &[]).await.status, 429);
    let _ = SystemClock;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_guards_the_upstreams_own_login_route() {
    let s = setup();
    let up = Upstream::start();
    let cfg = s.dir.write(
        "login.toml",
        "[[routes]]\nname = \"app-login\"\npath = \"/app/login\"\nmethods = [\"POST\"]\nlogin = { username_field = \"email\" }\n",
    );
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--upstream",
            &up.url(),
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_AUTH_LOCKOUT_MAX_FAILURES", "3")
        .start();
    let attempt = |status: &'static str, body: Value| {
        let url = gw.url("/app/login");
        async move { post_json(&url, body, &[("x-upstream-status", status)]).await }
    };
    for _ in 0..3 {
        let r = attempt("401", json!({"email": "Bob@Example.com", "password": "x"})).await;
        assert_eq!(r.status, 401, "the upstream's own answer passes through");
    }
    assert_eq!(up.requests().await.len(), 3);
    let r = attempt(
        "200",
        json!({"email": "bob@example.com", "password": "right"}),
    )
    .await;
    assert_eq!(
        r.status, 429,
        "locked: even a right password is not sent on"
    );
    assert_eq!(
        up.requests().await.len(),
        3,
        "a locked attempt never reaches the upstream"
    );
    assert!(r.header("retry-after").is_some());
    // Another account from the same place is not affected; its body is forwarded intact.
    let r = attempt(
        "200",
        json!({"email": "carol@example.com", "password": "right"}),
    )
    .await;
    assert_eq!(r.status, 200);
    let rec = up.requests().await.pop().unwrap();
    assert_eq!(
        rec["body_bytes"],
        json!({"email": "carol@example.com", "password": "right"})
            .to_string()
            .len()
    );
    // A form body is read as well.
    let req = Request::post(gw.url("/app/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-upstream-status", "200")
        .body(Full::new(Bytes::from_static(
            b"email=BOB%40example.com&password=y",
        )))
        .unwrap();
    assert_eq!(
        Client::new().send(req).await.unwrap().status,
        429,
        "the form spelling is the same account"
    );
}

/// A JWK Set server that counts its hits.
fn jwks_server(body: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            h.fetch_add(1, Ordering::SeqCst);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
        }
    });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_issuer_tokens_verify_with_its_published_keys() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use std::sync::atomic::Ordering;
    let s = setup();
    let up = Upstream::start();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "idp-1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}]});
    let (url, hits) = jwks_server(jwks.to_string());
    let cfg = s.dir.write(
        "idp.toml",
        format!(
            "{ROUTES}\n[[auth.issuers]]\nissuer = \"https://idp.example\"\njwks_url = \"{url}\"\naudience = \"api\"\nalgorithms = [\"ES256\"]\nroles_claim = \"groups\"\n"
        ),
    );
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--upstream",
            &up.url(),
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env(
            "PORTCULLIS_AUTH_SIGNING_KEY_FILE",
            s.key_file.to_str().unwrap(),
        )
        .start();
    gw.wait_for_line(Duration::from_secs(5), |v| {
        v["msg"] == "fetched the issuer's keys"
    })
    .expect("the keys are fetched at start");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |kid: &str, claims: Value| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(
            &h,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
        .unwrap()
    };
    let claims = json!({"iss": "https://idp.example", "aud": ["api"], "sub": "ext-user", "exp": now + 300, "groups": ["admin", "user"]});
    let token = sign("idp-1", claims.clone());
    let r = get(
        &gw.url("/admin-area/x"),
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rec = up.requests().await.pop().unwrap();
    assert_eq!(rec["headers"]["x-auth-subject"], json!(["ext-user"]));
    assert_eq!(rec["headers"]["x-auth-roles"], json!(["admin,user"]));

    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("other");
    assert_eq!(
        get(
            &gw.url("/x"),
            &[("authorization", &bearer(&sign("idp-1", wrong_aud)))]
        )
        .await
        .status,
        401
    );
    let hs = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("idp-1".into());
        let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
        jsonwebtoken::encode(
            &h,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        get(&gw.url("/x"), &[("authorization", &bearer(&hs))])
            .await
            .status,
        401,
        "HMAC is never accepted"
    );

    // Unknown kids cause at most one refetch per interval.
    let before = hits.load(Ordering::SeqCst);
    for i in 0..20 {
        let t = sign(&format!("made-up-{i}"), claims.clone());
        assert_eq!(
            get(&gw.url("/x"), &[("authorization", &bearer(&t))])
                .await
                .status,
            401
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refetches = hits.load(Ordering::SeqCst) - before;
    assert!(refetches <= 1, "{refetches} refetches for 20 unknown kids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_mode_sets_host_cookies_and_reads_them_back() {
    let s = setup();
    let up = Upstream::start();
    let gw = gateway(&s, &up, &[("PORTCULLIS_AUTH_COOKIES", "true")]);
    let r = login(&gw, "alice", ALICE_PW, &[]).await;
    assert_eq!(r.status, 200);
    let cookies: Vec<String> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    for c in &cookies {
        assert!(c.starts_with("__Host-"), "{c}");
        for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{c} lacks {attr}");
        }
        assert!(!c.to_ascii_lowercase().contains("domain"), "{c}");
    }
    let jar = |name: &str| {
        cookies
            .iter()
            .find(|c| c.starts_with(name))
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_owned()
    };
    let access = jar("__Host-access=");
    let refresh = jar("__Host-refresh=");
    let r = get(
        &gw.url("/members/x"),
        &[("cookie", &format!("theme=dark; {access}"))],
    )
    .await;
    assert_eq!(r.status, 200, "the access cookie identifies the caller");
    assert_eq!(
        up.requests().await.pop().unwrap()["headers"]["x-auth-subject"],
        json!(["alice"])
    );
    let req = Request::post(gw.url("/auth/refresh"))
        .header("cookie", &refresh)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = Client::new().send(req).await.unwrap();
    assert_eq!(r.status, 200, "refresh from the cookie, with an empty body");
    assert_eq!(r.headers.get_all("set-cookie").iter().count(), 2);
}
