//! CSRF in the gateway: which requests are checked, the session a token is bound to, and
//! `GET /auth/csrf`.
//!
//! A state-changing request (any method but `GET`, `HEAD`, `OPTIONS`) that carries cookies
//! and no `Authorization` header is checked, in OWASP's order: Fetch Metadata, then
//! `Origin` (or `Referer`) against the gateway's own origin and `csrf.trusted_origins`
//! ([`portcullis::csrf::check_source`]), then the token from `csrf.header` or, in a form
//! body, `csrf.form_field` ([`portcullis_core::csrf`]). A bearer token cannot be sent by
//! another site's page without the page's script, which CORS governs, so such requests
//! are exempt.
//!
//! Tokens are bound to the session: the refresh family (`sid`) of a verified identity;
//! without one, the upstream's session cookie (`csrf.session_cookie`), else the
//! gateway's own `__Host-csrf-session` cookie, set with the first token. Logging in starts
//! a new session, so a token from before login stops working; logging out revokes the
//! session's tokens.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use portcullis::{Problem, ProblemKind, RejectionBody};
use portcullis_core::Clock;
use portcullis_core::csrf::{Binding, CsrfKey, CsrfMode, CsrfTokens, Verdict};
use portcullis_core::store::SharedStore;
use portcullis_core::token::Identity;

use crate::body::Body;
use crate::config::CsrfConfig;
use crate::identity::cookie;

/// The gateway's own session cookie, for callers without a gateway session.
pub const SESSION_COOKIE: &str = "__Host-csrf-session";
/// The token as a cookie scripts can read, to echo it in the header.
pub const TOKEN_COOKIE: &str = "__Host-csrf";

/// The CSRF protection of the gateway.
#[derive(Clone, Debug)]
pub struct Csrf {
    tokens: CsrfTokens,
    cfg: CsrfConfig,
}

/// Why a request was refused, for the problem and the security event.
#[derive(Debug)]
pub struct Refusal {
    /// The answer.
    pub problem: Problem,
    /// What the event says.
    pub detail: String,
}

impl Csrf {
    /// The protection, signing with `keys` (the first signs, all verify).
    pub fn new(
        cfg: &CsrfConfig,
        keys: Vec<CsrfKey>,
        store: SharedStore,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mode = if cfg.deny_when_down {
            CsrfMode::Deny
        } else {
            CsrfMode::Stateless
        };
        Self {
            tokens: CsrfTokens::new(store, keys, clock, cfg.token_ttl, mode),
            cfg: cfg.clone(),
        }
    }

    /// The header that carries tokens.
    pub fn header(&self) -> &http::HeaderName {
        &self.cfg.header
    }

    /// The form field that carries tokens.
    pub fn form_field(&self) -> &str {
        &self.cfg.form_field
    }

    /// Whether the request must pass the check: state-changing, with cookies, without
    /// `Authorization`.
    pub fn applies(method: &Method, headers: &HeaderMap) -> bool {
        !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
            && headers.contains_key(header::COOKIE)
            && !headers.contains_key(header::AUTHORIZATION)
    }

    /// Fetch Metadata and `Origin`/`Referer` against `own_origin`.
    pub fn check_source(&self, headers: &HeaderMap, own_origin: &str) -> Result<(), Refusal> {
        portcullis::csrf::check_source(headers, own_origin, &self.cfg.trusted_origins).map_err(
            |why| Refusal {
                problem: refusal(why),
                detail: why.to_owned(),
            },
        )
    }

    /// What tokens of this request are bound to, if it has a session.
    pub fn binding(&self, identity: Option<&Identity>, headers: &HeaderMap) -> Option<Binding> {
        if let Some(sid) = identity.and_then(|i| i.session.as_deref()) {
            return Some(Binding::session(sid));
        }
        let name = self.cfg.session_cookie.as_deref().unwrap_or(SESSION_COOKIE);
        cookie(headers, name)
            .filter(|v| !v.is_empty())
            .map(Binding::cookie)
    }

    /// Checks the presented token (`None`: none was presented) against the session.
    pub async fn check_token(
        &self,
        binding: Option<&Binding>,
        presented: Option<&str>,
    ) -> Result<bool, Refusal> {
        let Some(binding) = binding else {
            return Err(Refusal {
                problem: refusal("there is no session to check a CSRF token against"),
                detail: "no session".into(),
            });
        };
        let Some(token) = presented else {
            return Err(Refusal {
                problem: refusal("a CSRF token is required"),
                detail: "no token".into(),
            });
        };
        match self.tokens.verify(binding, token).await {
            Verdict::Valid => Ok(true),
            Verdict::ValidStateless => Ok(false),
            Verdict::Invalid(reason) => Err(Refusal {
                problem: refusal("the CSRF token is not valid for this session"),
                detail: format!("token refused: {}", reason.describe()),
            }),
            Verdict::Unavailable => Err(Refusal {
                problem: Problem::new(ProblemKind::StoreUnavailable)
                    .detail("CSRF tokens cannot be checked right now"),
                detail: "store unavailable".into(),
            }),
        }
    }

    /// Logout: the session's tokens stop working.
    pub async fn revoke(&self, sid: &str) {
        self.tokens.revoke(&Binding::session(sid)).await;
    }

    /// `GET /auth/csrf`: `{"token"}` for the caller's session (a new gateway session
    /// cookie when there is none), also as the `__Host-csrf` cookie.
    pub async fn issue(
        &self,
        identity: Option<&Identity>,
        headers: &HeaderMap,
        request_id: &str,
    ) -> Response<Body> {
        let (binding, new_session) = match self.binding(identity, headers) {
            Some(b) => (b, None),
            None => {
                let value = random_id();
                (Binding::cookie(&value), Some(value))
            }
        };
        let Ok(token) = self.tokens.issue(&binding).await else {
            let mut res = Problem::new(ProblemKind::StoreUnavailable)
                .detail("CSRF tokens cannot be issued right now")
                .into_response(Some(request_id));
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return res;
        };
        let body = serde_json::json!({ "token": token }).to_string();
        let mut res = Response::new(Body::from_bytes(Bytes::from(body)));
        *res.status_mut() = StatusCode::OK;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(value) = new_session {
            h.append(
                header::SET_COOKIE,
                crate::identity::token_cookie(SESSION_COOKIE, &value, SESSION_COOKIE_AGE),
            );
        }
        h.append(
            header::SET_COOKIE,
            script_cookie(TOKEN_COOKIE, &token, self.cfg.token_ttl),
        );
        res
    }
}

/// 128 random bits, base64url: a new gateway session.
fn random_id() -> String {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    use base64::Engine as _;
    let mut id = [0u8; 16];
    SystemRandom::new()
        .fill(&mut id)
        .expect("the system's random number generator works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// How long the gateway's own session cookie lives in the browser.
const SESSION_COOKIE_AGE: Duration = Duration::from_secs(7 * 86_400);

fn refusal(why: &str) -> Problem {
    Problem::new(ProblemKind::Csrf).detail(format!("CSRF check failed: {why}"))
}

/// A `__Host-` cookie scripts can read (no `HttpOnly`), so a page can echo it.
fn script_cookie(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Max-Age={}; Path=/; Secure; SameSite=Strict",
        max_age.as_secs()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The gateway's own origin for a request: `https` when it came over TLS (or a trusted
/// proxy says so), and the host the client asked for: a trusted proxy's
/// `X-Forwarded-Host` (proxies often rewrite `Host`), else `Host` (or, for HTTP/2, the
/// authority).
pub fn own_origin(
    headers: &HeaderMap,
    uri: &http::Uri,
    secure: bool,
    peer_trusted: bool,
) -> Option<String> {
    let forwarded = peer_trusted
        .then(|| headers.get("x-forwarded-host"))
        .flatten()
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit(',').next())
        .map(str::trim);
    let host = forwarded
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .or_else(|| uri.authority().map(|a| a.as_str()))?;
    let authority: http::uri::Authority = host.parse().ok()?;
    let scheme = if secure { "https" } else { "http" };
    let default = if secure { 443 } else { 80 };
    let host = authority.host().to_ascii_lowercase();
    Some(match authority.port_u16() {
        Some(p) if p != default => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}
