//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`),
//! for tests where a real browser must be the client: cookies, `SameSite`, Fetch
//! Metadata, CORS and form posts as a browser sends them.
//!
//! This is a client for the five WebDriver commands the tests use (new session, navigate,
//! execute a script, read the URL, end the session), written on the testkit's HTTP
//! client: a WebDriver crate would bring its own HTTP and TLS stack into the test build for
//! them.
//!
//! Chromium runs with the flags that keep it off the network (no background networking,
//! component updates, sync or QUIC) and a fresh profile per browser.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::TempDir;
use crate::http::Client;

/// Where Debian puts the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session. Dropping it ends the session and the driver.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: Client,
    _profile: TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free port and opens a session with a new profile.
    pub async fn start() -> Self {
        let addr: SocketAddr = crate::ports::free_addr();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={}", addr.port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {CHROMEDRIVER} (scripts/test.sh installs it): {e}"));
        crate::http::wait_for_port(addr, Duration::from_secs(20));
        let profile = TempDir::new("chromium");
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-default-apps", "--disable-extensions",
                        "--disable-dev-shm-usage",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}
        });
        let client = Client::new();
        let base = format!("http://{addr}");
        let mut browser = Self {
            driver,
            base,
            session: String::new(),
            client,
            _profile: profile,
        };
        let v = browser.command("POST", "/session", Some(caps)).await;
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        browser
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("a WebDriver request");
        let reply = tokio::time::timeout(Duration::from_secs(60), self.client.send(req))
            .await
            .unwrap_or_else(|_| panic!("WebDriver {method} {path} took over 60 s"))
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        assert!(
            reply.status.is_success(),
            "WebDriver {method} {path}: {} {v}",
            reply.status
        );
        v["value"].clone()
    }

    fn at(&self, what: &str) -> String {
        format!("/session/{}/{what}", self.session)
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.command("POST", &self.at("url"), Some(json!({ "url": url })))
            .await;
    }

    /// The address of the current page.
    pub async fn url(&self) -> String {
        self.command("GET", &self.at("url"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns
    /// what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(
            "POST",
            &self.at("execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs `script` in the page and waits until it calls the callback given as its last
    /// argument (`arguments[arguments.length - 1]`), returning the value passed to it.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(
            "POST",
            &self.at("execute/async"),
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The text of the current page's body.
    pub async fn text(&self) -> String {
        self.execute(
            "return document.body ? document.body.innerText : '';",
            vec![],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits (polling, at most `limit`) until the current page's address satisfies `f`.
    pub async fn wait_for_url(&self, limit: Duration, f: impl Fn(&str) -> bool) -> String {
        let start = std::time::Instant::now();
        loop {
            let url = self.url().await;
            if f(&url) || start.elapsed() > limit {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session quits Chromium; killing the driver alone could leave it.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::process::Command::new("curl")
            .args(["-s", "-m", "5", "-X", "DELETE", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
