//! The protection stack of the main listener, in one place.
//!
//! Cheapest refusals first, so that hostile traffic costs as little as possible, and
//! every refusal is a problem+json response carrying the request id:
//!
//! 1. **client and request id**: before anything can refuse, so every response and log
//!    line names the request and the client; then **framing and `Host`**
//!    ([`crate::framing`]: no request whose end or target two parties could read
//!    differently goes further, 400/501 and the connection closed);
//! 2. **methods never forwarded** (`TRACE`, `CONNECT` → 405): they have no business at
//!    an API and `TRACE` reflects credentials;
//! 3. **size limits** on the target and the header block (414, 431): a fixed cost, no
//!    parsing;
//! 4. **path normalisation** (400) and **routing**: every later rule keys on the route,
//!    and no spelling of a path may dodge it;
//! 5. **declared body size** (413) before anything reads a body;
//! 6. **identity, noted**: a presented token is verified (from a cache after the first
//!    time), not yet acted on;
//! 7. **rate limit**, keyed by the verified subject, else the client address: a request
//!    whose token was refused counts against its address's anonymous quota before the
//!    401, so bad tokens cannot be flooded for free;
//! 8. **the gateway's own routes** (`/auth/*`, the JWKS): they carry their own
//!    credentials, so they come before the identity decision; `GET /auth/csrf` issues
//!    CSRF tokens, and the auth routes pass the CSRF check first ([`crate::csrf`]);
//! 9. **identity, acted on**: a refused token is a 401 whatever the route, two
//!    `Authorization` headers a 400;
//! 10. **route roles**: 401 without an identity, 403 without the role;
//! 11. **CSRF** for state-changing requests riding on cookies: Fetch Metadata, `Origin`,
//!     then the token (a form body is read to find it);
//! 12. **body validation** on routes with `schema` or `sanitize_html` (415, 400, 422);
//! 13. **lockout before an upstream login route** (`login = {…}`): the body is read
//!     (16 KiB at most) for the username; a locked attempt never reaches the upstream,
//!     and the upstream's 401/403 count as failures;
//! 14. **the response cache** on routes that cache ([`crate::cache`]): a fresh entry
//!     answers (`X-Cache: HIT`); otherwise the answer is marked `MISS` or `BYPASS`, a
//!     miss is stored as it streams back, and a successful unsafe request purges its
//!     path;
//! 15. **the upstream**, bounded by `limits.request_timeout`, bodies streamed (unless a
//!     step read them), with the verified identity in `X-Auth-Subject` / `X-Auth-Roles`.
//!
//! CORS preflights are answered right after routing (step 4), before anything else can
//! refuse them. Every response, refusals included, leaves with the route's security
//! headers and, when CORS is on, `Vary: Origin` and the CORS headers of an allowed origin.
//!
//! Every answer after step 7 carries the rate-limit headers.
//!
//! The access log line and the request metrics are written when the response head
//! leaves, whatever the outcome.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use portcullis::client::ClientInfo;
use portcullis::cors::{Cors, Preflight};
use portcullis::headers::{Profile, SecurityHeaders};
use portcullis::path::normalize;
use portcullis::request_id::{self, RequestId, X_REQUEST_ID};
use portcullis::trace_context::TraceContext;
use portcullis::validate::{Validated, check_content_type, validate};
use portcullis::{Problem, ProblemKind, Rejection, RejectionBody};
use portcullis_core::net::TrustedProxies;
use tokio::time::Instant;

use crate::auth_routes::{AuthRoute, AuthRoutes};
use crate::body::Body;
use crate::cache::{Lookup, ResponseCache};
use crate::config::{Config, Limits};
use crate::csrf::Csrf;
use crate::events::{EventKind, Events};
use crate::h1guard::Verdicts;
use crate::identity::{Auth, Verdict};
use crate::proxy::{Forward, Proxy, X_FORWARDED_PROTO};
use crate::ratelimit::{Limiter, Outcome};
use crate::routes::{Route, Routes};
use crate::telemetry::scope::RequestScope;
use crate::telemetry::trace::{self, RequestSpan};

/// Everything the main listener needs to answer a request.
#[derive(Debug)]
pub struct Gateway {
    trusted: TrustedProxies,
    limits: Limits,
    routes: Routes,
    proxy: Proxy,
    redact_headers: Vec<String>,
    auth: Option<Arc<Auth>>,
    auth_routes: Option<AuthRoutes>,
    events: Arc<Events>,
    limiter: Option<Arc<Limiter>>,
    /// The security headers of each profile (`api`, `web`, `off`), and the default one.
    headers: SecurityProfiles,
    cors: Option<Cors>,
    csrf: Option<Csrf>,
    cache: Arc<ResponseCache>,
    errors: crate::telemetry::errors::ErrorMetrics,
}

/// [`SecurityHeaders`] made once per profile, with `[headers]`'s settings.
#[derive(Debug)]
struct SecurityProfiles {
    default: Profile,
    api: SecurityHeaders,
    web: SecurityHeaders,
    off: SecurityHeaders,
}

impl SecurityProfiles {
    fn new(cfg: &crate::config::HeadersConfig) -> Self {
        let make = |p| SecurityHeaders::new(p, cfg.hsts, cfg.set.clone());
        Self {
            default: cfg.profile,
            api: make(Profile::Api),
            web: make(Profile::Web),
            off: make(Profile::Off),
        }
    }

    fn get(&self, route: Option<Profile>) -> &SecurityHeaders {
        match route.unwrap_or(self.default) {
            Profile::Api => &self.api,
            Profile::Web => &self.web,
            Profile::Off => &self.off,
        }
    }
}

/// Where a request came in: made once per connection.
#[derive(Debug)]
pub struct Conn {
    /// The connected peer.
    pub peer: SocketAddr,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    /// The peer's address as a header value, for `X-Forwarded-For`.
    pub peer_header: HeaderValue,
    /// What the strict HTTP/1 reader ([`crate::h1guard`]) refused on this connection, when
    /// it reads the connection.
    pub verdicts: Option<Arc<Verdicts>>,
    /// Requests seen on this connection so far, to match them with `verdicts`.
    requests: AtomicU64,
}

impl Conn {
    /// A connection from `peer`.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let ip = portcullis_core::net::canonical_ip(peer.ip()).to_string();
        Self {
            peer,
            tls,
            peer_header: HeaderValue::from_str(&ip).expect("an IP address is a valid header value"),
            verdicts: None,
            requests: AtomicU64::new(0),
        }
    }

    /// A connection read through the strict HTTP/1 reader that fills `verdicts`.
    pub fn guarded(peer: SocketAddr, tls: bool, verdicts: Arc<Verdicts>) -> Self {
        Self {
            verdicts: Some(verdicts),
            ..Self::new(peer, tls)
        }
    }

    /// The refusal of the strict reader for the next request on this connection, if any.
    fn next_request_refused(&self) -> Option<crate::h1guard::Refusal> {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        self.verdicts.as_ref()?.refusal(index)
    }
}

impl Gateway {
    /// Assembles the stack from a validated configuration.
    #[allow(clippy::too_many_arguments)] // each part is built once, in `lib.rs`
    pub fn new(
        cfg: &Config,
        proxy: Proxy,
        auth: Option<Arc<Auth>>,
        store: portcullis_core::store::SharedStore,
        events: Arc<Events>,
        limiter: Option<Arc<Limiter>>,
        csrf: Option<Csrf>,
        cache: Arc<ResponseCache>,
    ) -> Arc<Self> {
        let auth_routes = auth
            .as_ref()
            .map(|a| AuthRoutes::new(a.clone(), store, events.clone(), proxy.clone()));
        Arc::new(Self {
            trusted: cfg.trusted_proxies.clone(),
            limits: cfg.limits.clone(),
            routes: Routes::new(&cfg.routes),
            proxy,
            redact_headers: cfg.log.redact_headers.clone(),
            auth,
            auth_routes,
            events,
            limiter,
            headers: SecurityProfiles::new(&cfg.headers),
            cors: cfg.cors.clone(),
            csrf,
            cache,
            errors: crate::telemetry::errors::ErrorMetrics::new(),
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
        // The client's trace, continued (or a new one): the upstream sees the gateway's
        // hop as its parent, and every log line of the request names the trace. With
        // tracing on, the gateway's span is started here and its ids replace the
        // hop's (so what is exported is what the upstream sees); off, this is a branch.
        let mut trace = TraceContext::from_headers(req.headers());
        let span = RequestSpan::start(&mut trace, req.method(), req.uri().path(), id.as_str());
        trace.apply(req.headers_mut());
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

        // Kept for the response: whether the request was secure, and its origin.
        let secure = is_secure(&client, req.headers());
        let preflight = self.cors.is_some() && Cors::is_preflight(&req);
        let origin = if self.cors.is_some() && !preflight {
            req.headers().get(header::ORIGIN).cloned()
        } else {
            None
        };

        // Every line logged while the request is answered names it and its trace.
        let scope = RequestScope::new(id.as_str(), trace.trace_id());
        // A panic in a step is a bug: caught here, logged once with the request's ids,
        // counted and answered 500, and the connection and the process keep serving.
        // Nothing the steps share is left half-changed by an unwind (state lives in the
        // store and behind short lock scopes), hence `AssertUnwindSafe`.
        let protected = AssertUnwindSafe(scope.run(self.protect(req, &client, conn, &id, started)))
            .catch_unwind();
        let caught = match &span {
            Some(s) => s.run(protected).await,
            None => protected.await,
        };
        let (mut res, route, panicked) = match caught {
            Ok((res, route)) => (res, route, false),
            Err(payload) => {
                self.errors.panicked();
                tracing::error!(
                    request_id = id.as_str(),
                    trace_id = trace.trace_id(),
                    panic = %crate::telemetry::errors::take_panic(&*payload),
                    "request handling panicked; answered 500"
                );
                let (res, route) = refused(
                    Problem::new(ProblemKind::Internal)
                        .detail("the gateway failed to answer this request"),
                    &id,
                    self.routes.unrouted(),
                );
                (res, route, true)
            }
        };

        // Every response, refusals included: the route's security headers, and CORS
        // (preflight answers carry their own).
        self.headers
            .get(route.headers)
            .apply(res.headers_mut(), secure);
        if let Some(cors) = &self.cors
            && !preflight
        {
            let mut asked = http::HeaderMap::new();
            if let Some(o) = origin {
                asked.insert(header::ORIGIN, o);
            }
            cors.apply(&asked, res.headers_mut());
        }
        res.headers_mut()
            .insert(X_REQUEST_ID, id.header_value().clone());
        let elapsed = started.elapsed();
        let status = res.status().as_u16();
        if route.audit {
            crate::audit::record(
                "route.request",
                &client.ip.to_string(),
                &format!("{} {} {}", route.name, method, uri.path()),
                itoa::Buffer::new().format(status),
                id.as_str(),
            );
        }
        route.metrics.record(status, elapsed);
        if let Some(s) = span {
            let refusal = res.extensions().get::<Rejection>().map(|r| r.kind.slug());
            s.finish(&route.name, status, refusal);
        }
        let duration_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        let rejection = res.extensions().get::<Rejection>();
        if let Some(r) = rejection
            && !panicked
        {
            self.errors.refusal(r.kind);
        }
        match rejection {
            Some(r) => tracing::info!(
                target: "portcullis::access",
                request_id = id.as_str(),
                trace_id = trace.trace_id(),
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
                trace_id = trace.trace_id(),
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

        // 1. Framing and Host: nothing ambiguous goes further (no smuggling). A head the
        //    strict reader refused arrives as a stand-in request, answered here.
        if let Some(r) = conn.next_request_refused() {
            let p = Problem::new(r.kind).detail(r.detail).close_connection();
            return refuse(p, unrouted);
        }
        if let Err(p) = crate::framing::check(&req) {
            return refuse(p, unrouted);
        }

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
        #[cfg(debug_assertions)]
        crate::telemetry::errors::debug::maybe_panic(path.match_key());

        // 4b. CORS preflights: answered here for any origin, before auth, rate limits and
        //     CSRF, never proxied.
        if let Some(cors) = &self.cors
            && Cors::is_preflight(&req)
        {
            return match cors.preflight(req.headers()) {
                Preflight::Allowed(headers) => {
                    let mut res = Response::new(Body::from_bytes(bytes::Bytes::new()));
                    *res.status_mut() = http::StatusCode::NO_CONTENT;
                    *res.headers_mut() = headers;
                    (res, route)
                }
                Preflight::Refused(why) => {
                    let (mut res, r) = refuse(
                        Problem::new(ProblemKind::Forbidden)
                            .detail(format!("CORS preflight refused: {why}")),
                        route,
                    );
                    // `Vary: Origin` only: no CORS header for a refused preflight.
                    cors.apply(&http::HeaderMap::new(), res.headers_mut());
                    (res, r)
                }
            };
        }

        // 5. Declared body size (the route's limit, else `limits.body`).
        let body_limit = route.body_limit.unwrap_or(self.limits.body);
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

        let deadline = started + self.limits.request_timeout;

        // 6. Identity, noted: verified now, acted on after the rate limit.
        let step = trace::step("identity");
        let verdict = self
            .auth
            .as_ref()
            .map_or(Verdict::Anonymous, |a| a.identify(req.headers()));
        trace::note(&step, "portcullis.identity", verdict.label());
        drop(step);
        let identity = match &verdict {
            Verdict::Verified(who) => Some(who.clone()),
            _ => None,
        };

        // 7. Rate limit, keyed by the verified subject, else the address: a refused token
        //    counts against its address's anonymous quota before it is refused.
        let checked = match &self.limiter {
            None => None,
            Some(limiter) => match self
                .rate_limit_step(limiter, route, &identity, client, id)
                .await
            {
                Outcome::Pass(c) => Some(c),
                Outcome::Limited(c) => {
                    let (p, wait) = limiter.refusal(&c);
                    let (mut res, r) = refuse(p, route);
                    res.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                    limiter.headers(&c, res.headers_mut());
                    return (res, r);
                }
                Outcome::Unavailable(_) => {
                    let (p, wait) = limiter.unavailable();
                    let (mut res, r) = refuse(p, route);
                    res.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                    return (res, r);
                }
            },
        };

        let (mut res, route) = self
            .past_limit(
                req, client, conn, id, route, &path, body_limit, deadline, verdict,
            )
            .await;
        if let (Some(limiter), Some(c)) = (&self.limiter, &checked) {
            limiter.finish(c, res.status()).await;
            limiter.headers(c, res.headers_mut());
        }
        (res, route)
    }

    /// Step 7's decision, in its span when tracing.
    async fn rate_limit_step(
        &self,
        limiter: &Limiter,
        route: &Route,
        identity: &Option<Arc<portcullis_core::token::Identity>>,
        client: &ClientInfo,
        id: &RequestId,
    ) -> Outcome {
        let step = trace::step("rate_limit");
        let check = limiter.check(&route.name, identity.as_deref(), client.ip, id.as_str());
        let outcome = trace::within(&step, check).await;
        trace::note(&step, "portcullis.decision", outcome.label());
        outcome
    }

    /// The steps after the rate limit.
    #[allow(clippy::too_many_arguments)] // the request's context, passed along once
    async fn past_limit<'r>(
        &'r self,
        req: Request<Incoming>,
        client: &ClientInfo,
        conn: &Conn,
        id: &RequestId,
        route: &'r Route,
        path: &portcullis::path::NormalizedPath,
        body_limit: u64,
        deadline: Instant,
        verdict: Verdict,
    ) -> (Response<Body>, &'r Route) {
        let refuse = |p: Problem, route| refused(p, id, route);
        // 8. The gateway's own routes: `GET /auth/csrf`, and the auth routes after the
        //    CSRF check (`/auth/refresh` and `/auth/logout` need no token: they change
        //    nothing another site could use).
        let verified = match &verdict {
            Verdict::Verified(who) => Some(&**who),
            _ => None,
        };
        if let Some(csrf) = &self.csrf
            && path.match_key() == "/auth/csrf"
        {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return refuse(
                    Problem::new(ProblemKind::MethodNotAllowed).detail("use GET"),
                    route,
                );
            }
            return (
                csrf.issue(verified, req.headers(), id.as_str()).await,
                route,
            );
        }
        if let (Some(routes), Some(own)) = (&self.auth_routes, AuthRoute::find(path.match_key())) {
            let mut held = Held::Streaming(req);
            if let Some(csrf) = &self.csrf {
                let token = matches!(own, AuthRoute::Login);
                held = match self
                    // Own routes take JSON: their token comes from the header only.
                    .csrf_step(
                        csrf, held, verified, token, false, client, id, body_limit, deadline,
                    )
                    .await
                {
                    Ok(h) => h,
                    Err(res) => return (res, route),
                };
            }
            let Held::Streaming(req) = held else {
                unreachable!("own routes are checked without reading the body")
            };
            let session = verified.and_then(|w| w.session.clone());
            let step = trace::step("auth_route");
            let res = trace::within(
                &step,
                routes.handle(own, req, client.ip, id.as_str(), deadline),
            )
            .await;
            drop(step);
            if let (AuthRoute::Logout, Some(csrf), Some(sid)) = (own, &self.csrf, session)
                && res.status().is_success()
            {
                csrf.revoke(&sid).await;
            }
            return (res, route);
        }

        // 9. Act on the identity noted before.
        let identity = match verdict {
            Verdict::Anonymous => None,
            Verdict::Verified(identity) => Some(identity),
            Verdict::Ambiguous => {
                return refuse(
                    Problem::new(ProblemKind::BadRequest)
                        .detail("more than one Authorization header"),
                    route,
                );
            }
            Verdict::Refused(e) => {
                let detail = format!(
                    "{}; {}",
                    e.reason(),
                    req.headers()
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split_once(' '))
                        .map(|(_, t)| portcullis_core::token::describe_header(t.trim()))
                        .unwrap_or_default()
                );
                self.events.emit(
                    EventKind::InvalidToken,
                    &client.ip.to_string(),
                    &detail,
                    Some(id.as_str()),
                );
                let (mut res, r) = refuse(
                    Problem::new(ProblemKind::InvalidToken).detail("the access token is not valid"),
                    route,
                );
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
                return (res, r);
            }
        };

        // 10. Route roles.
        if !route.roles.is_empty() {
            match &identity {
                None => {
                    let (mut res, r) = refuse(
                        Problem::new(ProblemKind::Unauthorized)
                            .detail("this route needs an access token"),
                        route,
                    );
                    res.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    return (res, r);
                }
                Some(who) if !route.roles.iter().any(|r| who.has_role(r)) => {
                    self.events.emit(
                        EventKind::Forbidden,
                        &who.subject,
                        &format!(
                            "route {} needs one of {}",
                            route.name,
                            route.roles.join(", ")
                        ),
                        Some(id.as_str()),
                    );
                    return refuse(
                        Problem::new(ProblemKind::Forbidden)
                            .detail("the access token lacks a role this route needs"),
                        route,
                    );
                }
                Some(_) => {}
            }
        }

        // 11. CSRF, for state-changing requests riding on cookies; a token in a form
        //     body is read from the body, which is then forwarded as it came.
        let mut held = Held::Streaming(req);
        if let Some(csrf) = &self.csrf {
            held = match self
                .csrf_step(
                    csrf,
                    held,
                    identity.as_deref(),
                    true,
                    true,
                    client,
                    id,
                    body_limit,
                    deadline,
                )
                .await
            {
                Ok(h) => h,
                Err(res) => return (res, route),
            };
        }

        // 12. Bodies the route checks (`schema`, `sanitize_html`): read whole, up to the
        //     body limit, and validated before anything of them is forwarded.
        if let Some(rules) = &route.body
            && expects_body(held.method(), held.headers())
        {
            let step = trace::step("validation");
            if let Err(r) = check_content_type(held.headers()) {
                return refuse(r.to_problem(), route);
            }
            if encoded(held.headers()) {
                return refuse(
                    Problem::new(ProblemKind::UnsupportedMediaType).detail(
                        "a Content-Encoding other than identity is not accepted on this route",
                    ),
                    route,
                );
            }
            let (parts, bytes) = match held {
                Held::Read(parts, bytes) => (parts, bytes),
                Held::Streaming(req) => {
                    let (parts, body) = req.into_parts();
                    match self.proxy.read_body(body, body_limit, deadline).await {
                        Ok(b) => (parts, b),
                        Err(p) => return refuse(p, route),
                    }
                }
            };
            held = match validate(&bytes, rules) {
                Ok(Validated::Original) => Held::Read(parts, bytes),
                Ok(Validated::Sanitized(new)) => Held::Read(parts, new),
                Err(r) => {
                    trace::note(&step, "portcullis.decision", "refused");
                    return refuse(r.to_problem(), route);
                }
            };
            trace::note(&step, "portcullis.decision", "passed");
        }

        let forward = Forward {
            path,
            client,
            peer: &conn.peer_header,
            identity: identity.as_deref(),
            body_limit,
            deadline,
        };

        // 13. Lockout in front of the upstream's own login route.
        if let (Some(field), Some(routes)) = (&route.login_username_field, &self.auth_routes) {
            let (parts, bytes) = match held {
                Held::Read(parts, bytes) => (parts, bytes),
                Held::Streaming(req) => {
                    let (parts, body) = req.into_parts();
                    let limit = body_limit.min(LOGIN_BODY_LIMIT);
                    match self.proxy.read_body(body, limit, deadline).await {
                        Ok(b) => (parts, b),
                        Err(p) => return refuse(p, route),
                    }
                }
            };
            let raw = crate::auth_routes::login_username(&parts.headers, &bytes, field);
            let guard = match routes
                .upstream_login_begin(raw, client.ip, id.as_str())
                .await
            {
                Ok(g) => g,
                Err(res) => return (res, route),
            };
            let step = trace::step("upstream");
            let forwarded =
                trace::within(&step, self.proxy.forward(whole(parts, bytes), forward)).await;
            drop(step);
            return match forwarded {
                Ok(res) => {
                    guard.finish(res.status()).await;
                    (res, route)
                }
                Err(p) => refuse(p, route),
            };
        }

        // 14. The response cache, on routes that cache: a fresh entry answers; a miss is
        //     stored as it streams back; a successful unsafe request drops its path's
        //     entries.
        let lookup = match self.cache.rule(route.cache.as_ref()) {
            None => None,
            Some(rule) => {
                let step = trace::step("cache");
                let found = trace::within(
                    &step,
                    self.cache.lookup(
                        rule,
                        held.method(),
                        held.headers(),
                        path.as_str(),
                        held.uri().query(),
                        identity.as_deref().map(|w| w.subject.as_str()),
                        client.peer_trusted,
                    ),
                )
                .await;
                trace::note(&step, "portcullis.cache", found.as_str());
                Some(found)
            }
        };
        let lookup = match lookup {
            Some(Lookup::Hit(res)) => return (res, route),
            other => other,
        };

        // 15. The upstream.
        let step = trace::step("upstream");
        let forwarded = match held {
            Held::Streaming(req) => trace::within(&step, self.proxy.forward(req, forward)).await,
            Held::Read(parts, bytes) => {
                trace::within(&step, self.proxy.forward(whole(parts, bytes), forward)).await
            }
        };
        if let Some(s) = &step {
            match &forwarded {
                Ok(res) => s.note(
                    "http.response.status_code",
                    i64::from(res.status().as_u16()),
                ),
                Err(p) => s.note("portcullis.refusal", p.kind().slug()),
            }
        }
        drop(step);
        // The upstream failed (or answered 500, 502, 503 or 504): a stale entry that
        // `stale-if-error` still allows answers instead.
        if let Some(Lookup::Miss(pending)) = &lookup {
            let failed = match &forwarded {
                Ok(res) => matches!(res.status().as_u16(), 500 | 502 | 503 | 504),
                Err(_) => true,
            };
            if failed && let Some(res) = self.cache.fall_back(pending) {
                return (res, route);
            }
        }
        match forwarded {
            Ok(mut res) => {
                // A route that caches authenticated answers per subject has opted in:
                // the upstream's caching headers pass as they are.
                let opted_in = route.cache.as_ref().is_some_and(|c| c.per_subject);
                if identity.is_some() && !opted_in {
                    private_when_authenticated(res.headers_mut());
                }
                match lookup {
                    Some(Lookup::Miss(pending)) => res = self.cache.fill(pending, res),
                    Some(Lookup::Bypass) => ResponseCache::mark_bypass(&mut res),
                    Some(Lookup::Invalidate) => self.cache.invalidate(path.as_str(), &mut res),
                    Some(Lookup::Hit(_)) | None => {}
                }
                (res, route)
            }
            Err(p) => refuse(p, route),
        }
    }
}

/// A request on its way through the stack: its body still streaming from the client, or
/// read whole (and checked) by a step that needed it.
enum Held {
    Streaming(Request<Incoming>),
    Read(http::request::Parts, Bytes),
}

impl Held {
    fn headers(&self) -> &http::HeaderMap {
        match self {
            Self::Streaming(r) => r.headers(),
            Self::Read(p, _) => &p.headers,
        }
    }

    fn method(&self) -> &Method {
        match self {
            Self::Streaming(r) => r.method(),
            Self::Read(p, _) => &p.method,
        }
    }

    fn uri(&self) -> &http::Uri {
        match self {
            Self::Streaming(r) => r.uri(),
            Self::Read(p, _) => &p.uri,
        }
    }
}

impl Gateway {
    /// The CSRF check of a request, when it applies: the source, then (when `token`) the
    /// token from the header or (when `forms`) a form body. A refusal is a 403 (503 while the store is
    /// unavailable in `deny` mode) and a `csrf_rejected` event.
    #[allow(clippy::too_many_arguments)] // the request's context, passed along once
    async fn csrf_step(
        &self,
        csrf: &Csrf,
        held: Held,
        identity: Option<&portcullis_core::token::Identity>,
        token: bool,
        forms: bool,
        client: &ClientInfo,
        id: &RequestId,
        body_limit: u64,
        deadline: Instant,
    ) -> Result<Held, Response<Body>> {
        if !Csrf::applies(held.method(), held.headers()) {
            return Ok(held);
        }
        let step = trace::step("csrf");
        let refused = |r: crate::csrf::Refusal| {
            self.events.emit(
                EventKind::CsrfRejected,
                &client.ip.to_string(),
                &r.detail,
                Some(id.as_str()),
            );
            let mut res = r.problem.into_response(Some(id.as_str()));
            res.headers_mut().append(
                header::VARY,
                HeaderValue::from_static("Origin, Sec-Fetch-Site"),
            );
            if res.status() == http::StatusCode::SERVICE_UNAVAILABLE {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            res
        };
        let secure = is_secure(client, held.headers());
        let own = crate::csrf::own_origin(held.headers(), held.uri(), secure, client.peer_trusted)
            .unwrap_or_default();
        if let Err(r) = csrf.check_source(held.headers(), &own) {
            return Err(refused(r));
        }
        if !token {
            return Ok(held);
        }
        let binding = csrf.binding(identity, held.headers());
        let in_header =
            portcullis::csrf::token_from_header(held.headers(), csrf.header()).map(str::to_owned);
        let (held, presented) = match (in_header, held) {
            (Some(t), held) => (held, Some(t)),
            (None, Held::Streaming(req)) if forms && portcullis::csrf::is_form(req.headers()) => {
                let (parts, body) = req.into_parts();
                let bytes = match self.proxy.read_body(body, body_limit, deadline).await {
                    Ok(b) => b,
                    Err(p) => return Err(p.into_response(Some(id.as_str()))),
                };
                let t = portcullis::csrf::form_token(&parts.headers, &bytes, csrf.form_field());
                (Held::Read(parts, bytes), t)
            }
            (None, Held::Read(parts, bytes)) => {
                let t = portcullis::csrf::form_token(&parts.headers, &bytes, csrf.form_field());
                (Held::Read(parts, bytes), t)
            }
            (None, held) => (held, None),
        };
        match trace::within(
            &step,
            csrf.check_token(binding.as_ref(), presented.as_deref()),
        )
        .await
        {
            Ok(_) => {
                trace::note(&step, "portcullis.decision", "passed");
                Ok(held)
            }
            Err(r) => {
                trace::note(&step, "portcullis.decision", "refused");
                Err(refused(r))
            }
        }
    }
}

/// Whether a request came over TLS, or from a trusted proxy saying it did.
fn is_secure(client: &ClientInfo, headers: &http::HeaderMap) -> bool {
    client.tls
        || (client.peer_trusted
            && headers
                .get(&X_FORWARDED_PROTO)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")))
}

/// A request whose body was read whole, framed by `Content-Length`.
fn whole(mut parts: http::request::Parts, body: Bytes) -> Request<Full<Bytes>> {
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Request::from_parts(parts, Full::new(body))
}

/// Whether a request comes with a body to check: it declares one, or its method is one
/// that sends one (an empty `POST` to a route with a schema is refused, not waved through).
fn expects_body(method: &Method, headers: &http::HeaderMap) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        || headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Whether the body is compressed or otherwise encoded: such a body cannot be checked
/// without inflating it, which the gateway does not do.
fn encoded(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|c| !c.trim_ascii().is_empty() && !c.trim_ascii().eq_ignore_ascii_case(b"identity"))
}

/// Largest body read on a route with `login = {…}` (the username is taken from it).
const LOGIN_BODY_LIMIT: u64 = 16 * 1024;

/// A response to an authenticated request must not be stored by shared caches: it leaves
/// with `Cache-Control: private` unless the upstream already said `private` or
/// `no-store`.
fn private_when_authenticated(headers: &mut http::HeaderMap) {
    let already = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store")
        });
    if !already {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

fn refused<'r>(p: Problem, id: &RequestId, route: &'r Route) -> (Response<Body>, &'r Route) {
    (p.into_response(Some(id.as_str())), route)
}
