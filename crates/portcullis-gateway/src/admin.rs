//! The admin listener: `/livez`, `/readyz`, `/metrics`, and `/admin/*` (a bearer access
//! token with the `admin` role). Keep it off the public network.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portcullis::{Problem, ProblemKind};
use portcullis_core::auth::username::canonicalize;
use portcullis_core::store::{Routed, SharedStore};
use serde::Deserialize;
use serde_json::json;

use crate::cache::{Purge, ResponseCache};
use crate::config::Config;
use crate::events::Events;
use crate::health::{Health, Status};
use crate::identity::{Auth, Verdict};
use crate::ratelimit::{Limiter, Override};
use crate::telemetry::metrics::Metrics;

/// The role the admin API requires.
pub const ADMIN_ROLE: &str = "admin";

/// What the admin routes read.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// Readiness.
    pub health: Arc<Health>,
    /// The metrics recorder.
    pub metrics: Metrics,
    /// Identity, when `auth.enabled`.
    pub auth: Option<Arc<Auth>>,
    /// The shared store.
    pub store: SharedStore,
    /// Security events.
    pub events: Arc<Events>,
    /// The rate limiter, when on.
    pub limiter: Option<Arc<Limiter>>,
    /// The response cache.
    pub cache: Arc<ResponseCache>,
    /// The configuration in effect.
    pub config: Arc<Config>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let admin = Router::new()
        .route("/admin/security-events", get(security_events))
        .route("/admin/accounts/{username}/unlock", post(unlock))
        .route("/admin/openapi.json", get(openapi))
        .route("/admin/cache/purge", post(cache_purge))
        .route("/admin/rate-limits/policies", get(rl_policies))
        .route(
            "/admin/rate-limits/overrides",
            get(rl_list).delete(rl_clear),
        )
        .route(
            "/admin/rate-limits/overrides/{*key}",
            get(rl_get).put(rl_put).delete(rl_delete),
        )
        .route(
            "/admin/rate-limits/counters/{*key}",
            axum::routing::delete(rl_reset),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(admin)
        .fallback(not_found)
        .with_state(state)
}

fn problem(p: Problem) -> Response {
    let id = portcullis::RequestId::generate();
    p.into_response::<http_body_util::Full<bytes::Bytes>>(Some(id.as_str()))
        .map(axum::body::Body::new)
}

async fn require_admin(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(auth) = &s.auth else {
        return problem(
            Problem::new(ProblemKind::NotFound).detail("the admin API needs auth.enabled"),
        );
    };
    match auth.identify(req.headers()) {
        Verdict::Verified(who) if who.has_role(ADMIN_ROLE) => {
            let mut req = req;
            req.extensions_mut().insert(Admin(who));
            next.run(req).await
        }
        Verdict::Verified(who) => {
            s.events.emit(
                crate::events::EventKind::Forbidden,
                &who.subject,
                "the admin API needs the admin role",
                None,
            );
            problem(
                Problem::new(ProblemKind::Forbidden).detail("the admin API needs the admin role"),
            )
        }
        Verdict::Anonymous => {
            let mut res = problem(
                Problem::new(ProblemKind::Unauthorized)
                    .detail("the admin API needs an access token"),
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            res
        }
        Verdict::Refused(_) | Verdict::Ambiguous => {
            let mut res = problem(
                Problem::new(ProblemKind::InvalidToken).detail("the access token is not valid"),
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            res
        }
    }
}

/// The admin who called, put in the request by `require_admin`.
#[derive(Clone, Debug)]
struct Admin(Arc<portcullis_core::token::Identity>);

/// An audit record of an admin change: to the log stream (with the old and new values)
/// and to the audit file.
/// What was changed is `resource`: the log line's own `target` is `portcullis::audit`.
/// The values are logged whole, so they are redacted as a request's would be
/// (`log.redact_fields`): a purge key is a URL that may hold a `?token=`.
fn audit(
    s: &AdminState,
    admin: &Admin,
    action: &str,
    resource: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
) {
    let redact = crate::telemetry::json::Redact::new(s.config.log.redact_fields.iter().cloned());
    let (old, new) = (redact.json(old), redact.json(new));
    tracing::info!(
        target: "portcullis::audit",
        action,
        actor = admin.0.subject.as_str(),
        resource,
        old = %old,
        new = %new,
        outcome = "ok",
        "admin change"
    );
    crate::audit::append(action, &admin.0.subject, resource, "ok", "");
}

fn rate_limiting_off() -> Response {
    problem(Problem::new(ProblemKind::NotFound).detail("rate limiting is off (rate_limit.enabled)"))
}

fn store_down() -> Response {
    with_retry_after(problem(Problem::new(ProblemKind::StoreUnavailable)))
}

/// [`store_down`] saying why.
fn store_down_because(detail: &'static str) -> Response {
    with_retry_after(problem(
        Problem::new(ProblemKind::StoreUnavailable).detail(detail),
    ))
}

fn with_retry_after(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

fn override_json(key: &str, o: &Override) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut v = json!({
        "key": key,
        "exempt": o.exempt,
        "expires_in": format!("{}s", o.expires.saturating_sub(now)),
        "set_by": o.set_by,
    });
    if let (Some(limit), Some(per)) = (o.limit, o.per_ms) {
        v["limit"] = json!(limit);
        v["per"] = json!(crate::ratelimit_docs::per(
            std::time::Duration::from_millis(per)
        ));
        if let Some(b) = o.burst {
            v["burst"] = json!(b);
        }
    }
    v
}

async fn rl_policies(State(s): State<AdminState>) -> Response {
    let Some(l) = s.limiter.as_ref() else {
        return rate_limiting_off();
    };
    json_response(
        StatusCode::OK,
        crate::ratelimit_docs::policies_json(&s.config, l)
            .to_string()
            .into_bytes(),
    )
}

async fn rl_list(State(s): State<AdminState>) -> Response {
    let Some(l) = s.limiter.as_ref() else {
        return rate_limiting_off();
    };
    let list: Vec<_> = l
        .overrides
        .list()
        .iter()
        .map(|(k, o)| override_json(k, o))
        .collect();
    json_response(
        StatusCode::OK,
        json!({ "overrides": list }).to_string().into_bytes(),
    )
}

async fn rl_get(State(s): State<AdminState>, Path(key): Path<String>) -> Response {
    let Some(l) = s.limiter.as_ref() else {
        return rate_limiting_off();
    };
    let key = match l.normalize_key(&key) {
        Ok(k) => k,
        Err(e) => return problem(Problem::new(ProblemKind::BadRequest).detail(e)),
    };
    match l.overrides.list().into_iter().find(|(k, _)| *k == key) {
        Some((k, o)) => json_response(
            StatusCode::OK,
            override_json(&k, &o).to_string().into_bytes(),
        ),
        None => problem(Problem::new(ProblemKind::NotFound).detail("no override for this key")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    limit: Option<u32>,
    per: Option<String>,
    burst: Option<u32>,
    exempt: Option<bool>,
    expires_in: String,
}

/// The longest an override may last.
const MAX_OVERRIDE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Why an override body was refused: not JSON (400), or JSON that is not an override
/// (422).
struct BadOverride(StatusCode, String);

impl From<&str> for BadOverride {
    fn from(s: &str) -> Self {
        Self(StatusCode::UNPROCESSABLE_ENTITY, s.to_owned())
    }
}

impl From<String> for BadOverride {
    fn from(s: String) -> Self {
        Self(StatusCode::UNPROCESSABLE_ENTITY, s)
    }
}

fn parse_override(body: &[u8], admin: &Admin) -> Result<Override, BadOverride> {
    let b: OverrideBody = serde_json::from_slice(body).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        BadOverride(
            status,
            format!("expected {{\"limit\",\"per\",\"expires_in\"}} or {{\"exempt\":true,\"expires_in\"}}: {e}"),
        )
    })?;
    let expires_in = crate::config::parse_duration(&b.expires_in)
        .filter(|d| !d.is_zero() && *d <= MAX_OVERRIDE)
        .ok_or("expires_in: expected a duration such as \"10m\", at most 30d")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expires = now + expires_in.as_secs().max(1);
    let set_by = admin.0.subject.clone();
    if b.exempt == Some(true) {
        if b.limit.is_some() || b.per.is_some() || b.burst.is_some() {
            return Err("an exemption takes no limit, per or burst".into());
        }
        return Ok(Override {
            exempt: true,
            limit: None,
            per_ms: None,
            burst: None,
            expires,
            set_by,
        });
    }
    let limit = b
        .limit
        .filter(|l| *l > 0)
        .ok_or("limit: expected a positive integer")?;
    let per = b
        .per
        .as_deref()
        .and_then(crate::config::parse_duration)
        .filter(|d| {
            *d >= std::time::Duration::from_millis(1)
                && *d <= std::time::Duration::from_secs(86_400)
        })
        .ok_or("per: expected a duration such as \"1m\", from 1ms to 1d")?;
    if b.burst == Some(0) {
        return Err("burst: expected a positive integer".into());
    }
    Ok(Override {
        exempt: false,
        limit: Some(limit),
        per_ms: Some(u64::try_from(per.as_millis()).unwrap_or(u64::MAX)),
        burst: b.burst,
        expires,
        set_by,
    })
}

async fn rl_put(
    State(s): State<AdminState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(key): Path<String>,
    body: bytes::Bytes,
) -> Response {
    let Some(l) = s.limiter.as_ref() else {
        return rate_limiting_off();
    };
    let key = match l.normalize_key(&key) {
        Ok(k) => k,
        Err(e) => return problem(Problem::new(ProblemKind::BadRequest).detail(e)),
    };
    let ov = match parse_override(&body, &admin) {
        Ok(o) => o,
        Err(BadOverride(status, e)) => {
            return problem(
                Problem::new(ProblemKind::InvalidBody)
                    .status(status)
                    .detail(e),
            );
        }
    };
    match l.set_override(&key, ov.clone()).await {
        Ok(old) => {
            let old = old.map_or(serde_json::Value::Null, |o| override_json(&key, &o));
            let new = override_json(&key, &ov);
            audit(&s, &admin, "rate_limit.override.set", &key, &old, &new);
            json_response(StatusCode::OK, new.to_string().into_bytes())
        }
        Err(()) => store_down(),
    }
}

async fn rl_delete(
    State(s): State<AdminState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(key): Path<String>,
) -> Response {
    let Some(l) = s.limiter.as_ref() else {
        return rate_limiting_off();
    };
    let key = match l.normalize_key(&key) {
        Ok(k) => k,
        Err(e) => return problem(Problem::new(ProblemKind::BadRequest).detail(e)),
    };
    match l.remove_override(&key).await {
        Ok(Some(old)) => {
            audit(
                &s,
                &admin,
                "rate_limit.override.remove",
                &key,
                &override_json(&key, &old),
                &serde_json::Value::Null,
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(None) => problem(Problem::new(ProblemKind::NotFound).detail("no override for this key")),
        Err(()) => store_down(),
    }
}

async fn rl_clear(
    State(s): State<AdminState>,
    axum::Extension(admin): axum::Extension<Admin>,
) -> Response {
    let Some(l) = s.limiter.as_ref() else {
        return rate_limiting_off();
    };
    match l.clear_overrides().await {
        Ok(n) => {
            audit(
                &s,
                &admin,
                "rate_limit.override.clear",
                "*",
                &json!({ "count": n }),
                &serde_json::Value::Null,
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Err(()) => store_down(),
    }
}

async fn rl_reset(
    State(s): State<AdminState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(key): Path<String>,
) -> Response {
    let Some(l) = s.limiter.as_ref() else {
        return rate_limiting_off();
    };
    let key = match l.normalize_key(&key) {
        Ok(k) => k,
        Err(e) => return problem(Problem::new(ProblemKind::BadRequest).detail(e)),
    };
    match l.reset_counters(&key).await {
        Ok(()) => {
            audit(
                &s,
                &admin,
                "rate_limit.counters.reset",
                &key,
                &serde_json::Value::Null,
                &serde_json::Value::Null,
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Err(()) => store_down(),
    }
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn security_events(State(s): State<AdminState>, Query(q): Query<Limit>) -> Response {
    let events = s
        .events
        .recent(q.limit.unwrap_or(100).min(crate::events::RING_CAPACITY));
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&json!({ "events": events })).unwrap_or_default(),
    )
}

async fn unlock(
    State(s): State<AdminState>,
    axum::Extension(admin): axum::Extension<Admin>,
    Path(username): Path<String>,
) -> Response {
    let user = match canonicalize(&username) {
        Ok(u) => u,
        Err(e) => return problem(Problem::new(ProblemKind::BadRequest).detail(e.to_string())),
    };
    match s.store.lockout_unlock(&user).await {
        Routed::Shared(found) | Routed::Local(found) => {
            audit(
                &s,
                &admin,
                "account.unlock",
                user.as_str(),
                &json!({ "locked": found }),
                &json!({ "locked": false }),
            );
            json_response(
                StatusCode::OK,
                json!({ "unlocked": found, "account": user.as_str() })
                    .to_string()
                    .into_bytes(),
            )
        }
        _ => {
            let mut res = problem(Problem::new(ProblemKind::StoreUnavailable));
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            res
        }
    }
}

/// `POST /admin/cache/purge` with `{"key"}`, `{"prefix"}` or `{"tag"}`: applied here at
/// once and on every instance within a second; 503 (applied here only) while the shared
/// store is unavailable.
async fn cache_purge(
    State(s): State<AdminState>,
    axum::Extension(admin): axum::Extension<Admin>,
    body: bytes::Bytes,
) -> Response {
    let bad = |detail: String| problem(Problem::new(ProblemKind::InvalidBody).detail(detail));
    let purge = match serde_json::from_slice::<Purge>(&body) {
        Ok(Purge::Path(_)) | Err(_) => {
            return bad(
                "expected one of {\"key\": \"GET /path?query\"}, {\"prefix\": \"/path\"} or {\"tag\": \"name\"}".into(),
            );
        }
        Ok(p) => match p.normalized() {
            Ok(p) => p,
            Err(e) => return bad(e),
        },
    };
    let what = serde_json::to_value(&purge).unwrap_or_default();
    let (removed, shared) = match s.cache.purge(purge).await {
        Ok(n) => (n, true),
        Err(n) => (n, false),
    };
    let new = if shared {
        what.clone()
    } else {
        json!({"purge": what, "removed_here": removed, "shared": false})
    };
    audit(
        &s,
        &admin,
        "cache.purge",
        "cache",
        &serde_json::Value::Null,
        &new,
    );
    if !shared {
        return store_down_because(
            "the purge applied on this instance only: the shared store is unavailable; retry",
        );
    }
    json_response(
        StatusCode::OK,
        json!({"purged": what, "removed_here": removed, "shared": true})
            .to_string()
            .into_bytes(),
    )
}

async fn openapi() -> Response {
    json_response(
        StatusCode::OK,
        crate::openapi::document().to_string().into_bytes(),
    )
}

async fn livez() -> Response {
    json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let (status, body) = s.health.readiness();
    let code = if status == Status::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut res = json_response(code, serde_json::to_vec(&body).unwrap_or_default());
    if code == StatusCode::SERVICE_UNAVAILABLE {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    res
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut res = s.metrics.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

async fn not_found() -> Response {
    problem(Problem::new(ProblemKind::NotFound))
}

fn json_response(code: StatusCode, body: Vec<u8>) -> Response {
    let mut res = (code, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
