//! A real browser against the gateway: headless Chromium (Debian's, installed by the test
//! command) driven over WebDriver. The app's page is served through the gateway at
//! `http://localhost:GW`; attacker pages are served by another server at
//! `http://localhost:EVIL` (same site, other origin: the browser sends the app's
//! `SameSite=Strict` cookies) and `http://127.0.0.1:EVIL` (another site).

use std::path::PathBuf;
use std::time::Duration;

use portcullis_core::token::KeySet;
use portcullis_testkit::TempDir;
use portcullis_testkit::browser::Browser;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::upstream::Upstream;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const PAGE: &str = "<!doctype html><html><head><meta charset=utf-8><title>page</title></head><body><h1>page</h1></body></html>";

struct Site {
    _dir: TempDir,
    app: Upstream,
    evil: Upstream,
    gw: GatewayProcess,
}

fn users(dir: &TempDir) -> PathBuf {
    let path = dir.path().join("users.toml");
    portcullis_testkit::write_users(&path, &[("alice", PASSWORD, &["user"])]);
    path
}

fn site() -> Site {
    let dir = TempDir::new("browser");
    for page in ["app.html", "evil.html", "cors.html"] {
        dir.write(&format!("pages/{page}"), PAGE);
    }
    let pages = dir.path().join("pages");
    let app = Upstream::start_with_pages(&pages);
    let evil = Upstream::start_with_pages(&pages);
    let key = dir.write("signing.pem", KeySet::generate_pem().unwrap());
    let users = users(&dir);
    let cfg = dir.write(
        "gw.toml",
        format!(
            r#"
[auth]
cookies = true
signing_key_file = "{}"
users_file = "{}"

[rate_limit]
enabled = false

[cors]
allowed_origins = ["http://127.0.0.1:{}"]

# The app's pages: helmet's headers (`api`'s CSP would forbid their scripts to fetch).
[[routes]]
name = "pages"
path = "/pages/**"
headers = "web"

[[routes]]
name = "orders"
path = "/orders"
roles = ["user"]
"#,
            key.display(),
            users.display(),
            evil.addr.port()
        ),
    );
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--upstream",
            &app.url(),
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .start();
    Site {
        _dir: dir,
        app,
        evil,
        gw,
    }
}

impl Site {
    fn app_url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.gw.listen.port())
    }

    /// The requests to `/orders` the upstream received, with their bodies.
    async fn orders(&self) -> Vec<String> {
        self.app
            .requests()
            .await
            .iter()
            .filter(|r| r["path"] == "/orders")
            .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Logs in from the app's page and fetches a CSRF token: what the page saw.
const LOGIN_AND_TOKEN: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  const login = await fetch('/auth/login', {
    method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({username: 'alice', password: arguments[0]}),
  });
  const csrf = await fetch('/auth/csrf');
  const token = (await csrf.json()).token;
  const cookie = document.cookie.split('; ').find(c => c.startsWith('__Host-csrf='));
  done({login: login.status, csrf: csrf.status, token, cookie: cookie ? cookie.slice(12) : null});
})().catch(e => done({error: String(e)}));
"#;

/// POSTs JSON with `fetch` from the current page: `[url, token or null, body]`.
const FETCH_POST: &str = r#"
const done = arguments[arguments.length - 1];
const [url, token, body] = arguments;
const headers = {'content-type': 'application/json'};
if (token) headers['x-csrf-token'] = token;
fetch(url, {method: 'POST', headers, body, credentials: 'include'})
  .then(r => done({status: r.status}))
  .catch(e => done({error: String(e)}));
"#;

/// A no-cors POST from another origin, as an attacker page sends one: `[url]`.
const BLIND_POST: &str = r#"
const done = arguments[arguments.length - 1];
fetch(arguments[0], {method: 'POST', mode: 'no-cors', credentials: 'include',
                     headers: {'content-type': 'text/plain'}, body: '{"forged":"fetch"}'})
  .then(() => done('sent')).catch(e => done('failed: ' + e));
"#;

/// Submits a form from the current page: `[action, fields]`.
const FORM_POST: &str = r#"
const [action, fields] = arguments;
const f = document.createElement('form');
f.method = 'POST';
f.action = action;
for (const [name, value] of Object.entries(fields)) {
  const i = document.createElement('input');
  i.type = 'hidden'; i.name = name; i.value = value;
  f.appendChild(i);
}
document.body.appendChild(f);
f.submit();
"#;

async fn submit_form(b: &Browser, action: &str, fields: Value) -> String {
    b.execute(FORM_POST, vec![json!(action), fields]).await;
    b.wait_for_url(Duration::from_secs(10), |u| u.ends_with("/orders"))
        .await;
    // The answer's text, once loaded.
    for _ in 0..100 {
        let text = b.text().await;
        if text.contains('{') {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.text().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_posts_with_its_token_and_other_pages_cannot() {
    let s = site();
    let b = Browser::start().await;

    // The app, at its own origin: logs in with cookies, gets a token, posts with it.
    b.goto(&s.app_url("/pages/app.html")).await;
    let seen = b
        .execute_async(LOGIN_AND_TOKEN, vec![json!(PASSWORD)])
        .await;
    assert_eq!(seen["login"], 200, "{seen}");
    assert_eq!(seen["csrf"], 200, "{seen}");
    let token = seen["token"].as_str().expect("a token").to_owned();
    assert_eq!(
        seen["cookie"],
        json!(token),
        "the __Host-csrf cookie holds the token: {seen}"
    );
    let orders = s.app_url("/orders");
    let r = b
        .execute_async(
            FETCH_POST,
            vec![json!(orders), json!(token), json!("{\"via\":\"fetch\"}")],
        )
        .await;
    assert_eq!(r["status"], 200, "fetch with the token: {r}");
    let r = b
        .execute_async(
            FETCH_POST,
            vec![json!(orders), Value::Null, json!("{\"via\":\"no token\"}")],
        )
        .await;
    assert_eq!(r["status"], 403, "fetch without the token: {r}");
    let text = submit_form(&b, &orders, json!({"_csrf": token, "via": "form"})).await;
    assert!(
        text.contains("\"/orders\""),
        "the form reached the upstream: {text}"
    );
    assert_eq!(
        s.orders().await,
        [
            "{\"via\":\"fetch\"}".to_owned(),
            format!("_csrf={token}&via=form")
        ],
        "the upstream got the app's two posts, bodies intact"
    );

    // An attacker page on the same site (other port): the browser sends the cookies,
    // Fetch Metadata says same-site; refused.
    let evil_same_site = format!("http://localhost:{}/pages/evil.html", s.evil.addr.port());
    b.goto(&evil_same_site).await;
    // (Its answer is unreadable, and `Cross-Origin-Resource-Policy` may make the fetch
    // fail: what counts is that the upstream never sees the request.)
    b.execute_async(BLIND_POST, vec![json!(orders)]).await;
    let text = submit_form(&b, &orders, json!({"_csrf": "guess", "forged": "form"})).await;
    assert!(
        text.contains("csrf"),
        "a same-site form is refused as CSRF: {text}"
    );

    // An attacker page on another site: SameSite=Strict keeps the cookies home, so the
    // request has no identity and the route refuses it.
    let evil_cross_site = format!("http://127.0.0.1:{}/pages/evil.html", s.evil.addr.port());
    b.goto(&evil_cross_site).await;
    // (Its answer is unreadable, and `Cross-Origin-Resource-Policy` may make the fetch
    // fail: what counts is that the upstream never sees the request.)
    b.execute_async(BLIND_POST, vec![json!(orders)]).await;
    let text = submit_form(&b, &orders, json!({"forged": "form"})).await;
    assert!(
        text.contains("unauthorized") || text.contains("csrf"),
        "a cross-site form is refused: {text}"
    );

    assert_eq!(
        s.orders().await.len(),
        2,
        "nothing forged reached the upstream"
    );
}

/// Reads a response of the gateway with `fetch` from the current page.
const CORS_READ: &str = r#"
const done = arguments[arguments.length - 1];
fetch(arguments[0]).then(r => r.json()).then(j => done({read: j.path}))
  .catch(e => done({error: String(e)}));
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_allowed_origin_reads_responses() {
    let s = site();
    let b = Browser::start().await;
    let data = s.app_url("/public/data");

    b.goto(&format!(
        "http://127.0.0.1:{}/pages/cors.html",
        s.evil.addr.port()
    ))
    .await;
    let r = b.execute_async(CORS_READ, vec![json!(data)]).await;
    assert_eq!(r["read"], "/public/data", "the allowed origin reads: {r}");

    b.goto(&format!(
        "http://localhost:{}/pages/cors.html",
        s.evil.addr.port()
    ))
    .await;
    let r = b.execute_async(CORS_READ, vec![json!(data)]).await;
    assert!(r["error"].is_string(), "another origin cannot read: {r}");
}
