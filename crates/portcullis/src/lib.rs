//! Portcullis protections as Tower layers.
//!
//! The gateway binary (`portcullis-gateway`) assembles these into one stack in front of
//! any upstream; a Rust service can use the same pieces directly:
//!
//! | module | what it does |
//! | --- | --- |
//! | [`request_id`] | an `X-Request-Id` on every request and response |
//! | [`path`] | the normalised path that routes match, refusing spellings that could dodge them |
//! | [`trace_context`] | W3C `traceparent` / `tracestate`, validated and continued |
//! | [`problem`] | RFC 9457 `application/problem+json` refusals with stable types |
//! | [`validate`] | JSON bodies: content type, strict parsing, JSON Schema, HTML sanitizing |
//! | [`headers`] | security-header profiles (`api`, `web` = helmet 8.3.0's defaults, `off`) |
//! | [`cors`] | CORS by an allow-list of exact origins: preflights and actual responses |
//! | [`csrf`] | where a state-changing request comes from (Fetch Metadata, `Origin`), and its token in a header or a form |
//!
//! Refusals are responses, never `Service` errors: each carries a [`problem::Rejection`]
//! in its extensions so that logs and metrics can say why without parsing bodies.

pub mod body;
pub mod cache;
pub mod client;
pub mod cors;
pub mod csrf;
pub mod headers;
pub mod path;
pub mod problem;
pub mod request_id;
pub mod trace_context;
pub mod validate;

pub use body::RejectionBody;
pub use problem::{Problem, ProblemKind, Rejection};
pub use request_id::{RequestId, RequestIdLayer};

/// The error type of boxed bodies and services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A header map from `(name, value)` pairs, repeated names appended: for tests.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}
