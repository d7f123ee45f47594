//! `portcullis demo`: the gateway in front of a built-in echo upstream, to try it out.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

/// Starts the echo upstream on a free loopback port and returns its address. It answers
/// every request with JSON describing what it received (method, path, query, headers,
/// body size), reading the body as a stream.
pub async fn start_echo() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(echo))
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        headers.insert(
            name.to_string(),
            Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    let body = json!({
        "echo": true,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut res = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(&body).unwrap_or_default(),
    )));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

/// The demo's own route, unless the configuration has one of its name: `/catalog/**`,
/// cached for 30 s with the tag `catalog`, so the walkthrough can show hits and purges.
pub fn add_routes(config: &mut crate::config::Config) {
    if config.routes.iter().any(|r| &*r.name == "catalog") {
        return;
    }
    let Ok(path) = portcullis::path::PathPattern::parse("/catalog/**") else {
        return;
    };
    config.routes.push(crate::config::RouteConfig {
        name: "catalog".into(),
        path,
        methods: None,
        roles: Vec::new(),
        login_username_field: None,
        rate_limit: None,
        count_failures: false,
        on_redis_down: None,
        audit: false,
        headers: None,
        body_limit: None,
        body: None,
        cache: Some(crate::cache::RouteCache {
            ttl: Some(std::time::Duration::from_secs(30)),
            tags: vec!["catalog".to_owned()].into(),
            per_subject: false,
        }),
    });
}

/// A demo user: name, role, password.
#[derive(Debug, Clone)]
pub struct DemoUser {
    /// The username.
    pub name: &'static str,
    /// Its role.
    pub role: &'static str,
    /// Its password, printed once.
    pub password: String,
}

/// A random password: 20 letters and digits, from the operating system's randomness
/// (through std's per-process random hash keys).
fn random_password() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(20);
    let s = std::collections::hash_map::RandomState::new();
    for i in 0..20u64 {
        let mut h = s.build_hasher();
        h.write_u64(i);
        out.push(char::from(
            ALPHABET[(h.finish() % ALPHABET.len() as u64) as usize],
        ));
    }
    out
}

/// Writes a users file with `alice` (role `user`) and `admin` (roles `user`, `admin`),
/// random passwords, into `dir`; returns its path and the users.
pub fn create_users(dir: &std::path::Path) -> Result<(std::path::PathBuf, Vec<DemoUser>), String> {
    use portcullis_core::auth::password;
    use portcullis_core::auth::username::canonicalize;
    use portcullis_core::auth::users::{Role, UsersFile};
    let path = dir.join("portcullis-demo-users.toml");
    let mut file = UsersFile::new();
    let users = vec![
        DemoUser {
            name: "alice",
            role: "user",
            password: random_password(),
        },
        DemoUser {
            name: "admin",
            role: "admin",
            password: random_password(),
        },
    ];
    for u in &users {
        let mut roles = vec![Role::new("user").map_err(|e| e.to_string())?];
        if u.role != "user" {
            roles.push(Role::new(u.role).map_err(|e| e.to_string())?);
        }
        let phc = password::hash(&u.password).map_err(|e| e.to_string())?;
        let name = canonicalize(u.name).map_err(|e| e.to_string())?;
        file.upsert(name, phc, roles).map_err(|e| e.to_string())?;
    }
    file.save(&path).map_err(|e| e.to_string())?;
    Ok((path, users))
}

/// The walkthrough printed at start.
pub fn walkthrough(
    listen: SocketAddr,
    admin: SocketAddr,
    echo: SocketAddr,
    users: &[DemoUser],
) -> String {
    let mut out = String::from("\nDemo users (passwords made for this run):\n");
    for u in users {
        out.push_str(&format!(
            "  {:<6} role {:<6} password {}\n",
            u.name, u.role, u.password
        ));
    }
    let alice = users.first().map_or("", |u| u.password.as_str());
    let admin_pw = users.get(1).map_or("", |u| u.password.as_str());
    out.push_str(&format!(
        "\nSign in, call the API, refresh, sign out:\n\n\
         \x20 curl -s http://{listen}/auth/login -H 'content-type: application/json' \\\n\
         \x20      -d '{{\"username\":\"alice\",\"password\":\"{alice}\"}}' | tee /tmp/portcullis-tokens.json\n\
         \x20 TOKEN=$(sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/' /tmp/portcullis-tokens.json)\n\
         \x20 REFRESH=$(sed -E 's/.*\"refresh_token\":\"([^\"]+)\".*/\\1/' /tmp/portcullis-tokens.json)\n\
         \x20 curl -s http://{listen}/whoami -H \"authorization: Bearer $TOKEN\"      # the echo shows x-auth-subject: alice\n\
         \x20 curl -s http://{listen}/auth/refresh -H 'content-type: application/json' -d \"{{\\\"refresh_token\\\":\\\"$REFRESH\\\"}}\"\n\
         \x20 curl -si -X POST http://{listen}/auth/logout -H \"authorization: Bearer $TOKEN\"  # 204; the token is refused from now on\n\
         \x20 curl -si http://{listen}/whoami -H \"authorization: Bearer $TOKEN\"      # 401 invalid-token\n\n\
         As a browser app does, with cookies and a CSRF token:\n\n\
         \x20 AC=$(curl -si http://{listen}/auth/login -H 'content-type: application/json' \\\n\
         \x20      -d '{{\"username\":\"alice\",\"password\":\"{alice}\"}}' | sed -nE 's/^set-cookie: __Host-access=([^;]+).*/\\1/ip')\n\
         \x20 CSRF=$(curl -s http://{listen}/auth/csrf -H \"cookie: __Host-access=$AC\" | sed -E 's/.*\"token\":\"([^\"]+)\".*/\\1/')\n\
         \x20 curl -si -X POST http://{listen}/orders -H \"cookie: __Host-access=$AC\" -d '{{}}'   # 403 csrf: no token\n\
         \x20 curl -si -X POST http://{listen}/orders -H \"cookie: __Host-access=$AC\" -H \"x-csrf-token: $CSRF\" -d '{{}}'   # 200\n\
         \x20 curl -si -X POST http://{listen}/orders -H \"cookie: __Host-access=$AC\" -H \"x-csrf-token: $CSRF\" \\\n\
         \x20      -H 'sec-fetch-site: cross-site' -d '{{}}'   # 403: another site's page sent it\n\n\
         Admin (password {admin_pw}): log in as admin (ADMIN_TOKEN), then\n\
         \x20 curl -s http://{admin}/admin/security-events -H \"authorization: Bearer $ADMIN_TOKEN\"\n\
         \x20 curl -s http://{admin}/admin/rate-limits/policies -H \"authorization: Bearer $ADMIN_TOKEN\"\n\
         \x20 curl -s -X PUT http://{admin}/admin/rate-limits/overrides/ip:127.0.0.1 -H \"authorization: Bearer $ADMIN_TOKEN\" \\\n\
         \x20      -d '{{\"limit\":600,\"per\":\"1m\",\"expires_in\":\"10m\"}}'   # raise your own quota for 10 minutes\n\n\
         The response cache (/catalog/** is cached 30 s, tag catalog):\n\n\
         \x20 curl -si http://{listen}/catalog/items | grep -iE '^(x-cache|age)'   # x-cache: MISS\n\
         \x20 curl -si http://{listen}/catalog/items | grep -iE '^(x-cache|age)'   # x-cache: HIT, and its age\n\
         \x20 curl -s -X POST http://{admin}/admin/cache/purge -H \"authorization: Bearer $ADMIN_TOKEN\" \\\n\
         \x20      -d '{{\"tag\":\"catalog\"}}'   # the next request is a MISS again\n"
    ));
    out.push_str(&walkthrough_basics(listen, admin, echo));
    out
}

fn walkthrough_basics(listen: SocketAddr, admin: SocketAddr, echo: SocketAddr) -> String {
    format!(
        "\nPortcullis demo: the gateway on http://{listen} protects a built-in echo upstream on http://{echo}.\n\
         Admin endpoints are on http://{admin}. Try:\n\n\
         \x20 curl -i http://{listen}/anything                  # proxied; note X-Request-Id\n\
         \x20 curl -i 'http://{listen}/a/..%2f..%2fetc/passwd'  # refused: 400 problem+json\n\
         \x20 curl -i -X TRACE http://{listen}/                 # refused: 405\n\
         \x20 curl -i http://{listen}/x -H 'X-Forwarded-For: 6.6.6.6'   # the echo shows the real client instead\n\
         \x20 for i in $(seq 25); do curl -s -o /dev/null -w '%{{http_code}} ' http://{listen}/x; done   # 429 after a burst of 20\n\
         \x20 curl -s http://{admin}/readyz\n\
         \x20 curl -s http://{admin}/metrics | grep portcullis_requests_total\n\n\
         Stop with Ctrl-C.\n"
    )
}
