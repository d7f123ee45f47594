//! The response cache end to end: gateway processes in front of a recording upstream,
//! one alone and two sharing a real Redis, which is killed.
//!
//! The upstream echoes each request it receives, request id included, so a cached answer
//! is recognisable by its body: it names the request that filled the entry.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use portcullis_core::token::KeySet;
use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::{FAST_BREAKER_ENV, GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, Reply};
use portcullis_testkit::redis::RedisServer;
use portcullis_testkit::upstream::Upstream;
use serde_json::{Value, json};

const ADMIN_PW: &str = "admin pass phrase 42";
const ALICE_PW: &str = "correct horse battery";

const CONFIG: &str = r#"
[rate_limit]
enabled = false

[[routes]]
name = "products"
path = "/products/**"
cache = { ttl = "30s", tags = ["products"] }

[[routes]]
name = "mine"
path = "/mine/**"
cache = { ttl = "30s", per_subject = true }

[[routes]]
name = "fresh-only"
path = "/fresh/**"
cache = { tags = ["fresh"] }
"#;

struct Setup {
    dir: TempDir,
    key_file: PathBuf,
    users_file: PathBuf,
}

fn setup(label: &str) -> Setup {
    let dir = TempDir::new(label);
    let key_file = dir.write("signing.pem", KeySet::generate_pem().unwrap());
    let users_file = dir.path().join("users.toml");
    portcullis_testkit::write_users(
        &users_file,
        &[
            ("alice", ALICE_PW, &["user"]),
            ("admin", ADMIN_PW, &["user", "admin"]),
        ],
    );
    Setup {
        dir,
        key_file,
        users_file,
    }
}

fn gateway(s: &Setup, up: &Upstream, redis: Option<&RedisServer>) -> GatewayProcess {
    let cfg = s.dir.write("gw.toml", CONFIG);
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
    cmd.start()
}

async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<Value>) -> Reply {
    Client::new()
        .send_json(method, url, headers, body.as_ref())
        .await
}

async fn get(gw: &GatewayProcess, path: &str, headers: &[(&str, &str)]) -> Reply {
    let r = send("GET", &gw.url(path), headers, None).await;
    assert!(
        r.status.is_success() || r.status.is_client_error(),
        "GET {path}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    r
}

fn x_cache(r: &Reply) -> &str {
    r.header("x-cache").unwrap_or("(none)")
}

/// The request id the upstream saw for the request this answer was made for.
fn filled_by(r: &Reply) -> String {
    r.json()["headers"]["x-request-id"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn token(gw: &GatewayProcess, user: &str, pw: &str) -> String {
    let r = send(
        "POST",
        &gw.url("/auth/login"),
        &[],
        Some(json!({ "username": user, "password": pw })),
    )
    .await;
    assert_eq!(r.status, 200, "login: {}", String::from_utf8_lossy(&r.body));
    r.json()["access_token"].as_str().unwrap().to_owned()
}

async fn purge(gw: &GatewayProcess, admin: &str, body: Value) -> Reply {
    let auth = format!("Bearer {admin}");
    send(
        "POST",
        &gw.admin_url("/admin/cache/purge"),
        &[("authorization", &auth)],
        Some(body),
    )
    .await
}

async fn upstream_hits(up: &Upstream, path: &str) -> usize {
    up.requests()
        .await
        .iter()
        .filter(|r| r["path"] == path)
        .count()
}

/// Polls `f` until it holds or `limit` passes; whether it held.
async fn within<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_route_answers_hits_with_age_and_stores_nothing_it_must_not() {
    let s = setup("cache-one");
    let up = Upstream::start();
    let gw = gateway(&s, &up, None);

    // Miss, then hits: same body (it names the first request), Age, one upstream call.
    let first = get(&gw, "/products/1?page=2", &[]).await;
    assert_eq!(x_cache(&first), "MISS");
    assert!(first.header("age").is_none(), "a miss has no Age");
    let hit = get(&gw, "/products/1?page=2", &[]).await;
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(filled_by(&hit), filled_by(&first), "the stored answer");
    let age: u64 = hit.header("age").expect("a hit has Age").parse().unwrap();
    assert!(age <= 2, "Age {age}");
    assert_ne!(
        hit.header("x-request-id"),
        first.header("x-request-id"),
        "a hit carries its own request id"
    );
    assert_eq!(upstream_hits(&up, "/products/1").await, 1);
    let head = send("HEAD", &gw.url("/products/1?page=2"), &[], None).await;
    assert_eq!((head.status.as_u16(), x_cache(&head)), (200, "HIT"));
    assert!(head.body.is_empty());
    // Another query is another entry.
    assert_eq!(x_cache(&get(&gw, "/products/1?page=3", &[]).await), "MISS");

    // Concurrent misses of one key wait for the first answer: one upstream call.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let url = gw.url("/products/slow");
        tasks.spawn(async move {
            let r = send("GET", &url, &[("x-upstream-delay", "300ms")], None).await;
            (r.status.as_u16(), x_cache(&r).to_owned())
        });
    }
    let mut seen = Vec::new();
    while let Some(r) = tasks.join_next().await {
        seen.push(r.unwrap());
    }
    assert_eq!(upstream_hits(&up, "/products/slow").await, 1, "{seen:?}");
    assert_eq!(
        seen.iter().filter(|(_, x)| x == "MISS").count(),
        1,
        "{seen:?}"
    );
    assert!(seen.iter().all(|(s, _)| *s == 200), "{seen:?}");

    // Revalidations are answered from the entry's validators.
    get(
        &gw,
        "/products/etag",
        &[("x-upstream-set", "etag: W/\"v1\"")],
    )
    .await;
    let r = send(
        "GET",
        &gw.url("/products/etag"),
        &[("if-none-match", "\"v1\"")],
        None,
    )
    .await;
    assert_eq!((r.status.as_u16(), x_cache(&r)), (304, "HIT"));
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("W/\"v1\""));
    let r = get(&gw, "/products/etag", &[("if-none-match", "\"v2\"")]).await;
    assert_eq!((r.status.as_u16(), x_cache(&r)), (200, "HIT"));
    assert_eq!(upstream_hits(&up, "/products/etag").await, 1);

    // An upstream failing after the entry went stale: `stale-if-error` lets it stand in.
    let cc = (
        "x-upstream-set",
        "cache-control: max-age=1, stale-if-error=60",
    );
    let fresh = get(&gw, "/products/flaky", &[cc]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get(&gw, "/products/flaky", &[("x-upstream-status", "503")]).await;
    assert_eq!(
        (r.status.as_u16(), x_cache(&r)),
        (200, "HIT"),
        "{}",
        r.status
    );
    assert_eq!(filled_by(&r), filled_by(&fresh));
    assert!(r.header("age").unwrap().parse::<u64>().unwrap() >= 1);
    // Without the directive a failure is passed on.
    let cc = ("x-upstream-set", "cache-control: max-age=1");
    get(&gw, "/products/flaky2", &[cc]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = send(
        "GET",
        &gw.url("/products/flaky2"),
        &[("x-upstream-status", "503")],
        None,
    )
    .await;
    assert_eq!(r.status, 503);

    // Requests that could poison an entry bypass it, and reach the upstream.
    for (name, value) in [
        ("x-forwarded-host", "evil.example"),
        ("x-original-url", "/admin"),
        ("x-http-method-override", "DELETE"),
    ] {
        let r = get(&gw, "/products/1?page=2", &[(name, value)]).await;
        assert_eq!(x_cache(&r), "BYPASS", "{name}");
        assert_ne!(
            filled_by(&r),
            filled_by(&first),
            "{name} was answered from the cache"
        );
    }
    // `no-cache` fetches anew and stores the fresh answer.
    let refreshed = get(&gw, "/products/1?page=2", &[("cache-control", "no-cache")]).await;
    assert_eq!(x_cache(&refreshed), "MISS");
    let hit = get(&gw, "/products/1?page=2", &[]).await;
    assert_eq!(filled_by(&hit), filled_by(&refreshed));

    // Never stored: Set-Cookie, private, no-store, errors without explicit freshness.
    for (path, steer) in [
        ("/products/cookie", "x-upstream-set: set-cookie: sid=1"),
        (
            "/products/private",
            "x-upstream-set: cache-control: private",
        ),
        (
            "/products/nostore",
            "x-upstream-set: cache-control: no-store",
        ),
        ("/products/error", "x-upstream-status: 404"),
    ] {
        let (name, value) = steer.split_once(": ").unwrap();
        get(&gw, path, &[(name, value)]).await;
        let again = get(&gw, path, &[(name, value)]).await;
        assert_eq!(x_cache(&again), "MISS", "{path} was stored");
        assert_eq!(upstream_hits(&up, path).await, 2, "{path}");
    }
    // An error with explicit freshness is stored.
    let steer = [
        ("x-upstream-status", "404"),
        ("x-upstream-set", "cache-control: max-age=60"),
    ];
    get(&gw, "/products/gone", &steer).await;
    let again = get(&gw, "/products/gone", &steer).await;
    assert_eq!((again.status.as_u16(), x_cache(&again)), (404, "HIT"));
    // Without a ttl, only the upstream's freshness: none, nothing stored.
    get(&gw, "/fresh/a", &[]).await;
    assert_eq!(x_cache(&get(&gw, "/fresh/a", &[]).await), "MISS");
    let steer = [("x-upstream-set", "cache-control: public, max-age=60")];
    get(&gw, "/fresh/b", &steer).await;
    assert_eq!(x_cache(&get(&gw, "/fresh/b", &steer).await), "HIT");

    // Authenticated requests bypass a shared route, and leave `private`.
    let alice = token(&gw, "alice", ALICE_PW).await;
    let admin = token(&gw, "admin", ADMIN_PW).await;
    let bearer = format!("Bearer {alice}");
    let r = get(&gw, "/products/1?page=2", &[("authorization", &bearer)]).await;
    assert_eq!(x_cache(&r), "BYPASS");
    assert_eq!(r.header("cache-control"), Some("private"));
    // A per-subject route keeps one entry per caller, and has opted in to the
    // upstream's caching headers for authenticated answers.
    let cc = ("x-upstream-set", "cache-control: private, max-age=60");
    let mine = get(&gw, "/mine/orders", &[("authorization", &bearer), cc]).await;
    assert_eq!(x_cache(&mine), "MISS");
    let again = get(&gw, "/mine/orders", &[("authorization", &bearer)]).await;
    assert_eq!(
        (x_cache(&again), filled_by(&again)),
        ("HIT", filled_by(&mine))
    );
    assert_eq!(again.header("cache-control"), Some("private, max-age=60"));
    let admins = get(
        &gw,
        "/mine/orders",
        &[("authorization", &format!("Bearer {admin}"))],
    )
    .await;
    assert_eq!(x_cache(&admins), "MISS", "another subject's entry");
    let anonymous = get(&gw, "/mine/orders", &[]).await;
    assert_ne!(
        filled_by(&anonymous),
        filled_by(&mine),
        "alice's entry served anonymously"
    );

    // A successful unsafe request drops its path's entries; a failed one does not.
    let post = send("POST", &gw.url("/products/1"), &[], Some(json!({"x": 1}))).await;
    assert_eq!((post.status.as_u16(), x_cache(&post)), (200, "BYPASS"));
    assert!(
        within(Duration::from_secs(1), || async {
            x_cache(&get(&gw, "/products/1?page=2", &[]).await) == "MISS"
        })
        .await,
        "the POST did not invalidate /products/1"
    );
    get(&gw, "/products/2", &[]).await;
    let failed = send(
        "DELETE",
        &gw.url("/products/2"),
        &[("x-upstream-status", "500")],
        None,
    )
    .await;
    assert_eq!(failed.status, 500);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(x_cache(&get(&gw, "/products/2", &[]).await), "HIT");

    // Purges: by key, prefix and tag; malformed ones refused.
    get(&gw, "/products/3", &[]).await;
    get(&gw, "/products/4", &[]).await;
    let r = purge(&gw, &admin, json!({"key": "GET /products/3"})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["removed_here"], 1);
    assert_eq!(x_cache(&get(&gw, "/products/3", &[]).await), "MISS");
    assert_eq!(x_cache(&get(&gw, "/products/4", &[]).await), "HIT");
    let r = purge(&gw, &admin, json!({"tag": "products"})).await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["removed_here"].as_u64().unwrap() >= 3,
        "{}",
        r.json()
    );
    assert_eq!(x_cache(&get(&gw, "/products/4", &[]).await), "MISS");
    assert_eq!(
        x_cache(&get(&gw, "/fresh/b", &steer).await),
        "HIT",
        "another tag"
    );
    let r = purge(&gw, &admin, json!({"prefix": "/fresh/"})).await;
    assert_eq!(r.json()["removed_here"], 1);
    assert_eq!(x_cache(&get(&gw, "/fresh/b", &steer).await), "MISS");
    for bad in [
        json!({}),
        json!({"key": "GET /a", "tag": "b"}),
        json!({"key": "POST /a"}),
        json!({"prefix": "products"}),
        json!({"path": "/a"}),
        json!({"tag": ""}),
    ] {
        let r = purge(&gw, &admin, bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let r = purge(&gw, &alice, json!({"tag": "products"})).await;
    assert_eq!(r.status, 403, "only admins purge");

    // Counted.
    let text = String::from_utf8_lossy(&get(&gw, "/nothing", &[]).await.body).into_owned();
    drop(text);
    let metrics = send("GET", &gw.admin_url("/metrics"), &[], None).await;
    let metrics = String::from_utf8_lossy(&metrics.body);
    for result in ["hit", "miss", "bypass"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "portcullis_cache_requests_total{{result=\"{result}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no {result} counter in:\n{metrics}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1.0, "{line}");
    }
    // Purges are audited.
    let audited = gw
        .json_lines()
        .into_iter()
        .filter(|l| l["target"] == "portcullis::audit" && l["action"] == "cache.purge")
        .count();
    assert_eq!(audited, 3, "one audit line per purge");
}

/// The public host name both instances answer for (the cache keys on `Host`).
const HOST: &[(&str, &str)] = &[("host", "api.example")];

/// Two instances sharing a Redis: an entry stored by one answers the other; purges and
/// invalidations made on one reach the other within a second; with Redis killed, each
/// keeps serving from memory and a purge says it applied here only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_entries_and_purges_through_redis_and_survive_its_loss() {
    let s = setup("cache-shared");
    let mut redis = RedisServer::start();
    let up = Upstream::start();
    let a = gateway(&s, &up, Some(&redis));
    let b = gateway(&s, &up, Some(&redis));
    let admin = token(&a, "admin", ADMIN_PW).await;

    let first = get(&a, "/products/shared", HOST).await;
    assert_eq!(x_cache(&first), "MISS");
    // B finds A's entry in Redis (stored as A's answer finished).
    assert!(
        within(Duration::from_secs(2), || async {
            let r = get(&b, "/products/shared", HOST).await;
            x_cache(&r) == "HIT" && filled_by(&r) == filled_by(&first)
        })
        .await,
        "B never answered from A's entry"
    );
    assert_eq!(upstream_hits(&up, "/products/shared").await, 1);

    // A purge on A reaches B's memory tier and the shared tier within a second.
    let r = purge(&a, &admin, json!({"tag": "products"})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["shared"], true);
    let purged_at = Instant::now();
    assert!(
        within(Duration::from_secs(1), || async {
            x_cache(&get(&b, "/products/shared", HOST).await) == "MISS"
        })
        .await,
        "B still served the purged entry after {:?}",
        purged_at.elapsed()
    );

    // An unsafe request on B invalidates A's entry.
    get(&a, "/products/edit", HOST).await;
    assert_eq!(x_cache(&get(&a, "/products/edit", HOST).await), "HIT");
    let put = send("PUT", &b.url("/products/edit"), HOST, Some(json!({"v": 2}))).await;
    assert_eq!(put.status, 200);
    assert!(
        within(Duration::from_secs(1), || async {
            x_cache(&get(&a, "/products/edit", HOST).await) == "MISS"
        })
        .await,
        "A still served /products/edit after B's PUT"
    );

    // Redis gone: no 5xx, the memory tier serves, a purge applies here and says so.
    redis.kill();
    for _ in 0..3 {
        let r = send("GET", &a.url("/products/outage"), HOST, None).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let r = get(&a, "/products/outage", HOST).await;
    assert_eq!(
        x_cache(&r),
        "HIT",
        "the memory tier answers during the outage"
    );
    let r = purge(&a, &admin, json!({"key": "GET /products/outage"})).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        x_cache(&get(&a, "/products/outage", HOST).await),
        "MISS",
        "applied here"
    );

    // Redis back: shared again without a restart.
    redis.restart();
    assert!(
        within(Duration::from_secs(5), || async {
            purge(&a, &admin, json!({"tag": "products"})).await.status == 200
        })
        .await,
        "purges never shared again after Redis returned"
    );
}
