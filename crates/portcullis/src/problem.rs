//! RFC 9457 problem details: the one shape of every refusal.
//!
//! Every refusal and failure that Portcullis answers itself is
//! `application/problem+json` with a `type` whose last segment names the refusal
//! (`…/problems/invalid-token`), a `title`, a `status` equal to the HTTP status, and the
//! `request_id`. Bodies never carry internals: no paths on disk, no upstream addresses,
//! no stack traces. The list of types is `docs/errors.md`.
//!
//! ```
//! use portcullis::problem::{Problem, ProblemKind};
//! use http_body_util::Full;
//! use bytes::Bytes;
//!
//! let res: http::Response<Full<Bytes>> =
//!     Problem::new(ProblemKind::UpstreamTimeout).into_response(Some("req-1"));
//! assert_eq!(res.status(), 504);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! ```

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use serde_json::{Map, Value};

use crate::body::RejectionBody;

/// The base of every problem `type` URI except the RateLimit draft's own.
pub const PROBLEM_BASE: &str = "https://portcullis.dev/problems/";

/// The `type` of a 429, as draft-ietf-httpapi-ratelimit-headers defines it.
pub const QUOTA_EXCEEDED_TYPE: &str =
    "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// The kinds of refusal, each with a stable slug, status and title.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// 400: malformed HTTP or a path that cannot be normalised safely.
    BadRequest,
    /// 400 or 422: a body that does not parse strictly, or violates the route's schema.
    InvalidBody,
    /// 401: a presented token was refused.
    InvalidToken,
    /// 401: the route needs an identity and none was presented.
    Unauthorized,
    /// 403: the identity lacks a role the route requires.
    Forbidden,
    /// 403: a cross-site or token-less state-changing request.
    Csrf,
    /// 404: nothing here (the gateway's own listeners only).
    NotFound,
    /// 405: a method the gateway never forwards (`TRACE`, `CONNECT`).
    MethodNotAllowed,
    /// 408: the client was too slow sending its request.
    RequestTimeout,
    /// 413: the body is larger than the limit.
    PayloadTooLarge,
    /// 414: the request target is longer than the limit.
    UriTooLong,
    /// 415: the route validates JSON and the body is not JSON.
    UnsupportedMediaType,
    /// 429: a rate limit was reached.
    QuotaExceeded,
    /// 429: login attempts are locked or throttled.
    LoginThrottled,
    /// 431: too many header fields, or too many header bytes.
    HeadersTooLarge,
    /// 500: the gateway failed; nothing about why is shown.
    Internal,
    /// 501: a transfer coding the gateway does not implement (only `chunked` is).
    NotImplemented,
    /// 502: the upstream could not be reached or answered with garbage.
    UpstreamUnavailable,
    /// 503: shared state is unavailable and the route fails closed.
    StoreUnavailable,
    /// 504: the upstream did not answer in time.
    UpstreamTimeout,
}

impl ProblemKind {
    /// Every kind, for documentation and tests.
    pub const ALL: &'static [ProblemKind] = &[
        Self::BadRequest,
        Self::InvalidBody,
        Self::InvalidToken,
        Self::Unauthorized,
        Self::Forbidden,
        Self::Csrf,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::PayloadTooLarge,
        Self::UriTooLong,
        Self::UnsupportedMediaType,
        Self::QuotaExceeded,
        Self::LoginThrottled,
        Self::HeadersTooLarge,
        Self::Internal,
        Self::NotImplemented,
        Self::UpstreamUnavailable,
        Self::StoreUnavailable,
        Self::UpstreamTimeout,
    ];

    /// The stable name of the refusal: the last segment of its `type`, and the `reason`
    /// in access logs.
    pub const fn slug(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::InvalidBody => "invalid-body",
            Self::InvalidToken => "invalid-token",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Csrf => "csrf",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::RequestTimeout => "request-timeout",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UriTooLong => "uri-too-long",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::QuotaExceeded => "quota-exceeded",
            Self::NotImplemented => "not-implemented",
            Self::LoginThrottled => "login-throttled",
            Self::HeadersTooLarge => "headers-too-large",
            Self::Internal => "internal",
            Self::UpstreamUnavailable => "upstream-unavailable",
            Self::StoreUnavailable => "store-unavailable",
            Self::UpstreamTimeout => "upstream-timeout",
        }
    }

    /// The status a refusal of this kind usually has.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::InvalidBody => StatusCode::BAD_REQUEST,
            Self::InvalidToken | Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::QuotaExceeded | Self::LoginThrottled => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A short, fixed, human-readable summary.
    pub const fn title(self) -> &'static str {
        match self {
            Self::BadRequest => "Bad request",
            Self::InvalidBody => "Invalid request body",
            Self::InvalidToken => "Invalid token",
            Self::Unauthorized => "Authentication required",
            Self::Forbidden => "Forbidden",
            Self::Csrf => "Cross-site request refused",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::RequestTimeout => "Request timeout",
            Self::PayloadTooLarge => "Payload too large",
            Self::UriTooLong => "URI too long",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::QuotaExceeded => "Quota exceeded",
            Self::LoginThrottled => "Too many login attempts",
            Self::HeadersTooLarge => "Request headers too large",
            Self::Internal => "Internal error",
            Self::NotImplemented => "Not implemented",
            Self::UpstreamUnavailable => "Upstream unavailable",
            Self::StoreUnavailable => "Service temporarily unavailable",
            Self::UpstreamTimeout => "Upstream timeout",
        }
    }

    /// The problem `type` URI.
    pub fn type_uri(self) -> Cow<'static, str> {
        match self {
            Self::QuotaExceeded => Cow::Borrowed(QUOTA_EXCEEDED_TYPE),
            other => Cow::Owned(format!("{PROBLEM_BASE}{}", other.slug())),
        }
    }
}

/// Put into a refusal's response extensions: why the request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The kind of refusal.
    pub kind: ProblemKind,
}

/// A refusal about to be rendered.
#[derive(Clone, Debug)]
#[must_use]
pub struct Problem {
    kind: ProblemKind,
    status: StatusCode,
    detail: Option<Cow<'static, str>>,
    extra: Map<String, Value>,
    close: bool,
}

impl Problem {
    /// A problem of this kind with its usual status.
    pub fn new(kind: ProblemKind) -> Self {
        Self {
            kind,
            status: kind.status(),
            detail: None,
            extra: Map::new(),
            close: false,
        }
    }

    /// Overrides the status (e.g. 422 for a schema violation of kind `invalid-body`).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// A sentence for the client. It must reveal nothing internal and never echo input
    /// that could be a secret.
    pub fn detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// An extension member (RFC 9457 §3.2), e.g. the violated policy.
    pub fn extension(mut self, name: &str, value: Value) -> Self {
        self.extra.insert(name.to_owned(), value);
        self
    }

    /// Asks for the connection to be closed after this response (`Connection: close`).
    pub fn close_connection(mut self) -> Self {
        self.close = true;
        self
    }

    /// The kind of this problem.
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// The JSON body.
    pub fn body(&self, request_id: Option<&str>) -> Bytes {
        let mut obj = Map::with_capacity(5 + self.extra.len());
        obj.insert(
            "type".into(),
            Value::String(self.kind.type_uri().into_owned()),
        );
        obj.insert("title".into(), Value::String(self.kind.title().into()));
        obj.insert("status".into(), Value::from(self.status.as_u16()));
        if let Some(d) = &self.detail {
            obj.insert("detail".into(), Value::String(d.to_string()));
        }
        if let Some(id) = request_id {
            obj.insert("request_id".into(), Value::String(id.into()));
        }
        for (k, v) in &self.extra {
            obj.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Bytes::from(serde_json::to_vec(&Value::Object(obj)).unwrap_or_default())
    }

    /// The response: status, `application/problem+json`, `Cache-Control: no-store`, the
    /// request id header, and a [`Rejection`] in the extensions.
    pub fn into_response<B: RejectionBody>(self, request_id: Option<&str>) -> Response<B> {
        let body = self.body(request_id);
        let mut res = Response::new(B::from_bytes(body));
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            h.insert(crate::request_id::X_REQUEST_ID, id);
        }
        if self.close {
            h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        res.extensions_mut().insert(Rejection { kind: self.kind });
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[test]
    fn every_kind_renders_its_slug_status_and_request_id() {
        for &kind in ProblemKind::ALL {
            let res: Response<Full<Bytes>> = Problem::new(kind).into_response(Some("abc"));
            assert_eq!(res.status(), kind.status(), "{kind:?}");
            assert_eq!(res.headers()[CONTENT_TYPE], "application/problem+json");
            assert_eq!(res.extensions().get::<Rejection>().unwrap().kind, kind);
            let body: Value =
                serde_json::from_slice(&Problem::new(kind).body(Some("abc"))).unwrap();
            let ty = body["type"].as_str().unwrap();
            let last = ty.rsplit(['/', '#']).next().unwrap();
            assert_eq!(last, kind.slug());
            assert_eq!(body["status"], kind.status().as_u16());
            assert_eq!(body["request_id"], "abc");
            assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
        }
    }

    #[test]
    fn status_override_is_reflected_in_body() {
        let p = Problem::new(ProblemKind::InvalidBody).status(StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = serde_json::from_slice(&p.body(None)).unwrap();
        assert_eq!(body["status"], 422);
        assert!(body.get("request_id").is_none());
    }
}
