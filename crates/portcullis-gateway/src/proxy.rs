//! The upstream side: a pooled keep-alive client, and the header rules of a reverse proxy.
//!
//! - hop-by-hop headers (and any named in `Connection`) are removed both ways;
//! - from a peer that is not a trusted proxy, `Forwarded`, `X-Real-IP` and every
//!   `X-Forwarded-*` header are removed and replaced by the gateway's own values, never
//!   appended to; from a trusted proxy, `X-Forwarded-For` is appended to;
//! - identity headers (`X-Auth-Subject`, `X-Auth-Roles`, in any spelling, `_` forms
//!   included) sent by a client never reach the upstream;
//! - the upstream sees the normalised path, over HTTP/1.1, with `Host` set to its own
//!   authority;
//! - `limits.request_timeout` bounds the exchange; a request that is not idempotent is
//!   never retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use portcullis::client::ClientInfo;
use portcullis::path::NormalizedPath;
use portcullis::{Problem, ProblemKind};
use tokio::time::Instant;

use crate::body::{
    Body, BodyTooLarge, BodyTooSlow, ClientBodyError, DeadlineBody, LimitedBody, MinRate, caused_by,
};
use crate::config::{Config, ConfigError, Origin, Upstream};
use crate::upstream::{Pool, UpstreamError};

/// Bound on establishing an upstream connection, within the request's own deadline.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the stack knows about a request it forwards.
#[derive(Clone, Copy, Debug)]
pub struct Forward<'a> {
    /// The normalised path.
    pub path: &'a NormalizedPath,
    /// The client.
    pub client: &'a ClientInfo,
    /// The connected peer's address as a header value.
    pub peer: &'a HeaderValue,
    /// The verified identity, if any.
    pub identity: Option<&'a portcullis_core::token::Identity>,
    /// The body limit.
    pub body_limit: u64,
    /// The end of `limits.request_timeout`.
    pub deadline: Instant,
}

/// The upstream and a pool of connections to it.
#[derive(Clone, Debug)]
pub struct Proxy {
    pool: Pool,
    upstream: Arc<Upstream>,
    host: HeaderValue,
    min_rate: MinRate,
}

/// Builds the TLS client configuration: the system's roots plus `tls.upstream_ca_file`.
pub fn client_tls(cfg: &Config) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &cfg.upstream_ca_file {
        let err = |message: String| ConfigError {
            key: "tls.upstream_ca_file".into(),
            origin: Some(Origin::Default),
            message,
        };
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| {
                err(format!(
                    "{} is not a PEM certificate file: {e}",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(err(format!("{} holds no certificate", path.display())));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| err(format!("{}: unusable certificate: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError {
            key: "tls".into(),
            origin: None,
            message: format!("TLS setup failed: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

impl Proxy {
    /// A pool for `upstream`; fails only on a bad CA file or an unusable host name.
    pub fn new(cfg: &Config, upstream: Upstream) -> Result<Self, ConfigError> {
        let authority = &upstream.authority;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority
            .port_u16()
            .unwrap_or(if upstream.is_https() { 443 } else { 80 });
        let tls = if upstream.is_https() {
            let mut config = client_tls(cfg)?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| ConfigError {
                    key: "upstream".into(),
                    origin: None,
                    message: format!(
                        "{host:?} is not a name a TLS certificate can be checked against"
                    ),
                })?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let pool = Pool::new(
            host,
            port,
            tls,
            CONNECT_TIMEOUT.min(cfg.limits.request_timeout),
        );
        Ok(Self {
            pool,
            host: crate::upstream::host_header(authority),
            upstream: Arc::new(upstream),
            min_rate: MinRate {
                bytes_per_sec: cfg.limits.body_min_rate,
                grace: cfg.limits.header_timeout,
            },
        })
    }

    /// POSTs a JSON body to `path` on the upstream and reads the answer (at most
    /// `max_body` bytes), within `deadline`: the credentials check of
    /// `auth.credentials_upstream`.
    pub async fn post_json(
        &self,
        path: &str,
        body: bytes::Bytes,
        request_id: &HeaderValue,
        max_body: usize,
        deadline: Instant,
    ) -> Result<(http::StatusCode, bytes::Bytes), String> {
        let pq = format!("{}{path}", self.upstream.base_path);
        let uri = Uri::from(PathAndQuery::try_from(pq).map_err(|e| e.to_string())?);
        let req = Request::post(uri)
            .header(header::HOST, self.host.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(portcullis::request_id::X_REQUEST_ID, request_id.clone())
            .body(
                http_body_util::Full::new(body)
                    .map_err(|n| match n {})
                    .boxed_unsync(),
            )
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let res = self.pool.send(req).await.map_err(|e| e.to_string())?;
            let status = res.status();
            let body = http_body_util::Limited::new(res.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    /// The upstream this proxy sends to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The origin-form target on the upstream: its base path, the normalised path, the
    /// query as sent.
    fn target(&self, path: &NormalizedPath, query: Option<&str>) -> Option<Uri> {
        let base = &self.upstream.base_path;
        let mut pq = String::with_capacity(
            base.len() + path.as_str().len() + query.map_or(0, |q| q.len() + 1),
        );
        pq.push_str(base);
        pq.push_str(path.as_str());
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Some(Uri::from(PathAndQuery::try_from(pq).ok()?))
    }

    /// Reads a request body whole: at most `limit` bytes (413), at `limits.body_min_rate`
    /// (408), by `deadline` (408); the connection is closed after any of these refusals.
    pub async fn read_body<B>(
        &self,
        body: B,
        limit: u64,
        deadline: Instant,
    ) -> Result<Bytes, Problem>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<portcullis::BoxError>,
    {
        let finished = Arc::new(AtomicBool::new(false));
        let body = LimitedBody::new(body, limit, self.min_rate, finished);
        match tokio::time::timeout_at(deadline, body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) => Err(body_error(&*e).unwrap_or_else(|| {
                Problem::new(ProblemKind::BadRequest)
                    .detail("the request body could not be read")
                    .close_connection()
            })),
            Err(_elapsed) => Err(Problem::new(ProblemKind::RequestTimeout)
                .detail("the request was not received in time")
                .close_connection()),
        }
    }

    /// Sends `req` upstream and returns the response, streaming both bodies; refusals and
    /// failures come back as the problem to answer with.
    pub async fn forward<B>(
        &self,
        req: Request<B>,
        f: Forward<'_>,
    ) -> Result<Response<Body>, Problem>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<portcullis::BoxError>,
    {
        let Forward {
            path,
            client,
            peer,
            identity,
            body_limit,
            deadline,
        } = f;
        let (mut parts, incoming) = req.into_parts();
        let Some(uri) = self.target(path, parts.uri.query()) else {
            return Err(Problem::new(ProblemKind::BadRequest)
                .detail("the request target cannot be forwarded"));
        };
        let host = forwarded_host(&parts.headers, &parts.uri);
        strip_hop_by_hop(&mut parts.headers);
        set_forwarding_headers(&mut parts.headers, client, peer, host);
        if let Some(who) = identity {
            set_identity_headers(&mut parts.headers, who);
        }
        parts.headers.insert(header::HOST, self.host.clone());
        parts.uri = uri;
        parts.version = Version::HTTP_11;

        let finished = Arc::new(AtomicBool::new(false));
        let body =
            LimitedBody::new(incoming, body_limit, self.min_rate, finished.clone()).boxed_unsync();
        let upstream_req = Request::from_parts(parts, body);

        let res = match tokio::time::timeout_at(deadline, self.pool.send(upstream_req)).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => return Err(upstream_error(&e)),
            Err(_elapsed) if !finished.load(Ordering::Acquire) => {
                return Err(Problem::new(ProblemKind::RequestTimeout)
                    .detail("the request was not received in time")
                    .close_connection());
            }
            Err(_elapsed) => {
                return Err(Problem::new(ProblemKind::UpstreamTimeout)
                    .detail("the upstream did not answer in time"));
            }
        };
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = DeadlineBody::new(body, deadline).boxed_unsync();
        Ok(Response::from_parts(parts, body))
    }
}

/// The refusal for a request body that failed while it was read: too large, too slow,
/// or malformed; `None` when the failure was not the body's.
fn body_error(e: &(dyn std::error::Error + 'static)) -> Option<Problem> {
    if caused_by::<BodyTooSlow>(e) {
        return Some(
            Problem::new(ProblemKind::RequestTimeout)
                .detail("the request body arrived slower than the minimum rate")
                .close_connection(),
        );
    }
    if caused_by::<BodyTooLarge>(e) {
        return Some(
            Problem::new(ProblemKind::PayloadTooLarge)
                .detail("the request body is larger than the limit")
                .close_connection(),
        );
    }
    if caused_by::<ClientBodyError>(e) {
        // Malformed chunked framing (the strict reader ends the stream) or a client gone
        // mid-body: the client's fault, and the connection cannot be read further.
        tracing::debug!(error = %DisplayChain(e), "request body failed");
        return Some(
            Problem::new(ProblemKind::BadRequest)
                .detail("the request body is malformed or was cut short")
                .close_connection(),
        );
    }
    None
}

fn upstream_error(e: &UpstreamError) -> Problem {
    if let Some(p) = body_error(e) {
        return p;
    }
    match e {
        UpstreamError::Connect(_) => {
            tracing::warn!(error = %DisplayChain(e), "upstream connection failed");
            Problem::new(ProblemKind::UpstreamUnavailable)
                .detail("the upstream could not be reached")
        }
        UpstreamError::Exchange(_) => {
            tracing::warn!(error = %DisplayChain(e), "upstream request failed");
            Problem::new(ProblemKind::UpstreamUnavailable).detail("the upstream failed to answer")
        }
    }
}

/// An error with its sources, for logs only.
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

/// The host the client asked for: its `Host` header, or the authority of an
/// absolute-form or HTTP/2 request.
fn forwarded_host(headers: &HeaderMap, uri: &Uri) -> Option<HeaderValue> {
    headers.get(header::HOST).cloned().or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard ones that clients and proxies still send.
fn hop_by_hop_names() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ]
}

/// Removes hop-by-hop headers, and those the `Connection` header names.
///
/// One pass over the names finds which are present (standard names compare as enum tags,
/// without hashing); only those are removed, and `Connection` is parsed only when it
/// lists something other than `close` or `keep-alive`. Requests usually have none of
/// these, responses usually just `Connection: keep-alive`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let names = hop_by_hop_names();
    let mut present = 0u16;
    for key in headers.keys() {
        for (i, n) in names.iter().enumerate() {
            if key == *n {
                present |= 1 << i;
            }
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                if token.is_empty()
                    || token.eq_ignore_ascii_case("close")
                    || token.eq_ignore_ascii_case("keep-alive")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for (i, n) in names.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*n);
        }
    }
}

/// Whether the bytes of a header name equal `want` (lower case, `-`), reading `_` as `-`.
fn name_eq(name: &[u8], want: &[u8]) -> bool {
    name.len() >= want.len()
        && want
            .iter()
            .zip(name)
            .all(|(w, c)| *w == c.to_ascii_lowercase() || (*w == b'-' && *c == b'_'))
}

/// `X-Auth-Subject` or `X-Auth-Roles`, in any case, with `-` or `_`.
fn is_identity_header(name: &str) -> bool {
    let b = name.as_bytes();
    (b.len() == 14 && name_eq(b, b"x-auth-subject"))
        || (b.len() == 12 && name_eq(b, b"x-auth-roles"))
}

/// `Forwarded`, `X-Real-IP` or `X-Forwarded-*`, with `-` or `_`.
fn is_forwarding_header(name: &str) -> bool {
    let b = name.as_bytes();
    (b.len() == 9 && (name_eq(b, b"forwarded") || name_eq(b, b"x-real-ip")))
        || (b.len() > 12 && name_eq(b, b"x-forwarded-"))
}

static X_AUTH_SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");
static X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");

/// Tells the upstream who the verified caller is: `X-Auth-Subject` and `X-Auth-Roles`
/// (comma-separated). Clients' own such headers were removed before.
pub fn set_identity_headers(headers: &mut HeaderMap, who: &portcullis_core::token::Identity) {
    if let Ok(v) = HeaderValue::from_bytes(who.subject.as_bytes()) {
        headers.insert(X_AUTH_SUBJECT.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_bytes(who.roles.join(",").as_bytes()) {
        headers.insert(X_AUTH_ROLES.clone(), v);
    }
}

/// Sets `X-Forwarded-For`, `-Proto` and `-Host`, replacing what an untrusted peer sent,
/// and removes identity headers a client may have forged. `peer` is the connected peer's
/// address as a header value.
pub fn set_forwarding_headers(
    headers: &mut HeaderMap,
    client: &ClientInfo,
    peer: &HeaderValue,
    host: Option<HeaderValue>,
) {
    let forged = |n: &HeaderName| {
        let s = n.as_str();
        is_identity_header(s) || (!client.peer_trusted && is_forwarding_header(s))
    };
    if headers.keys().any(forged) {
        let names: Vec<HeaderName> = headers.keys().filter(|n| forged(n)).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
    let appended = match headers.get(&X_FORWARDED_FOR) {
        Some(prior) if client.peer_trusted && !prior.as_bytes().trim_ascii().is_empty() => {
            let mut v = Vec::with_capacity(prior.len() + 2 + peer.len());
            v.extend_from_slice(prior.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        _ => None,
    };
    headers.insert(
        X_FORWARDED_FOR.clone(),
        appended.unwrap_or_else(|| peer.clone()),
    );
    if !(client.peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if client.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(client.peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST.clone(), h);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn info(trusted: bool) -> ClientInfo {
        let peer: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        ClientInfo {
            peer,
            ip: peer.ip(),
            peer_trusted: trusted,
            tls: false,
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        h.insert("x-forwarded-port", HeaderValue::from_static("1"));
        h.insert("x_forwarded_for", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-auth-subject", HeaderValue::from_static("admin"));
        h.insert("x_auth_roles", HeaderValue::from_static("admin"));
        h.insert("X-AUTH-ROLES", HeaderValue::from_static("admin"));
        set_forwarding_headers(
            &mut h,
            &info(false),
            &HeaderValue::from_static("10.0.0.1"),
            Some(HeaderValue::from_static("api.example")),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example");
        for gone in [
            "x-forwarded-port",
            "x_forwarded_for",
            "forwarded",
            "x-real-ip",
            "x-auth-subject",
            "x_auth_roles",
        ] {
            assert!(!h.contains_key(gone), "{gone} kept");
        }
    }

    #[test]
    fn trusted_forwarding_headers_are_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-auth-subject", HeaderValue::from_static("admin"));
        set_forwarding_headers(
            &mut h,
            &info(true),
            &HeaderValue::from_static("10.0.0.1"),
            Some(HeaderValue::from_static("api.example")),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(
            !h.contains_key("x-auth-subject"),
            "identity headers are never trusted"
        );
    }
}
