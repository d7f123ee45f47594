//! A recording upstream that can be told to be slow, fail, stream or send given headers.
//!
//! Run it as a process with [`Upstream::start`] (the `portcullis-upstream` binary). Every
//! request except those to `/__upstream/*` is recorded; `GET /__upstream/requests`
//! returns the records as JSON and `DELETE /__upstream/requests` clears them. A request
//! steers the answer with headers:
//!
//! | header | effect |
//! | --- | --- |
//! | `x-upstream-delay: 500ms` | wait before the response head |
//! | `x-upstream-status: 503` | answer with this status |
//! | `x-upstream-set: name: value` | add a response header (repeatable) |
//! | `x-upstream-body-bytes: N` | answer with N bytes, streamed in 64 KiB chunks |
//! | `x-upstream-cut-after: N` | promise `x-upstream-body-bytes`, send N, then drop the connection |
//! | `x-upstream-stall-after: N` | send N bytes, then stall forever |
//!
//! A webhook POST carries none of these headers, so a process can instead be started to
//! answer every recorded request one way, with `PORTCULLIS_UPSTREAM_ANSWER`
//! ([`Upstream::start_answering`]): a status such as `503` (the request is recorded, then
//! answered with that status), or `hang` (the request is read and recorded, and the
//! connection is then held open with no answer, ever). Control requests are answered as
//! usual in either mode, so what such a receiver got can still be read.
//!
//! With `PORTCULLIS_UPSTREAM_PAGES=DIR` ([`Upstream::start_with_pages`]), `GET /pages/NAME`
//! serves the file NAME of DIR as HTML, unrecorded. Otherwise it echoes JSON: `method`, `path`, `query`, `headers` (lists of values),
//! `body_bytes`, `body` (its first 64 KiB, as UTF-8 with invalid bytes replaced), and
//! `peer` (the connection's address, to tell connections apart). Request bodies are
//! counted as they stream, never buffered beyond what is kept.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

type Recorded = Arc<Mutex<Vec<Value>>>;
type Out = BoxBody<Bytes, std::io::Error>;

/// The environment variable that makes the process answer every recorded request one way.
pub const ANSWER_ENV: &str = "PORTCULLIS_UPSTREAM_ANSWER";

/// How a process started with [`ANSWER_ENV`] answers every recorded request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// With this status (and the usual echo body).
    Status(u16),
    /// Never: the request is read and recorded, and the connection held open.
    Hang,
}

impl Answer {
    fn from_env() -> Option<Self> {
        let v = std::env::var(ANSWER_ENV).ok()?;
        match v.trim() {
            "hang" => Some(Self::Hang),
            s => s.parse().ok().map(Self::Status),
        }
    }

    fn env_value(self) -> String {
        match self {
            Self::Status(s) => s.to_string(),
            Self::Hang => "hang".into(),
        }
    }
}

/// Serves on `listener` forever.
pub async fn run(listener: TcpListener) {
    let recorded: Recorded = Arc::default();
    let answer = Answer::from_env();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let recorded = recorded.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, peer, recorded.clone(), answer));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// How much of each request body a record keeps.
const BODY_KEPT: usize = 64 * 1024;

fn full(status: StatusCode, body: Vec<u8>) -> Response<Out> {
    let mut res = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The environment variable naming a directory whose files are served as HTML pages.
pub const PAGES_ENV: &str = "PORTCULLIS_UPSTREAM_PAGES";

/// `GET /pages/NAME`: the file NAME of the pages directory as `text/html`, unrecorded;
/// `None` when there is no pages directory or no such page.
fn page_response(name: &str) -> Option<Response<Out>> {
    let dir = std::env::var_os(PAGES_ENV)?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        || name.starts_with('.')
    {
        return None;
    }
    let html = std::fs::read(std::path::Path::new(&dir).join(name)).ok()?;
    let mut res = full(StatusCode::OK, html);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Some(res)
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    s.strip_suffix('s')?.parse().ok().map(Duration::from_secs)
}

fn header_u64(req: &http::request::Parts, name: &str) -> Option<u64> {
    req.headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    recorded: Recorded,
    answer: Option<Answer>,
) -> Result<Response<Out>, Infallible> {
    let (parts, mut body) = req.into_parts();
    if parts.uri.path() == "/__upstream/requests" {
        if parts.method == http::Method::DELETE {
            recorded.lock().unwrap().clear();
            return Ok(full(StatusCode::NO_CONTENT, vec![]));
        }
        let all = Value::Array(recorded.lock().unwrap().clone());
        return Ok(full(StatusCode::OK, serde_json::to_vec(&all).unwrap()));
    }
    if let Some(page) = parts.uri.path().strip_prefix("/pages/")
        && let Some(res) = page_response(page)
    {
        return Ok(res);
    }
    let mut body_bytes: u64 = 0;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_bytes += d.len() as u64;
                    let room = BODY_KEPT.saturating_sub(kept.len());
                    kept.extend_from_slice(&d[..room.min(d.len())]);
                }
            }
            Err(_) => break,
        }
    }
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let v = Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(list)) => list.push(v),
            _ => {
                headers.insert(name.to_string(), Value::Array(vec![v]));
            }
        }
    }
    let record = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body_bytes,
        "body": String::from_utf8_lossy(&kept),
        "peer": peer.to_string(),
    });
    recorded.lock().unwrap().push(record.clone());
    match answer {
        Some(Answer::Hang) => std::future::pending::<()>().await,
        Some(Answer::Status(s)) => {
            let mut res = full(StatusCode::OK, serde_json::to_vec(&record).unwrap());
            *res.status_mut() =
                StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(res);
        }
        None => {}
    }

    if let Some(d) = parts
        .headers
        .get("x-upstream-delay")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_duration)
    {
        tokio::time::sleep(d).await;
    }
    let status = header_u64(&parts, "x-upstream-status")
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let mut res = match header_u64(&parts, "x-upstream-body-bytes") {
        Some(n) => {
            let cut = header_u64(&parts, "x-upstream-cut-after");
            let stall = header_u64(&parts, "x-upstream-stall-after");
            let mut res = Response::new(streamed(n, cut, stall));
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            res
        }
        None => full(StatusCode::OK, serde_json::to_vec(&record).unwrap()),
    };
    *res.status_mut() = status;
    for v in parts.headers.get_all("x-upstream-set") {
        let Ok(s) = v.to_str() else { continue };
        if let Some((n, v)) = s.split_once(':')
            && let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            )
        {
            res.headers_mut().append(n, v);
        }
    }
    Ok(res)
}

const CHUNK: usize = 64 * 1024;

fn streamed(total: u64, cut_after: Option<u64>, stall_after: Option<u64>) -> Out {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = chunks(total, cut_after, stall_after, chunk);
    StreamBody::new(stream).boxed()
}

fn chunks(
    total: u64,
    cut_after: Option<u64>,
    stall_after: Option<u64>,
    chunk: Bytes,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
    futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if let Some(c) = cut_after
                && sent >= c
            {
                // Let what was sent reach the wire before the connection drops.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Some((Err(std::io::Error::other("cut short on purpose")), u64::MAX));
            }
            if let Some(s) = stall_after
                && sent >= s
            {
                std::future::pending::<()>().await;
            }
            if sent >= total {
                return None;
            }
            let mut n = (total - sent).min(CHUNK as u64);
            if let Some(c) = cut_after {
                n = n.min(c - sent).max(1);
            }
            if let Some(s) = stall_after
                && s > sent
            {
                n = n.min(s - sent);
            }
            Some((Ok(Frame::data(chunk.slice(..n as usize))), sent + n))
        }
    })
}

/// A running `portcullis-upstream` process, killed on drop.
#[derive(Debug)]
pub struct Upstream {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Upstream {
    /// Starts the upstream on a free loopback port and waits until it answers.
    pub fn start() -> Self {
        Self::start_on(crate::ports::free_addr())
    }

    /// Starts the upstream on `addr`.
    pub fn start_on(addr: SocketAddr) -> Self {
        Self::spawn(addr, None, None)
    }

    /// Starts a process that answers every recorded request as `answer` says, whatever
    /// its headers: a webhook receiver that fails or hangs.
    pub fn start_answering(answer: Answer) -> Self {
        Self::spawn(crate::ports::free_addr(), None, Some(answer))
    }

    /// Starts an upstream that also serves the files of `dir` as HTML at `/pages/NAME`
    /// (not recorded), for browser tests.
    pub fn start_with_pages(dir: &std::path::Path) -> Self {
        Self::spawn(crate::ports::free_addr(), Some(dir), None)
    }

    fn spawn(addr: SocketAddr, pages: Option<&std::path::Path>, answer: Option<Answer>) -> Self {
        let bin = crate::workspace_bin("portcullis-testkit", "portcullis-upstream");
        let mut cmd = Command::new(bin);
        cmd.env_remove(ANSWER_ENV);
        if let Some(dir) = pages {
            cmd.env(PAGES_ENV, dir);
        }
        if let Some(a) = answer {
            cmd.env(ANSWER_ENV, a.env_value());
        }
        let child = cmd
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start portcullis-upstream");
        let up = Self { child, addr };
        crate::http::wait_for_port(addr, Duration::from_secs(10));
        up
    }

    /// The base URL, e.g. `http://127.0.0.1:1234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far (excluding control requests).
    pub async fn requests(&self) -> Vec<Value> {
        let res = crate::http::Client::new()
            .get(&format!("{}/__upstream/requests", self.url()))
            .await
            .expect("upstream answers");
        match serde_json::from_slice(&res.body).expect("upstream JSON") {
            Value::Array(v) => v,
            _ => vec![],
        }
    }

    /// Forgets the requests received so far.
    pub async fn clear(&self) {
        let _ = crate::http::Client::new()
            .send(
                Request::delete(format!("{}/__upstream/requests", self.url()))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
