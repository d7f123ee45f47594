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

use crate::events::Events;
use crate::health::{Health, Status};
use crate::identity::{Auth, Verdict};
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
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let admin = Router::new()
        .route("/admin/security-events", get(security_events))
        .route("/admin/accounts/{username}/unlock", post(unlock))
        .route("/admin/openapi.json", get(openapi))
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
        Verdict::Verified(who) if who.has_role(ADMIN_ROLE) => next.run(req).await,
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

async fn unlock(State(s): State<AdminState>, Path(username): Path<String>) -> Response {
    let user = match canonicalize(&username) {
        Ok(u) => u,
        Err(e) => return problem(Problem::new(ProblemKind::BadRequest).detail(e.to_string())),
    };
    match s.store.lockout_unlock(&user).await {
        Routed::Shared(found) | Routed::Local(found) => {
            tracing::info!(target: "portcullis::admin", account = user.as_str(), found, "account unlocked");
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
