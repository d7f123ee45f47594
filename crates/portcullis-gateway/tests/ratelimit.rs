//! Rate limiting end to end: gateway processes, a recording upstream, a real Redis shared
//! by several instances, killed and restarted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_core::auth::password;
use portcullis_core::auth::username::canonicalize;
use portcullis_core::auth::users::{Role, UsersFile};
use portcullis_core::token::KeySet;
use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::{FAST_BREAKER_ENV, GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, Reply};
use portcullis_testkit::redis::RedisServer;
use portcullis_testkit::upstream::Upstream;
use serde_json::{Value, json};

const ADMIN_PW: &str = "admin pass phrase 42";
const ALICE_PW: &str = "correct horse battery";

/// A directory with a signing key and a users file, shared by every instance of a test.
struct Setup {
    dir: TempDir,
    key_file: PathBuf,
    users_file: PathBuf,
}

fn setup(label: &str) -> Setup {
    let dir = TempDir::new(label);
    let key_file = dir.write("signing.pem", KeySet::generate_pem().unwrap());
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
        dir,
        key_file,
        users_file,
    }
}

fn gateway(
    s: &Setup,
    config: &str,
    up: &Upstream,
    redis: Option<&RedisServer>,
    env: &[(&str, &str)],
) -> GatewayProcess {
    let cfg = s.dir.write("gw.toml", config);
    let mut cmd = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .args(["--upstream", &up.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env(
            "PORTCULLIS_AUTH_SIGNING_KEY_FILE",
            s.key_file.to_str().unwrap(),
        )
        .env("PORTCULLIS_AUTH_USERS_FILE", s.users_file.to_str().unwrap());
    if let Some(r) = redis {
        cmd = cmd.args(["--redis-url", &r.url()]);
        for (k, v) in FAST_BREAKER_ENV {
            cmd = cmd.env(k, v);
        }
    }
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.start()
}

async fn send(
    client: &Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    client.send_json(method, url, headers, body.as_ref()).await
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(&Client::new(), "GET", url, headers, None).await
}

async fn token(gw: &GatewayProcess, user: &str, pw: &str, headers: &[(&str, &str)]) -> String {
    let r = send(
        &Client::new(),
        "POST",
        &gw.url("/auth/login"),
        headers,
        Some(json!({ "username": user, "password": pw })),
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "login of {user}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["access_token"].as_str().unwrap().to_owned()
}

async fn admin(
    gw: &GatewayProcess,
    bearer: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let auth = format!("Bearer {bearer}");
    send(
        &Client::new(),
        method,
        &gw.admin_url(path),
        &[("authorization", &auth)],
        body,
    )
    .await
}

async fn metrics(gw: &GatewayProcess) -> String {
    String::from_utf8_lossy(&get(&gw.admin_url("/metrics"), &[]).await.body).into_owned()
}

/// The value of one sample of the metrics text, 0 when absent.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn assert_quota_exceeded(r: &Reply, policy: &str) {
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "a 429 is problem+json"
    );
    let body = r.json();
    assert_eq!(
        body["type"], "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "the draft's problem type: {body}"
    );
    assert_eq!(body["status"], 429);
    assert_eq!(body["violated-policies"], json!([policy]), "{body}");
    let id = body["request_id"]
        .as_str()
        .expect("the 429 names the request");
    assert_eq!(r.header("x-request-id"), Some(id));
    let wait: u64 = r
        .header("retry-after")
        .expect("a 429 has Retry-After")
        .parse()
        .expect("Retry-After in delta-seconds");
    assert!(wait >= 1, "Retry-After {wait}");
}

/// 200 concurrent requests, half to each of two instances sharing a Redis, against a
/// quota of 20: exactly 20 pass, and only those reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_admit_exactly_the_quota() {
    let s = setup("rl-exact");
    let redis = RedisServer::start();
    let up = Upstream::start();
    let config = r#"
instances = 2
[[routes]]
name = "exact"
path = "/exact/**"
rate_limit = { limit = 20, per = "1h", key = "ip" }
"#;
    let a = gateway(&s, config, &up, Some(&redis), &[]);
    let b = gateway(&s, config, &up, Some(&redis), &[]);
    let client = Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let url = if i % 2 == 0 {
            a.url("/exact/x")
        } else {
            b.url("/exact/x")
        };
        let client = client.clone();
        tasks.spawn(async move { (i % 2, send(&client, "GET", &url, &[], None).await) });
    }
    let mut by: BTreeMap<(usize, u16), u32> = BTreeMap::new();
    let mut refused = None;
    while let Some(r) = tasks.join_next().await {
        let (inst, reply) = r.unwrap();
        *by.entry((inst, reply.status.as_u16())).or_default() += 1;
        if reply.status == 429 {
            refused = Some(reply);
        }
    }
    let allowed: u32 = by
        .iter()
        .filter(|((_, s), _)| *s == 200)
        .map(|(_, n)| n)
        .sum();
    let limited: u32 = by
        .iter()
        .filter(|((_, s), _)| *s == 429)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        (allowed, limited),
        (20, 180),
        "by (instance, status): {by:?}"
    );
    let upstream = up
        .requests()
        .await
        .into_iter()
        .filter(|r| r["path"] == "/exact/x")
        .count();
    assert_eq!(upstream, 20, "only admitted requests reach the upstream");
    let refused = refused.unwrap();
    assert_quota_exceeded(&refused, "exact");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"exact\";q=20;w=3600")
    );
    let state = refused.header("ratelimit").unwrap();
    assert!(state.starts_with("\"exact\";r=0;t="), "{state}");
    // Each instance answered its half: one quota of 20 for both, not 20 each.
    for inst in 0..2 {
        let answered: u32 = by
            .iter()
            .filter(|((i, _), _)| *i == inst)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(answered, 100, "instance {inst}: {by:?}");
    }
    let m = format!("{}{}", metrics(&a).await, metrics(&b).await);
    assert_eq!(
        sample(
            &m,
            "portcullis_ratelimit_decisions_total",
            &[("policy", "exact"), ("decision", "allowed")]
        ),
        20
    );
    assert_eq!(
        sample(
            &m,
            "portcullis_ratelimit_decisions_total",
            &[("policy", "exact"), ("decision", "limited")]
        ),
        180
    );
}

/// The remaining count of a `RateLimit` header.
fn remaining(r: &Reply) -> u32 {
    let h = r
        .header("ratelimit")
        .unwrap_or_else(|| panic!("no RateLimit header ({})", r.status));
    h.split(';')
        .find_map(|p| p.strip_prefix("r="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad RateLimit {h:?}"))
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let s = setup("rl-xff");
    let up = Upstream::start();
    let tiers = r#"
[rate_limit.tiers]
anonymous = { limit = 5, per = "1h" }
"#;
    // Not trusted: every request is the peer's, whatever it claims.
    let direct = gateway(&s, tiers, &up, None, &[]);
    for i in 0..5 {
        let xff = format!("198.51.100.{i}");
        let r = get(&direct.url("/x"), &[("x-forwarded-for", &xff)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(remaining(&r), 4 - i);
    }
    let r = get(&direct.url("/x"), &[("x-forwarded-for", "198.51.100.77")]).await;
    assert_quota_exceeded(&r, "anonymous");

    // Behind a trusted proxy: the right-most address that is not a proxy is the client.
    let trusted = format!("trusted_proxies = [\"127.0.0.0/8\"]\n{tiers}");
    let proxied = gateway(&s, &trusted, &up, None, &[]);
    for _ in 0..5 {
        let r = get(&proxied.url("/x"), &[("x-forwarded-for", "198.51.100.1")]).await;
        assert_eq!(r.status, 200);
    }
    let r = get(&proxied.url("/x"), &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_quota_exceeded(&r, "anonymous");
    // A spoofed left-most entry does not escape the quota; a trusted hop is skipped.
    for xff in ["203.0.113.9, 198.51.100.1", "198.51.100.1, 127.0.0.5"] {
        let r = get(&proxied.url("/x"), &[("x-forwarded-for", xff)]).await;
        assert_eq!(r.status, 429, "{xff}");
    }
    let r = get(&proxied.url("/x"), &[("x-forwarded-for", "198.51.100.2")]).await;
    assert_eq!(r.status, 200, "another client has its own quota");
    assert_eq!(remaining(&r), 4);
    // The peer itself was never counted.
    let r = get(&proxied.url("/x"), &[]).await;
    assert_eq!((r.status.as_u16(), remaining(&r)), (200, 4));
}

#[tokio::test]
async fn addresses_in_one_ipv6_prefix_share_a_quota() {
    let s = setup("rl-v6");
    let up = Upstream::start();
    let config = r#"
trusted_proxies = ["127.0.0.1/32"]
[rate_limit.tiers]
anonymous = { limit = 10, per = "1h" }
"#;
    let gw = gateway(&s, config, &up, None, &[]);
    let client = Client::new();
    let mut allowed = 0;
    // 256 addresses in 2001:db8:0:0::/56 (the fourth group runs 0x00..=0xff).
    for i in 0..256u32 {
        let addr = format!("2001:db8:0:{i:x}::{:x}", i + 1);
        let r = send(
            &client,
            "GET",
            &gw.url("/x"),
            &[("x-forwarded-for", &addr)],
            None,
        )
        .await;
        match r.status.as_u16() {
            200 => allowed += 1,
            429 => {}
            other => panic!("{addr}: {other}"),
        }
    }
    assert_eq!(allowed, 10, "one /56 is one client");
    let r = get(&gw.url("/x"), &[("x-forwarded-for", "2001:db8:0:100::1")]).await;
    assert_eq!(
        (r.status.as_u16(), remaining(&r)),
        (200, 9),
        "the next /56 is another client"
    );
    // An IPv4-mapped IPv6 address is its IPv4 address.
    let r = get(&gw.url("/x"), &[("x-forwarded-for", "::ffff:203.0.113.7")]).await;
    assert_eq!((r.status.as_u16(), remaining(&r)), (200, 9));
    let r = get(&gw.url("/x"), &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!((r.status.as_u16(), remaining(&r)), (200, 8));
}

/// Waits until `f` holds, polling every 20 ms; how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_and_resets_reach_every_instance_and_expire() {
    let s = setup("rl-override");
    let redis = RedisServer::start();
    let up = Upstream::start();
    let config = r#"
instances = 2
trusted_proxies = ["127.0.0.1/32"]
[rate_limit.tiers]
anonymous = { limit = 3, per = "1h" }
"#;
    let a = gateway(&s, config, &up, Some(&redis), &[]);
    let b = gateway(&s, config, &up, Some(&redis), &[]);
    let root = token(&a, "admin", ADMIN_PW, &[]).await;
    let client = Client::new();
    let xff = [("x-forwarded-for", "198.51.100.20")];
    let on_b = || {
        let client = client.clone();
        let url = b.url("/x");
        async move { send(&client, "GET", &url, &xff, None).await }
    };
    for _ in 0..3 {
        assert_eq!(on_b().await.status, 200);
    }
    assert_quota_exceeded(&on_b().await, "anonymous");

    // Raise the key's quota on A; B applies it within a second, keeping the key's state
    // (3 used of 10).
    let r = admin(
        &a,
        &root,
        "PUT",
        "/admin/rate-limits/overrides/ip:198.51.100.20",
        Some(json!({ "limit": 10, "per": "1h", "expires_in": "10m" })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["limit"], 10);
    let took = within(Duration::from_secs(1), "override applied on B", || async {
        on_b().await.status == 200
    })
    .await;
    eprintln!("override applied on the other instance after {took:?}");
    let mut allowed = 1;
    loop {
        let r = on_b().await;
        if r.status != 200 {
            assert_quota_exceeded(&r, "anonymous");
            assert_eq!(
                r.header("ratelimit-policy"),
                Some("\"anonymous\";q=10;w=3600")
            );
            break;
        }
        allowed += 1;
        assert!(allowed <= 7);
    }
    assert_eq!(allowed, 7, "the raised quota counts what was used before");
    let got = admin(
        &b,
        &root,
        "GET",
        "/admin/rate-limits/overrides/ip:198.51.100.20",
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["set_by"], "admin");

    // A counter reset on A: B, which remembers the key as over its limit, lets it
    // through again within a second.
    let r = admin(
        &a,
        &root,
        "DELETE",
        "/admin/rate-limits/counters/ip:198.51.100.20",
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    within(Duration::from_secs(1), "reset seen on B", || async {
        on_b().await.status == 200
    })
    .await;

    // Remove the override: back to 3, and the key has used more than that since the reset.
    let r = admin(
        &a,
        &root,
        "DELETE",
        "/admin/rate-limits/overrides/ip:198.51.100.20",
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    let r = admin(
        &a,
        &root,
        "DELETE",
        "/admin/rate-limits/overrides/ip:198.51.100.20",
        None,
    )
    .await;
    assert_eq!(r.status, 404, "removed twice");
    for _ in 0..3 {
        on_b().await;
    }
    within(Duration::from_secs(1), "override removed on B", || async {
        on_b().await.status == 429
    })
    .await;

    // An exemption: not counted, then gone by itself.
    let r = admin(
        &a,
        &root,
        "PUT",
        "/admin/rate-limits/overrides/ip:198.51.100.0/24",
        Some(json!({ "exempt": true, "expires_in": "2s" })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    within(Duration::from_secs(1), "exemption on B", || async {
        on_b().await.status == 200
    })
    .await;
    let before = up.requests().await.len();
    for _ in 0..20 {
        let r = on_b().await;
        assert_eq!(r.status, 200);
        assert!(
            r.header("ratelimit").is_none(),
            "an exempt key has no quota to show"
        );
    }
    assert_eq!(up.requests().await.len(), before + 20);
    within(Duration::from_secs(4), "exemption expired", || async {
        admin(
            &b,
            &root,
            "GET",
            "/admin/rate-limits/overrides/ip:198.51.100.0/24",
            None,
        )
        .await
        .status
            == 404
    })
    .await;
    within(
        Duration::from_secs(1),
        "limits again after expiry",
        || async { on_b().await.status == 429 },
    )
    .await;
    let list = admin(&a, &root, "GET", "/admin/rate-limits/overrides", None).await;
    assert_eq!(list.json()["overrides"], json!([]));

    // Every change is an audit record naming the actor, the key, old and new (the
    // admin's login is audited too).
    let audit: Vec<Value> = a
        .json_lines()
        .into_iter()
        .filter(|l| l["target"] == "portcullis::audit" && l["action"] != "login")
        .collect();
    let actions: Vec<&str> = audit.iter().filter_map(|l| l["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "rate_limit.override.set",
            "rate_limit.counters.reset",
            "rate_limit.override.remove",
            "rate_limit.override.set"
        ],
        "{audit:?}"
    );
    assert!(audit.iter().all(|l| l["actor"] == "admin"));
    assert_eq!(audit[0]["resource"], "ip:198.51.100.20");
    assert!(audit[0]["old"].as_str().unwrap().contains("null"));
    assert!(audit[0]["new"].as_str().unwrap().contains("\"limit\":10"));
    assert!(audit[2]["old"].as_str().unwrap().contains("\"limit\":10"));
}

#[tokio::test]
async fn the_admin_api_refuses_bad_input_and_callers_without_the_admin_role() {
    let s = setup("rl-admin");
    let up = Upstream::start();
    let gw = gateway(&s, "", &up, None, &[]);
    let root = token(&gw, "admin", ADMIN_PW, &[]).await;
    let alice = token(&gw, "alice", ALICE_PW, &[]).await;
    let path = "/admin/rate-limits/overrides/subject:alice";
    let ok = json!({ "limit": 5, "per": "1m", "expires_in": "1m" });

    let r = send(
        &Client::new(),
        "PUT",
        &gw.admin_url(path),
        &[],
        Some(ok.clone()),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        admin(&gw, &alice, "PUT", path, Some(ok.clone()))
            .await
            .status,
        403
    );
    for (key, why) in [
        ("nobody", "a key is subject:"),
        ("ip:not-an-address", "not an address"),
        ("subject:", "subject:<name>"),
    ] {
        let r = admin(
            &gw,
            &root,
            "PUT",
            &format!("/admin/rate-limits/overrides/{key}"),
            Some(ok.clone()),
        )
        .await;
        assert_eq!(r.status, 400, "{key}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(
            r.json()["detail"].as_str().unwrap().contains(why),
            "{key}: {}",
            r.json()
        );
    }
    for (body, why) in [
        (json!({ "limit": 5, "per": "1m" }), "expires_in"),
        (
            json!({ "limit": 0, "per": "1m", "expires_in": "1m" }),
            "limit",
        ),
        (
            json!({ "limit": 5, "per": "soon", "expires_in": "1m" }),
            "per",
        ),
        (
            json!({ "limit": 5, "per": "1m", "expires_in": "0s" }),
            "expires_in",
        ),
        (
            json!({ "limit": 5, "per": "1m", "expires_in": "90d" }),
            "at most 30d",
        ),
        (
            json!({ "exempt": true, "limit": 5, "expires_in": "1m" }),
            "exemption takes no limit",
        ),
        (
            json!({ "limit": 5, "per": "1m", "expires_in": "1m", "extra": 1 }),
            "unknown field",
        ),
    ] {
        let r = admin(&gw, &root, "PUT", path, Some(body.clone())).await;
        assert_eq!(r.status, 422, "{body}");
        assert!(
            r.json()["detail"].as_str().unwrap().contains(why),
            "{body}: {}",
            r.json()
        );
    }
    let not_json = Request::put(gw.admin_url(path))
        .header("authorization", format!("Bearer {root}"))
        .body(Full::new(Bytes::from_static(b"{limit: 5")))
        .unwrap();
    let r = Client::new().send(not_json).await.unwrap();
    assert_eq!(r.status, 400, "not JSON at all");
    assert_eq!(
        admin(&gw, &root, "GET", path, None).await.status,
        404,
        "nothing was half-applied"
    );
    // An address is keyed as the limiter keys it: an IPv6 address by its /56.
    let r = admin(
        &gw,
        &root,
        "PUT",
        "/admin/rate-limits/overrides/ip:2001:db8:0:42::1",
        Some(ok.clone()),
    )
    .await;
    assert_eq!(r.json()["key"], "ip:2001:db8::/56");
    // A lowered quota for alice applies from her next request.
    assert_eq!(
        admin(&gw, &root, "PUT", path, Some(ok.clone()))
            .await
            .status,
        200
    );
    let bearer = format!("Bearer {alice}");
    let r = get(&gw.url("/x"), &[("authorization", &bearer)]).await;
    assert_eq!(r.header("ratelimit-policy"), Some("\"user\";q=5;w=60"));
}

#[tokio::test]
async fn tiers_follow_the_best_role_and_bad_tokens_count_as_anonymous() {
    let s = setup("rl-tiers");
    let up = Upstream::start();
    let config = r#"
[rate_limit.tiers]
anonymous = { limit = 4, per = "1h" }
user = { limit = 100, per = "1h" }
admin = { limit = 1000, per = "1h" }

[[routes]]
name = "members"
path = "/members/**"
rate_limit = { limit = 2, per = "1h", key = "subject" }
"#;
    let gw = gateway(&s, config, &up, None, &[]);
    // Logins are anonymous requests: /auth/* shares the anonymous bucket.
    let alice = token(&gw, "alice", ALICE_PW, &[]).await;
    let root = token(&gw, "admin", ADMIN_PW, &[]).await;
    let r = get(&gw.url("/x"), &[]).await;
    assert_eq!((r.status.as_u16(), remaining(&r)), (200, 1));

    let r = get(
        &gw.url("/x"),
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await;
    assert_eq!(r.header("ratelimit-policy"), Some("\"user\";q=100;w=3600"));
    let r = get(
        &gw.url("/x"),
        &[("authorization", &format!("Bearer {root}"))],
    )
    .await;
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"admin\";q=1000;w=3600"),
        "the best role wins"
    );

    // A bad token uses up the address's anonymous quota before it is refused.
    let r = get(&gw.url("/x"), &[("authorization", "Bearer not.a.token")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(remaining(&r), 0);
    let r = get(&gw.url("/x"), &[("authorization", "Bearer not.a.token")]).await;
    assert_quota_exceeded(&r, "anonymous");
    assert_eq!(get(&gw.url("/x"), &[]).await.status, 429);
    let r = get(
        &gw.url("/x"),
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await;
    assert_eq!(r.status, 200, "identified callers have their own bucket");
    // `key = "subject"`: identified callers get the route's quota, the others their tier.
    let r = get(
        &gw.url("/members/a"),
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await;
    assert_eq!(r.header("ratelimit-policy"), Some("\"members\";q=2;w=3600"));
    assert_quota_exceeded(&get(&gw.url("/members/a"), &[]).await, "anonymous");
    // One rate_limited event per key, however many refusals.
    let events = admin(&gw, &root, "GET", "/admin/security-events", None)
        .await
        .json();
    let limited: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 1, "{events}");
}

#[tokio::test]
async fn failures_only_routes_count_answers_of_400_and_above() {
    let s = setup("rl-failures");
    let up = Upstream::start();
    let config = r#"
[[routes]]
name = "signin"
path = "/signin"
methods = ["POST"]
rate_limit = { limit = 3, per = "1h", key = "ip" }
count = "failures"
"#;
    let gw = gateway(&s, config, &up, None, &[]);
    let client = Client::new();
    let post = |status: &'static str| {
        let client = client.clone();
        let url = gw.url("/signin");
        async move {
            send(
                &client,
                "POST",
                &url,
                &[("x-upstream-status", status)],
                None,
            )
            .await
        }
    };
    for _ in 0..10 {
        assert_eq!(post("200").await.status, 200, "successes are not counted");
    }
    for i in 0..3 {
        let r = post("401").await;
        assert_eq!(r.status, 401);
        assert_eq!(remaining(&r), 2 - i, "what is left if this one counts");
    }
    let r = post("200").await;
    assert_quota_exceeded(&r, "signin");
    let seen = up
        .requests()
        .await
        .into_iter()
        .filter(|r| r["path"] == "/signin")
        .count();
    assert_eq!(seen, 13, "the refused request never reached the upstream");
}

#[tokio::test]
async fn header_styles() {
    let s = setup("rl-headers");
    let up = Upstream::start();
    for (style, draft, legacy) in [
        ("draft", true, false),
        ("legacy", false, true),
        ("both", true, true),
        ("none", false, false),
    ] {
        let gw = gateway(
            &s,
            "",
            &up,
            None,
            &[("PORTCULLIS_RATE_LIMIT_HEADERS", style)],
        );
        let r = get(&gw.url("/x"), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-policy").is_some(), draft, "{style}");
        assert_eq!(r.header("ratelimit").is_some(), draft, "{style}");
        assert_eq!(r.header("x-ratelimit-limit").is_some(), legacy, "{style}");
        if legacy {
            assert_eq!(r.header("x-ratelimit-limit"), Some("60"));
            assert_eq!(
                r.header("x-ratelimit-remaining"),
                Some("19"),
                "burst 20, one used"
            );
            let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert!(
                (now..=now + 2).contains(&reset),
                "the Unix time: {reset} vs {now}"
            );
        }
        if draft {
            assert_eq!(
                r.header("ratelimit-policy"),
                Some("\"anonymous\";q=60;w=60")
            );
            assert_eq!(r.header("ratelimit"), Some("\"anonymous\";r=19;t=1"));
        }
    }
}

/// Redis is killed while two instances take traffic: `deny` routes answer 503 with
/// `Retry-After`, the others go on with each instance's share of the quota, and the
/// breaker closes again once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load() {
    let s = setup("rl-outage");
    let mut redis = RedisServer::start();
    let up = Upstream::start();
    let config = r#"
instances = 2
[[routes]]
name = "open"
path = "/open/**"
rate_limit = { limit = 40, per = "1h", key = "ip" }

[[routes]]
name = "strict"
path = "/strict/**"
rate_limit = { limit = 1000, per = "1h", key = "ip" }
on_redis_down = "deny"
"#;
    let gws = [
        gateway(&s, config, &up, Some(&redis), &[]),
        gateway(&s, config, &up, Some(&redis), &[]),
    ];
    let client = Client::new();
    // Healthy: 10 on each instance.
    for gw in &gws {
        for _ in 0..10 {
            assert_eq!(
                send(&client, "GET", &gw.url("/open/a"), &[], None)
                    .await
                    .status,
                200
            );
            assert_eq!(
                send(&client, "GET", &gw.url("/strict/a"), &[], None)
                    .await
                    .status,
                200
            );
        }
    }
    redis.kill();
    let mut allowed = [0u32; 2];
    let mut statuses: BTreeMap<(&str, u16), u32> = BTreeMap::new();
    for _ in 0..40 {
        for (i, gw) in gws.iter().enumerate() {
            let r = send(&client, "GET", &gw.url("/open/a"), &[], None).await;
            *statuses.entry(("open", r.status.as_u16())).or_default() += 1;
            if r.status == 200 {
                allowed[i] += 1;
            }
            let r = send(&client, "GET", &gw.url("/strict/a"), &[], None).await;
            *statuses.entry(("strict", r.status.as_u16())).or_default() += 1;
            if r.status == 503 {
                assert_eq!(r.header("retry-after"), Some("5"));
                assert_eq!(r.header("content-type"), Some("application/problem+json"));
            }
        }
    }
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [("open", 200), ("open", 429), ("strict", 503)],
        "only the declared 503s: {statuses:?}"
    );
    assert_eq!(
        allowed,
        [20, 20],
        "each instance admits its share (40 / 2 instances)"
    );
    for gw in &gws {
        let m = metrics(gw).await;
        let get = |d| {
            sample(
                &m,
                "portcullis_ratelimit_decisions_total",
                &[("policy", "open"), ("decision", d)],
            )
        };
        assert_eq!((get("fallback_allowed"), get("fallback_limited")), (20, 20));
    }

    redis.restart();
    for gw in &gws {
        within(Duration::from_secs(10), "breaker closed", || async {
            let r = get(&gw.admin_url("/readyz"), &[]).await.json();
            r["components"]["store"]["breaker"] == "closed"
        })
        .await;
        within(
            Duration::from_secs(5),
            "strict route served again",
            || async {
                send(&client, "GET", &gw.url("/strict/a"), &[], None)
                    .await
                    .status
                    == 200
            },
        )
        .await;
    }
}

#[test]
fn docs_command_prints_every_policy() {
    let s = setup("rl-docs");
    let cfg = s.dir.write(
        "docs.toml",
        r#"
[rate_limit.tiers]
anonymous = { limit = 30, per = "1m", burst = 10 }
partner = { limit = 5000, per = "1h" }

[[routes]]
name = "login"
path = "/auth/login"
rate_limit = { limit = 5, per = "15m", key = "ip" }
count = "failures"
on_redis_down = "deny"
"#,
    );
    let out = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["docs", "rate-limits", "--config", cfg.to_str().unwrap()])
        .run(Duration::from_secs(20));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let md = out.stdout;
    for want in [
        "| `login` |",
        "`/auth/login`",
        "| address |",
        "5 per 15m",
        "failures",
        "deny",
        "| `partner` |",
        "5000 per 1h",
        "| `anonymous` |",
        "30 per 1m",
        "burst 10",
        "RateLimit-Policy",
    ] {
        assert!(md.contains(want), "missing {want:?} in:\n{md}");
    }
    let bad = s
        .dir
        .write("bad.toml", "[rate_limit.tiers]\nuser = { per = \"1m\" }\n");
    let out = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["docs", "rate-limits", "--config", bad.to_str().unwrap()])
        .run(Duration::from_secs(20));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("rate_limit.tiers.user.limit"),
        "{}",
        out.stderr
    );
}
