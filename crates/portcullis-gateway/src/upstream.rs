//! Connections to the upstream: a pool of HTTP/1.1 keep-alive connections.
//!
//! Why not hyper-util's pooled client: it is built for many hosts (a hashed pool key per
//! request, a checkout race between an idle connection and a new one, absolute-form
//! rewriting) and a gateway talks to one. This pool is a LIFO stack of idle
//! `SendRequest` handles behind a mutex held for a push or a pop: the most recently used
//! connection is reused first (it is the least likely to have been closed by the
//! upstream), and the rest age out.
//!
//! - A connection returns to the pool when its response body has been read to the end;
//!   a response abandoned half-way closes its connection (HTTP/1.1 cannot abort one
//!   exchange and keep the connection).
//! - A request that could not be written because a pooled connection had just been
//!   closed by the upstream is sent again on a fresh connection. hyper hands such a
//!   request back only when none of it reached the wire, so no request that the
//!   upstream may have seen is ever sent twice.
//! - Connecting is bounded by the caller's deadline and by a connect timeout.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::body::Body;

/// Idle connections kept: enough for a busy gateway's concurrency.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is not reused (upstreams close idle keep-alive
/// connections after a while; nginx's default is 75 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an exchange with the upstream failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, TLS handshake failed, timeout).
    Connect(String),
    /// The connection failed during the exchange, or the request body failed.
    Exchange(hyper::Error),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Exchange(e) => write!(f, "exchange: {e}"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(_) => None,
            Self::Exchange(e) => Some(e),
        }
    }
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

struct Inner {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

/// The pool. Clones share it.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("host", &self.inner.host)
            .field("port", &self.inner.port)
            .field("tls", &self.inner.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of connections to `host:port`, over TLS when `tls` is given.
    pub fn new(
        host: String,
        port: u16,
        tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                host,
                port,
                tls,
                connect_timeout,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Idle { sender, since }) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let inner = &self.inner;
        let attempt = async {
            let tcp = TcpStream::connect((inner.host.as_str(), inner.port))
                .await
                .map_err(|e| UpstreamError::Connect(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            match &inner.tls {
                None => handshake(TokioIo::new(tcp)).await,
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| UpstreamError::Connect(format!("TLS: {e}")))?;
                    handshake(TokioIo::new(tls)).await
                }
            }
        };
        tokio::time::timeout(inner.connect_timeout, attempt)
            .await
            .map_err(|_| UpstreamError::Connect("timed out".into()))?
    }

    /// Sends `req` (origin-form URI, `Host` set) and returns the response head; its body
    /// streams from the connection, which returns to the pool at the body's end.
    pub async fn send(
        &self,
        mut req: Request<Body>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            if reused && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let (parts, body) = res.into_parts();
                    let body = PooledBody::new(body, sender, Arc::downgrade(&self.inner));
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    // Nothing of it was written: a pooled connection had been closed under
                    // us. Try a fresh one; a fresh connection's failure is final.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
    }
}

async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Body>, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

fn give_back(pool: &Weak<Inner>, sender: SendRequest<Body>) {
    let Some(inner) = pool.upgrade() else { return };
    if sender.is_closed() {
        return;
    }
    let mut idle = inner.idle.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < MAX_IDLE {
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }
}

pin_project! {
    /// A response body that gives its connection back to the pool once read to the end.
    pub struct PooledBody {
        #[pin]
        inner: Incoming,
        giveback: Option<(SendRequest<Body>, Weak<Inner>)>,
    }
}

impl PooledBody {
    fn new(inner: Incoming, sender: SendRequest<Body>, pool: Weak<Inner>) -> Self {
        if inner.is_end_stream() {
            give_back(&pool, sender);
            return Self {
                inner,
                giveback: None,
            };
        }
        Self {
            inner,
            giveback: Some((sender, pool)),
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        // The end is either a `None` or, as readers stop polling once `is_end_stream` says
        // so, the last data frame of a sized body.
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if ended && let Some((sender, pool)) = this.giveback.take() {
            give_back(&pool, sender);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `Host` header for an upstream authority.
pub fn host_header(authority: &http::uri::Authority) -> HeaderValue {
    HeaderValue::from_str(authority.as_str()).expect("an authority is a valid header value")
}
