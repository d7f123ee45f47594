//! Request ids: one `X-Request-Id` per request, on the upstream request and on the response.
//!
//! A client's own id is kept only when the peer is a trusted proxy (see
//! [`ClientInfo`](crate::client::ClientInfo)) and only when it matches
//! `[A-Za-z0-9._-]{1,64}`; anything else is replaced by a new UUIDv7, so ids are safe to
//! log and cannot be used to forge or split log lines.
//!
//! ```
//! use portcullis::request_id::{RequestId, RequestIdLayer};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use http::{Request, Response};
//!
//! # tokio_test();
//! # fn tokio_test() { tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let svc = RequestIdLayer::new().layer(service_fn(|req: Request<()>| async move {
//!     let id = req.extensions().get::<RequestId>().unwrap().clone();
//!     assert_eq!(req.headers()["x-request-id"], id.as_str());
//!     Ok::<_, std::convert::Infallible>(Response::new(()))
//! }));
//! let res = svc.oneshot(Request::new(())).await.unwrap();
//! assert!(RequestId::is_valid(res.headers()["x-request-id"].as_bytes()));
//! # }) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::client::ClientInfo;

/// The `X-Request-Id` header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest accepted incoming id.
const MAX_LEN: usize = 64;

/// A request's id: validated, cheap to clone, safe to log.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A new UUIDv7 id (time-ordered, so ids sort by arrival).
    ///
    /// The random part comes from a per-thread generator seeded once from the operating
    /// system: a request id must be unique, not secret, and asking the kernel for entropy
    /// on every request would cost a system call each time.
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let bits = fast_random();
        let mut random = [0u8; 10];
        random.copy_from_slice(&bits.to_le_bytes()[..10]);
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let s = id.hyphenated().encode_lower(&mut buf);
        Self(HeaderValue::from_str(s).expect("a UUID is a valid header value"))
    }

    /// Takes `value` as an id if it matches `[A-Za-z0-9._-]{1,64}`.
    pub fn parse(value: &HeaderValue) -> Option<Self> {
        Self::is_valid(value.as_bytes()).then(|| Self(value.clone()))
    }

    /// Whether `bytes` match `[A-Za-z0-9._-]{1,64}`.
    pub fn is_valid(bytes: &[u8]) -> bool {
        !bytes.is_empty()
            && bytes.len() <= MAX_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII was admitted.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// 128 random bits from a per-thread xorshift generator, seeded from std's per-thread
/// random keys (which come from the operating system).
pub(crate) fn fast_random() -> u128 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<(u64, u64)> = Cell::new({
            let s = std::collections::hash_map::RandomState::new();
            let mut a = s.build_hasher();
            a.write_u64(1);
            let mut b = s.build_hasher();
            b.write_u64(2);
            (a.finish() | 1, b.finish() | 1)
        });
    }
    STATE.with(|st| {
        // xorshift128+
        let (mut s1, s0) = st.get();
        let a = s1;
        s1 ^= s1 << 23;
        s1 ^= s1 >> 17;
        s1 ^= s0 ^ (s0 >> 26);
        st.set((s0, s1));
        let hi = u128::from(a.wrapping_add(s0));
        let (mut t1, t0) = st.get();
        let b = t1;
        t1 ^= t1 << 23;
        t1 ^= t1 >> 17;
        t1 ^= t0 ^ (t0 >> 26);
        st.set((t0, t1));
        (hi << 64) | u128::from(b.wrapping_add(t0))
    })
}

/// Gives every request a [`RequestId`]: in the extensions, on the request's
/// `X-Request-Id` header (for the upstream) and on the response.
#[derive(Clone, Copy, Debug, Default)]
#[must_use]
pub struct RequestIdLayer {
    _priv: (),
}

impl RequestIdLayer {
    /// Keeps a valid incoming id only from trusted proxies, per the request's
    /// [`ClientInfo`]; without one, every request gets a new id.
    pub fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId { inner }
    }
}

/// The service made by [`RequestIdLayer`].
#[derive(Clone, Debug)]
pub struct SetRequestId<S> {
    inner: S,
}

/// The id for `req`: a trusted proxy's valid id, else a new one. Trust comes from the
/// request's [`ClientInfo`] extension.
pub fn choose<B>(req: &Request<B>) -> RequestId {
    let trusted = req
        .extensions()
        .get::<ClientInfo>()
        .is_some_and(|c| c.peer_trusted);
    choose_from(req.headers(), trusted)
}

/// The id for a request with these headers: when `peer_trusted`, a single valid
/// `X-Request-Id` is kept; otherwise a new id.
pub fn choose_from(headers: &http::HeaderMap, peer_trusted: bool) -> RequestId {
    if peer_trusted {
        let mut values = headers.get_all(X_REQUEST_ID).iter();
        if let (Some(v), None) = (values.next(), values.next())
            && let Some(id) = RequestId::parse(v)
        {
            return id;
        }
    }
    RequestId::generate()
}

impl<S, B, ResBody> Service<Request<B>> for SetRequestId<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = choose(&req);
        req.headers_mut()
            .insert(X_REQUEST_ID, id.header_value().clone());
        req.extensions_mut().insert(id.clone());
        ResponseFuture {
            inner: self.inner.call(req),
            id: Some(id),
        }
    }
}

pin_project! {
    /// Response future of [`SetRequestId`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        id: Option<RequestId>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take() {
            res.headers_mut().insert(X_REQUEST_ID, id.0);
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn req_with(trusted: bool, ids: &[&str]) -> Request<()> {
        let mut req = Request::new(());
        for id in ids {
            req.headers_mut()
                .append(X_REQUEST_ID, HeaderValue::from_str(id).unwrap());
        }
        let peer: SocketAddr = "10.0.0.1:1234".parse().unwrap();
        req.extensions_mut().insert(ClientInfo {
            peer,
            ip: peer.ip(),
            peer_trusted: trusted,
            tls: false,
        });
        req
    }

    #[test]
    fn incoming_ids_table() {
        struct Case {
            name: &'static str,
            trusted: bool,
            ids: Vec<&'static str>,
            kept: bool,
        }
        let long = "a".repeat(65);
        let long: &'static str = Box::leak(long.into_boxed_str());
        let cases = [
            Case {
                name: "trusted valid kept",
                trusted: true,
                ids: vec!["abc-123_x.y"],
                kept: true,
            },
            Case {
                name: "untrusted replaced",
                trusted: false,
                ids: vec!["abc-123"],
                kept: false,
            },
            Case {
                name: "trusted but invalid chars",
                trusted: true,
                ids: vec!["abc def"],
                kept: false,
            },
            Case {
                name: "trusted but quote",
                trusted: true,
                ids: vec!["abc\"x"],
                kept: false,
            },
            Case {
                name: "trusted but too long",
                trusted: true,
                ids: vec![long],
                kept: false,
            },
            Case {
                name: "trusted but empty",
                trusted: true,
                ids: vec![""],
                kept: false,
            },
            Case {
                name: "two ids refused",
                trusted: true,
                ids: vec!["a", "b"],
                kept: false,
            },
        ];
        for c in cases {
            let req = req_with(c.trusted, &c.ids);
            let id = choose(&req);
            assert!(RequestId::is_valid(id.as_str().as_bytes()), "{}", c.name);
            assert_eq!(c.kept, id.as_str() == c.ids[0], "{}", c.name);
        }
    }

    #[test]
    fn generated_ids_are_uuid_v7_and_unique() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        let many: std::collections::HashSet<String> = (0..10_000)
            .map(|_| RequestId::generate().as_str().to_owned())
            .collect();
        assert_eq!(many.len(), 10_000);
        let u = uuid::Uuid::parse_str(a.as_str()).unwrap();
        assert_eq!(u.get_version_num(), 7);
    }
}
