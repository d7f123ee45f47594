//! The gateway's own routes on the main listener: `POST /auth/login`, `/auth/refresh`,
//! `/auth/logout`, and `GET /.well-known/jwks.json` (DESIGN §4).
//!
//! - Login checks the lockout first (a locked pair, an account over its hourly ceiling, a
//!   source over its ceiling: 429 with `Retry-After`, the same answer whether or not the
//!   account exists, and no password evaluated), then the credentials (the users file,
//!   argon2id, with the same work for unknown users; or the upstream's own check), then
//!   starts a session: an access token and a refresh token.
//! - Refresh rotates the refresh token (see `portcullis_core::session`); reuse revokes
//!   the session everywhere. It fails closed while the store is unavailable.
//! - Logout revokes the session everywhere within a second.
//! - Every answer carrying a token is `Cache-Control: no-store`.

// Refusals are returned as the response to send (`Result<_, Response<Body>>`): one per
// request, so their size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use portcullis::{Problem, ProblemKind, RejectionBody};
use portcullis_core::auth::lockout::{LockDecision, LockoutPolicy};
use portcullis_core::auth::password;
use portcullis_core::auth::username::{self, Username};
use portcullis_core::auth::users::UsersFile;
use portcullis_core::net::ip_key;
use portcullis_core::session::{
    Family, RefreshToken, RotateArgs, Rotation, open_successor, seal_successor,
};
use portcullis_core::store::{FailMode, Routed, SharedStore};
use portcullis_core::token::AccessClaims;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::body::Body;
use crate::events::{EventKind, Events};
use crate::identity::{ACCESS_COOKIE, Auth, REFRESH_COOKIE, Verdict, cookie, token_cookie};
use crate::proxy::Proxy;

/// Largest body accepted on `/auth/*` (security-defaults: 16 KiB).
const AUTH_BODY_LIMIT: usize = 16 * 1024;
/// IPv6 sources are keyed by their /64 for lockout (an end site's smallest network).
const LOCKOUT_V6_PREFIX: u8 = 64;
/// `Retry-After` while the store is unavailable.
const STORE_RETRY_AFTER: u64 = 5;

/// Which of the gateway's own routes a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthRoute {
    /// `POST /auth/login`.
    Login,
    /// `POST /auth/refresh`.
    Refresh,
    /// `POST /auth/logout`.
    Logout,
    /// `GET /.well-known/jwks.json`.
    Jwks,
}

impl AuthRoute {
    /// The route for a normalised match key, if it is one of ours.
    pub fn find(match_key: &str) -> Option<Self> {
        match match_key {
            "/auth/login" => Some(Self::Login),
            "/auth/refresh" => Some(Self::Refresh),
            "/auth/logout" => Some(Self::Logout),
            "/.well-known/jwks.json" => Some(Self::Jwks),
            _ => None,
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Jwks => Method::GET,
            _ => Method::POST,
        }
    }
}

/// Where users and passwords come from.
#[derive(Debug)]
enum Credentials {
    /// The users file, reloaded when it changes.
    File {
        path: std::path::PathBuf,
        cached: std::sync::Mutex<(Option<std::time::SystemTime>, Arc<UsersFile>)>,
    },
    /// A path on the upstream.
    Upstream(String),
    /// Nothing configured: every login fails (the same work is still done).
    None,
}

/// The auth routes' state.
#[derive(Debug)]
pub struct AuthRoutes {
    auth: Arc<Auth>,
    store: SharedStore,
    events: Arc<Events>,
    proxy: Proxy,
    credentials: Credentials,
    policy: LockoutPolicy,
    /// Bounds concurrent argon2 evaluations (19 MiB each).
    hashing: Semaphore,
    /// Accounts with a login being evaluated on this instance: one at a time per account,
    /// so that concurrent attempts cannot all pass the lockout check before any failure
    /// is recorded.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Marks an account's login in flight until dropped.
struct InFlight<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    account: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.account);
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut res = Response::new(Body::from_bytes(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

fn problem(p: Problem, id: &str) -> Response<Body> {
    p.into_response(Some(id))
}

fn www_authenticate(res: &mut Response<Body>, invalid_token: bool) {
    let v = if invalid_token {
        HeaderValue::from_static("Bearer error=\"invalid_token\"")
    } else {
        HeaderValue::from_static("Bearer")
    };
    res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
}

fn retry_after(res: &mut Response<Body>, d: Duration) {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
}

fn store_unavailable(id: &str) -> Response<Body> {
    let mut res = problem(
        Problem::new(ProblemKind::StoreUnavailable)
            .detail("sessions are temporarily unavailable; retry shortly"),
        id,
    );
    retry_after(&mut res, Duration::from_secs(STORE_RETRY_AFTER));
    res
}

fn invalid_token(id: &str, detail: &'static str) -> Response<Body> {
    let mut res = problem(Problem::new(ProblemKind::InvalidToken).detail(detail), id);
    www_authenticate(&mut res, true);
    res
}

/// A login through the upstream's own login route (a route with `login = { username_field
/// = "…" }`), between the lockout check and the upstream's answer.
#[derive(Debug)]
pub struct UpstreamLogin<'a> {
    routes: &'a AuthRoutes,
    account: Option<Username>,
    source: String,
    id: String,
    _in_flight: Option<InFlight<'a>>,
}

impl std::fmt::Debug for InFlight<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("account", &self.account)
            .finish()
    }
}

impl UpstreamLogin<'_> {
    /// Records the upstream's answer: 401 or 403 is a failed login, 2xx a success.
    pub async fn finish(self, status: StatusCode) {
        let r = self.routes;
        let failed = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
        match (&self.account, failed) {
            (Some(account), true) => {
                let after = r
                    .store
                    .lockout_failure(account, &self.source, &r.policy)
                    .await;
                r.lockout_event(after.value(), account.as_str(), &self.source, &self.id);
            }
            (None, true) => {
                let _ = r
                    .store
                    .lockout_source_failure(&self.source, &r.policy)
                    .await;
            }
            (Some(account), false) if status.is_success() => {
                let _ = r
                    .store
                    .lockout_success(account, &self.source, &r.policy)
                    .await;
            }
            _ => {}
        }
    }
}

/// The username a login request carries in `field`: a top-level member of a JSON object,
/// or a field of a URL-encoded form.
pub fn login_username(headers: &http::HeaderMap, body: &[u8], field: &str) -> Option<String> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("application/x-www-form-urlencoded") {
        return std::str::from_utf8(body).ok()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k)? == field).then(|| form_decode(v)).flatten()
        });
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(field)?.as_str().map(str::to_owned)
}

fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: Option<String>,
}

impl AuthRoutes {
    /// The routes, with credentials from `auth.users_file` or `auth.credentials_upstream`.
    pub fn new(auth: Arc<Auth>, store: SharedStore, events: Arc<Events>, proxy: Proxy) -> Self {
        let cfg = &auth.cfg;
        let credentials = match (&cfg.credentials_upstream, &cfg.users_file) {
            (Some(path), _) => Credentials::Upstream(path.clone()),
            (None, Some(path)) => Credentials::File {
                path: path.clone(),
                cached: std::sync::Mutex::new((None, Arc::new(UsersFile::new()))),
            },
            (None, None) => Credentials::None,
        };
        let l = &cfg.lockout;
        let policy = LockoutPolicy {
            max_failures: l.max_failures,
            window: l.window,
            lock_for: l.lock_for,
            max_lock: l.max_lock,
            account_max_failures: l.account_max_failures,
            ip_max_failures: l.ip_max_failures,
        };
        let permits = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
        Self {
            auth,
            store,
            events,
            proxy,
            credentials,
            policy,
            hashing: Semaphore::new(permits),
            in_flight: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Answers a request for one of the gateway's own routes.
    pub async fn handle(
        &self,
        route: AuthRoute,
        req: Request<Incoming>,
        client_ip: std::net::IpAddr,
        id: &str,
        deadline: Instant,
    ) -> Response<Body> {
        if req.method() != route.method() {
            let mut res = problem(Problem::new(ProblemKind::MethodNotAllowed), id);
            res.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static(if route == AuthRoute::Jwks {
                    "GET"
                } else {
                    "POST"
                }),
            );
            return res;
        }
        match route {
            AuthRoute::Jwks => {
                let mut res = json_response(StatusCode::OK, &self.auth.keys().jwks());
                res.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                );
                res.headers_mut().remove(header::PRAGMA);
                res
            }
            AuthRoute::Login => self.login(req, client_ip, id, deadline).await,
            AuthRoute::Refresh => self.refresh(req, id).await,
            AuthRoute::Logout => self.logout(req, id).await,
        }
    }

    async fn body(
        req: Request<Incoming>,
        id: &str,
    ) -> Result<(http::request::Parts, Bytes), Response<Body>> {
        let (parts, body) = req.into_parts();
        match Limited::new(body, AUTH_BODY_LIMIT).collect().await {
            Ok(b) => Ok((parts, b.to_bytes())),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(problem(
                Problem::new(ProblemKind::PayloadTooLarge)
                    .detail("the body is larger than this route accepts")
                    .close_connection(),
                id,
            )),
            Err(_) => Err(problem(
                Problem::new(ProblemKind::BadRequest).detail("the body could not be read"),
                id,
            )),
        }
    }

    fn bad_body(id: &str, detail: &'static str) -> Response<Body> {
        problem(Problem::new(ProblemKind::InvalidBody).detail(detail), id)
    }

    fn throttled(
        &self,
        decision: LockDecision,
        account: &str,
        source: &str,
        id: &str,
    ) -> Response<Body> {
        if let LockDecision::Locked {
            retry_after: wait,
            scope,
            ..
        } = decision
        {
            self.events.emit(
                EventKind::LoginThrottled,
                &format!("{account}@{source}"),
                scope.as_str(),
                Some(id),
            );
            crate::audit::record("login", source, account, "throttled", id);
            let mut res = problem(
                Problem::new(ProblemKind::LoginThrottled)
                    .detail("too many failed logins; retry later"),
                id,
            );
            retry_after(&mut res, wait);
            return res;
        }
        problem(Problem::new(ProblemKind::Internal), id)
    }

    fn users(&self) -> Option<Arc<UsersFile>> {
        let Credentials::File { path, cached } = &self.credentials else {
            return None;
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut c = cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.0 != modified || modified.is_none() {
            match UsersFile::load_or_empty(path) {
                Ok(f) => *c = (modified, Arc::new(f)),
                Err(e) => {
                    tracing::error!(error = %e, "the users file cannot be read; keeping the last good copy")
                }
            }
        }
        Some(c.1.clone())
    }

    /// The subject and roles for these credentials, or `None`; `Err` when the upstream
    /// check failed in a way that is not the user's fault (502, not a lockout failure).
    async fn check(
        &self,
        user: &Username,
        password: String,
        id: &str,
        deadline: Instant,
    ) -> Result<Option<(String, Vec<String>)>, Response<Body>> {
        match &self.credentials {
            Credentials::Upstream(path) => {
                let body = json!({ "username": user.as_str(), "password": password }).to_string();
                let rid =
                    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"));
                match self
                    .proxy
                    .post_json(path, Bytes::from(body), &rid, AUTH_BODY_LIMIT, deadline)
                    .await
                {
                    Ok((StatusCode::OK, b)) => {
                        #[derive(Deserialize)]
                        struct Accepted {
                            subject: String,
                            #[serde(default)]
                            roles: Vec<String>,
                        }
                        match serde_json::from_slice::<Accepted>(&b) {
                            Ok(a) if !a.subject.is_empty() => Ok(Some((a.subject, a.roles))),
                            _ => {
                                tracing::warn!(
                                    request_id = id,
                                    "the credentials upstream answered 200 without a subject"
                                );
                                Err(problem(Problem::new(ProblemKind::UpstreamUnavailable), id))
                            }
                        }
                    }
                    Ok((StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _)) => Ok(None),
                    Ok((status, _)) => {
                        tracing::warn!(
                            request_id = id,
                            status = status.as_u16(),
                            "the credentials upstream failed"
                        );
                        Err(problem(Problem::new(ProblemKind::UpstreamUnavailable), id))
                    }
                    Err(e) => {
                        tracing::warn!(request_id = id, error = %e, "the credentials upstream failed");
                        Err(problem(Problem::new(ProblemKind::UpstreamUnavailable), id))
                    }
                }
            }
            Credentials::File { .. } | Credentials::None => {
                let users = self.users();
                let user_entry = users.as_ref().and_then(|u| u.get(user).cloned());
                let _permit = self.hashing.acquire().await;
                let result = tokio::task::spawn_blocking(move || match user_entry {
                    Some(u) if u.verify(&password) => {
                        Some(u.roles().iter().map(|r| r.as_str().to_owned()).collect())
                    }
                    Some(_) => None,
                    None => {
                        // The same work as for a known user: no timing tells who exists.
                        password::verify_unknown(&password);
                        None
                    }
                })
                .await
                .unwrap_or(None);
                Ok(result.map(|roles| (user.as_str().to_owned(), roles)))
            }
        }
    }

    fn lockout_event(&self, after: Option<LockDecision>, account: &str, source: &str, id: &str) {
        if let Some(d) = after
            && d.just_locked()
            && let LockDecision::Locked {
                scope, retry_after, ..
            } = d
        {
            self.events.emit(
                EventKind::Lockout,
                &format!("{account}@{source}"),
                &format!("{} locked for {}s", scope.as_str(), retry_after.as_secs()),
                Some(id),
            );
            crate::audit::record("lockout", source, account, scope.as_str(), id);
        }
    }

    /// Begins a login through the upstream's own route: the same lockout as `/auth/login`
    /// (a refused or locked attempt never reaches the upstream).
    pub async fn upstream_login_begin(
        &self,
        raw_username: Option<String>,
        client_ip: std::net::IpAddr,
        id: &str,
    ) -> Result<UpstreamLogin<'_>, Response<Body>> {
        let source = ip_key(client_ip, LOCKOUT_V6_PREFIX);
        let account = match raw_username.as_deref().map(username::canonicalize) {
            None => None,
            Some(Ok(u)) => Some(u),
            Some(Err(e)) => {
                let d = self
                    .store
                    .lockout_source_failure(&source, &self.policy)
                    .await;
                if let Some(d) = d.value().filter(LockDecision::is_locked) {
                    return Err(self.throttled(d, "-", &source, id));
                }
                return Err(problem(
                    Problem::new(ProblemKind::BadRequest).detail(e.to_string()),
                    id,
                ));
            }
        };
        let in_flight = match &account {
            Some(a) => Some(self.claim(a, &source, id)?),
            None => None,
        };
        let decision = match &account {
            Some(a) => self.store.lockout_check(a, &source, &self.policy).await,
            None => self.store.lockout_source_check(&source, &self.policy).await,
        };
        if let Some(d) = decision.value().filter(LockDecision::is_locked) {
            let who = account.as_ref().map_or("-", Username::as_str);
            return Err(self.throttled(d, who, &source, id));
        }
        Ok(UpstreamLogin {
            routes: self,
            account,
            source,
            id: id.to_owned(),
            _in_flight: in_flight,
        })
    }

    /// Marks `account`'s login in flight, or refuses a second concurrent one.
    fn claim(
        &self,
        account: &Username,
        source: &str,
        id: &str,
    ) -> Result<InFlight<'_>, Response<Body>> {
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(account.as_str().to_owned()) {
            drop(set);
            let busy = LockDecision::Locked {
                retry_after: Duration::from_secs(1),
                scope: portcullis_core::auth::lockout::LockScope::Account,
                just_locked: false,
            };
            return Err(self.throttled(busy, account.as_str(), source, id));
        }
        Ok(InFlight {
            set: &self.in_flight,
            account: account.as_str().to_owned(),
        })
    }

    async fn login(
        &self,
        req: Request<Incoming>,
        client_ip: std::net::IpAddr,
        id: &str,
        deadline: Instant,
    ) -> Response<Body> {
        let (_parts, body) = match Self::body(req, id).await {
            Ok(x) => x,
            Err(res) => return res,
        };
        let Ok(login) = serde_json::from_slice::<LoginBody>(&body) else {
            return Self::bad_body(
                id,
                "expected a JSON object with \"username\" and \"password\"",
            );
        };
        let source = ip_key(client_ip, LOCKOUT_V6_PREFIX);
        let account = match username::canonicalize(&login.username) {
            Ok(u) => u,
            Err(e) => {
                // A refused username counts toward the source's ceiling only.
                let d = self
                    .store
                    .lockout_source_failure(&source, &self.policy)
                    .await;
                if let Some(d) = d.value().filter(LockDecision::is_locked) {
                    return self.throttled(d, "-", &source, id);
                }
                return problem(
                    Problem::new(ProblemKind::BadRequest).detail(e.to_string()),
                    id,
                );
            }
        };
        let _in_flight = match self.claim(&account, &source, id) {
            Ok(g) => g,
            Err(res) => return res,
        };
        if let Some(d) = self
            .store
            .lockout_check(&account, &source, &self.policy)
            .await
            .value()
            .filter(LockDecision::is_locked)
        {
            return self.throttled(d, account.as_str(), &source, id);
        }
        let accepted = match self.check(&account, login.password, id, deadline).await {
            Ok(a) => a,
            Err(res) => return res,
        };
        let Some((subject, roles)) = accepted else {
            let after = self
                .store
                .lockout_failure(&account, &source, &self.policy)
                .await;
            crate::audit::record("login", &source, account.as_str(), "failed", id);
            self.lockout_event(after.value(), account.as_str(), &source, id);
            let mut res = problem(
                Problem::new(ProblemKind::Unauthorized).detail("invalid username or password"),
                id,
            );
            www_authenticate(&mut res, false);
            return res;
        };
        let _ = self
            .store
            .lockout_success(&account, &source, &self.policy)
            .await;
        crate::audit::record("login", &source, account.as_str(), "ok", id);
        self.start_session(&subject, &roles, id).await
    }

    async fn start_session(&self, subject: &str, roles: &[String], id: &str) -> Response<Body> {
        let cfg = &self.auth.cfg;
        let token = RefreshToken::new_family();
        let family = Family {
            sub: subject.to_owned(),
            roles: roles.to_vec(),
            cur: token.hash(),
            prev: String::new(),
            prev_at: 0,
            succ: String::new(),
            generation: 0,
            abs: 0,
            rev: false,
        };
        // While Redis is down the session starts locally: login keeps working, and the
        // refresh token works again once this instance sees Redis (or the user logs in).
        let created = self
            .store
            .session_create(
                &token.family,
                &family,
                cfg.refresh_ttl,
                cfg.refresh_idle_ttl,
                FailMode::Local,
            )
            .await;
        if matches!(created, Routed::Unavailable) {
            return store_unavailable(id);
        }
        self.tokens(subject, roles, &token, id)
    }

    fn tokens(
        &self,
        subject: &str,
        roles: &[String],
        refresh: &RefreshToken,
        id: &str,
    ) -> Response<Body> {
        let cfg = &self.auth.cfg;
        let claims = AccessClaims::new(
            subject,
            roles,
            &refresh.family,
            &cfg.issuer,
            &cfg.audience,
            self.auth.clock.as_ref(),
            cfg.access_ttl,
        );
        let Ok(access) = self.auth.keys().sign(&claims) else {
            return problem(Problem::new(ProblemKind::Internal), id);
        };
        let refresh_token = refresh.encode();
        let mut res = json_response(
            StatusCode::OK,
            &json!({
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": cfg.access_ttl.as_secs(),
                "refresh_token": refresh_token,
            }),
        );
        if cfg.cookies {
            let h = res.headers_mut();
            h.append(
                header::SET_COOKIE,
                token_cookie(ACCESS_COOKIE, &access, cfg.access_ttl),
            );
            h.append(
                header::SET_COOKIE,
                token_cookie(REFRESH_COOKIE, &refresh_token, cfg.refresh_ttl),
            );
        }
        res
    }

    fn presented_refresh(&self, parts: &http::request::Parts, body: &Bytes) -> Option<String> {
        if !body.is_empty()
            && let Ok(b) = serde_json::from_slice::<RefreshBody>(body)
            && let Some(t) = b.refresh_token
        {
            return Some(t);
        }
        if self.auth.cfg.cookies {
            return cookie(&parts.headers, REFRESH_COOKIE).map(str::to_owned);
        }
        None
    }

    async fn refresh(&self, req: Request<Incoming>, id: &str) -> Response<Body> {
        let (parts, body) = match Self::body(req, id).await {
            Ok(x) => x,
            Err(res) => return res,
        };
        let Some(presented) = self.presented_refresh(&parts, &body) else {
            return Self::bad_body(id, "expected a JSON object with \"refresh_token\"");
        };
        let Ok(token) = RefreshToken::parse(&presented) else {
            return invalid_token(id, "the refresh token is not valid");
        };
        let cfg = &self.auth.cfg;
        let next = RefreshToken::next_in(&token.family);
        let args = RotateArgs {
            presented: &token.hash(),
            next_hash: &next.hash(),
            next_sealed: &seal_successor(&token, &next),
            grace_ms: u64::try_from(cfg.refresh_reuse_grace.as_millis()).unwrap_or(u64::MAX),
            idle_ms: u64::try_from(cfg.refresh_idle_ttl.as_millis()).unwrap_or(u64::MAX),
        };
        match self
            .store
            .session_rotate(&token.family, args, FailMode::FailClosed)
            .await
        {
            Routed::Shared(Rotation::Rotated(f)) | Routed::Local(Rotation::Rotated(f)) => {
                self.tokens(&f.sub, &f.roles, &next, id)
            }
            Routed::Shared(Rotation::Replayed(f)) | Routed::Local(Rotation::Replayed(f)) => {
                match open_successor(&token, &f.succ) {
                    Some(successor) => self.tokens(&f.sub, &f.roles, &successor, id),
                    None => invalid_token(id, "the refresh token is not valid"),
                }
            }
            Routed::Shared(Rotation::Reused(f)) | Routed::Local(Rotation::Reused(f)) => {
                self.auth.revoke(&self.store, &token.family).await;
                self.events.emit(
                    EventKind::RefreshReuse,
                    &f.sub,
                    "a spent refresh token was presented again; the session is revoked",
                    Some(id),
                );
                crate::audit::record("refresh.reuse", &f.sub, "session", "revoked", id);
                invalid_token(id, "the refresh token is not valid")
            }
            Routed::Shared(Rotation::Invalid) | Routed::Local(Rotation::Invalid) => {
                invalid_token(id, "the refresh token is not valid")
            }
            Routed::Allow | Routed::Stateless | Routed::Unavailable => store_unavailable(id),
        }
    }

    async fn logout(&self, req: Request<Incoming>, id: &str) -> Response<Body> {
        let (parts, body) = match Self::body(req, id).await {
            Ok(x) => x,
            Err(res) => return res,
        };
        // The session: from the access token, else from a refresh token.
        let sid = match self.auth.identify(&parts.headers) {
            Verdict::Verified(identity) => identity.session.clone(),
            Verdict::Refused(_) | Verdict::Ambiguous => {
                return invalid_token(id, "the access token is not valid");
            }
            Verdict::Anonymous => self
                .presented_refresh(&parts, &body)
                .and_then(|t| RefreshToken::parse(&t).ok())
                .map(|t| t.family),
        };
        let Some(sid) = sid else {
            let mut res = problem(
                Problem::new(ProblemKind::Unauthorized)
                    .detail("present the access token or the refresh token to log out"),
                id,
            );
            www_authenticate(&mut res, false);
            return res;
        };
        // Known here at once, whatever the store says: an outage never undoes a logout.
        self.auth.revoke(&self.store, &sid).await;
        if matches!(
            self.store.session_revoke(&sid, FailMode::FailClosed).await,
            Routed::Unavailable
        ) {
            return store_unavailable(id);
        }
        let mut res = Response::new(Body::from_bytes(Bytes::new()));
        *res.status_mut() = StatusCode::NO_CONTENT;
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.auth.cfg.cookies {
            let h = res.headers_mut();
            h.append(
                header::SET_COOKIE,
                token_cookie(ACCESS_COOKIE, "", Duration::ZERO),
            );
            h.append(
                header::SET_COOKIE,
                token_cookie(REFRESH_COOKIE, "", Duration::ZERO),
            );
        }
        res
    }
}
