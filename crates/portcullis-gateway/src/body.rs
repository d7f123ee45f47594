//! Bodies on the way through: the request body with its size limit, and the response
//! body with its deadline. Both stream; neither buffers.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use pin_project_lite::pin_project;
use portcullis::BoxError;
use tokio::time::{Instant, Sleep};

/// The body type of every request and response inside the gateway.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The request body grew past `limits.body`.
#[derive(Debug)]
pub struct BodyTooLarge;

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body over the limit")
    }
}

impl StdError for BodyTooLarge {}

/// The request body arrived slower than `limits.body_min_rate`.
#[derive(Debug)]
pub struct BodyTooSlow;

impl fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body slower than the minimum rate")
    }
}

impl StdError for BodyTooSlow {}

/// The client's request body failed: its framing was malformed, or the client went away
/// before sending all of it. The cause is the error of the body read from the client.
#[derive(Debug)]
pub struct ClientBodyError(BoxError);

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body malformed or cut short")
    }
}

impl StdError for ClientBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// The slowest a request body may arrive: `bytes_per_sec` on average, counted from
/// `grace` after the body was first polled.
#[derive(Clone, Copy, Debug)]
pub struct MinRate {
    /// Bytes per second; 0: no minimum.
    pub bytes_per_sec: u64,
    /// Time before the rate applies.
    pub grace: std::time::Duration,
}

/// The exchange ran past `limits.request_timeout` while the response was streaming.
#[derive(Debug)]
pub struct ResponseDeadline;

impl fmt::Display for ResponseDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response stalled past the request timeout")
    }
}

impl StdError for ResponseDeadline {}

/// Whether `err` or anything in its source chain is an `E`.
pub fn caused_by<E: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<E>() {
            return true;
        }
        cur = e.source();
    }
    false
}

pin_project! {
    /// A request body that fails with [`BodyTooLarge`] once more than `limit` bytes
    /// have passed, with [`BodyTooSlow`] when it falls behind its [`MinRate`], with
    /// [`ClientBodyError`] when the client's body fails, and notes
    /// when it has been read to the end (so that a timeout can tell a slow client from a
    /// slow upstream).
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        received: u64,
        finished: Arc<AtomicBool>,
        rate: MinRate,
        started: Option<Instant>,
        // Armed when the body is first polled: when it must have received more.
        #[pin]
        behind: Option<Sleep>,
    }
}

impl<B: HttpBody> LimitedBody<B> {
    /// Wraps `inner`; `finished` becomes true at its end.
    pub fn new(inner: B, limit: u64, rate: MinRate, finished: Arc<AtomicBool>) -> Self {
        if inner.is_end_stream() {
            finished.store(true, Ordering::Release);
        }
        Self {
            inner,
            remaining: limit,
            received: 0,
            finished,
            rate,
            started: None,
            behind: None,
        }
    }
}

impl<B> HttpBody for LimitedBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if this.rate.bytes_per_sec > 0 && this.started.is_none() {
            let now = Instant::now();
            *this.started = Some(now);
            this.behind
                .set(Some(tokio::time::sleep_until(now + this.rate.grace)));
        }
        match this.inner.poll_frame(cx) {
            Poll::Pending => {
                if let Some(sleep) = this.behind.as_mut().as_pin_mut()
                    && sleep.poll(cx).is_ready()
                {
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.finished.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(Box::new(ClientBodyError(e.into())))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > *this.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    *this.remaining -= n;
                    *this.received += n;
                    if let (Some(start), Some(sleep)) =
                        (*this.started, this.behind.as_mut().as_pin_mut())
                    {
                        // Behind when less than `rate × (elapsed − grace)` has arrived.
                        let due = std::time::Duration::from_secs_f64(
                            *this.received as f64 / this.rate.bytes_per_sec as f64,
                        );
                        sleep.reset(start + this.rate.grace + due);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A response body cut off with [`ResponseDeadline`] at `deadline`: the client sees
    /// an aborted response, never a truncated one passed off as complete.
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
    }
}

impl<B> DeadlineBody<B> {
    /// Wraps `inner`, failing at `deadline`.
    pub fn new(inner: B, deadline: Instant) -> Self {
        Self {
            inner,
            sleep: tokio::time::sleep_until(deadline),
        }
    }
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(ResponseDeadline)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
