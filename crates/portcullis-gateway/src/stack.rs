//! The protection stack of the main listener, in one place.
//!
//! Cheapest refusals first, so that hostile traffic costs as little as possible, and
//! every refusal is a problem+json response carrying the request id:
//!
//! 1. **client and request id**: before anything can refuse, so every response and log
//!    line names the request and the client;
//! 2. **methods never forwarded** (`TRACE`, `CONNECT` → 405): they have no business at
//!    an API and `TRACE` reflects credentials;
//! 3. **size limits** on the target and the header block (414, 431): a fixed cost, no
//!    parsing;
//! 4. **path normalisation** (400) and **routing**: every later rule keys on the route,
//!    and no spelling of a path may dodge it;
//! 5. **declared body size** (413) before an upstream connection is taken;
//! 6. **the upstream**, bounded by `limits.request_timeout`, bodies streamed.
//!
//! The access log line and the request metrics are written when the response head
//! leaves, whatever the outcome.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use portcullis::client::ClientInfo;
use portcullis::path::normalize;
use portcullis::request_id::{self, RequestId, X_REQUEST_ID};
use portcullis::{Problem, ProblemKind, Rejection};
use portcullis_core::net::TrustedProxies;
use tokio::time::Instant;

use crate::body::Body;
use crate::config::{Config, Limits};
use crate::proxy::Proxy;
use crate::routes::{Route, Routes};

/// Everything the main listener needs to answer a request.
#[derive(Debug)]
pub struct Gateway {
    trusted: TrustedProxies,
    limits: Limits,
    routes: Routes,
    proxy: Proxy,
    redact_headers: Vec<String>,
}

/// Where a request came in: made once per connection.
#[derive(Clone, Debug)]
pub struct Conn {
    /// The connected peer.
    pub peer: SocketAddr,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    /// The peer's address as a header value, for `X-Forwarded-For`.
    pub peer_header: HeaderValue,
}

impl Conn {
    /// A connection from `peer`.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let ip = portcullis_core::net::canonical_ip(peer.ip()).to_string();
        Self {
            peer,
            tls,
            peer_header: HeaderValue::from_str(&ip).expect("an IP address is a valid header value"),
        }
    }
}

impl Gateway {
    /// Assembles the stack from a validated configuration.
    pub fn new(cfg: &Config, proxy: Proxy) -> Arc<Self> {
        Arc::new(Self {
            trusted: cfg.trusted_proxies.clone(),
            limits: cfg.limits.clone(),
            routes: Routes::new(&cfg.routes),
            proxy,
            redact_headers: cfg.log.redact_headers.clone(),
        })
    }

    /// Answers one request.
    pub async fn handle(&self, mut req: Request<Incoming>, conn: &Conn) -> Response<Body> {
        let started = Instant::now();
        // 1. The client and the request id.
        // Passed along as values, not request extensions: extensions cost allocations on
        // every request, and nothing behind the gateway reads them.
        let client = ClientInfo::resolve(conn.peer, conn.tls, req.headers(), &self.trusted);
        let id = request_id::choose_from(req.headers(), client.peer_trusted);
        req.headers_mut()
            .insert(X_REQUEST_ID, id.header_value().clone());
        let method = req.method().clone();
        let uri = req.uri().clone();
        if tracing::enabled!(target: "portcullis::access", tracing::Level::DEBUG) {
            tracing::debug!(
                target: "portcullis::access",
                request_id = id.as_str(),
                headers = %self.redacted_headers(req.headers()),
                "request headers"
            );
        }

        let (mut res, route) = self.protect(req, &client, conn, &id, started).await;

        res.headers_mut()
            .insert(X_REQUEST_ID, id.header_value().clone());
        let elapsed = started.elapsed();
        let status = res.status().as_u16();
        route.metrics.record(status, elapsed);
        let duration_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        match res.extensions().get::<Rejection>() {
            Some(r) => tracing::info!(
                target: "portcullis::access",
                request_id = id.as_str(),
                method = method.as_str(),
                path = uri.path(),
                status,
                duration_ms,
                client_ip = %client.ip,
                route = &*route.name,
                reason = r.kind.slug(),
            ),
            None => tracing::info!(
                target: "portcullis::access",
                request_id = id.as_str(),
                method = method.as_str(),
                path = uri.path(),
                status,
                duration_ms,
                client_ip = %client.ip,
                route = &*route.name,
            ),
        }
        res
    }

    /// The request's headers as a JSON object, values of `log.redact_headers` replaced.
    fn redacted_headers(&self, headers: &http::HeaderMap) -> String {
        let mut obj = serde_json::Map::new();
        for (name, value) in headers {
            let shown = if self.redact_headers.iter().any(|r| r == name.as_str()) {
                crate::telemetry::json::REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            match obj.get_mut(name.as_str()) {
                Some(serde_json::Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(&shown);
                }
                _ => {
                    obj.insert(name.as_str().to_owned(), serde_json::Value::String(shown));
                }
            }
        }
        serde_json::Value::Object(obj).to_string()
    }

    async fn protect(
        &self,
        req: Request<Incoming>,
        client: &ClientInfo,
        conn: &Conn,
        id: &RequestId,
        started: Instant,
    ) -> (Response<Body>, &Route) {
        let refuse = |p: Problem, route| refused(p, id, route);
        let unrouted = self.routes.unrouted();

        // 2. Methods never forwarded.
        if req.method() == Method::TRACE || req.method() == Method::CONNECT {
            let (mut res, r) = refuse(
                Problem::new(ProblemKind::MethodNotAllowed)
                    .detail("TRACE and CONNECT are not forwarded"),
                unrouted,
            );
            res.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
            return (res, r);
        }

        // 3. Size limits on the target and the header block.
        let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if target_len as u64 > self.limits.uri_bytes {
            return refuse(
                Problem::new(ProblemKind::UriTooLong)
                    .detail("the request target is longer than the limit"),
                unrouted,
            );
        }
        let headers = req.headers();
        if headers.len() > self.limits.header_count {
            return refuse(
                Problem::new(ProblemKind::HeadersTooLarge)
                    .detail("the request has too many header fields"),
                unrouted,
            );
        }
        let header_bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes as u64 > self.limits.header_bytes {
            return refuse(
                Problem::new(ProblemKind::HeadersTooLarge)
                    .detail("the request header fields are larger than the limit"),
                unrouted,
            );
        }

        // 4. Path normalisation and routing.
        let path = match normalize(req.uri().path()) {
            Ok(p) => p,
            Err(e) => {
                return refuse(
                    Problem::new(ProblemKind::BadRequest).detail(e.to_string()),
                    unrouted,
                );
            }
        };
        let route = self.routes.find(req.method(), path.match_key());

        // 5. Declared body size.
        let body_limit = self.limits.body;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > body_limit) {
            return refuse(
                Problem::new(ProblemKind::PayloadTooLarge)
                    .detail("the request body is larger than the limit")
                    .close_connection(),
                route,
            );
        }

        // 6. The upstream.
        let deadline = started + self.limits.request_timeout;
        match self
            .proxy
            .forward(req, &path, client, &conn.peer_header, body_limit, deadline)
            .await
        {
            Ok(res) => (res, route),
            Err(p) => refuse(p, route),
        }
    }
}

fn refused<'r>(p: Problem, id: &RequestId, route: &'r Route) -> (Response<Body>, &'r Route) {
    (p.into_response(Some(id.as_str())), route)
}
