//! The admin listener: `/livez`, `/readyz`, `/metrics`. Keep it off the public network.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use portcullis::{Problem, ProblemKind};

use crate::health::{Health, Status};
use crate::telemetry::metrics::Metrics;

/// What the admin routes read.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// Readiness.
    pub health: Arc<Health>,
    /// The metrics recorder.
    pub metrics: Metrics,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
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
    let id = portcullis::RequestId::generate();
    Problem::new(ProblemKind::NotFound)
        .into_response::<http_body_util::Full<bytes::Bytes>>(Some(id.as_str()))
        .map(axum::body::Body::new)
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
