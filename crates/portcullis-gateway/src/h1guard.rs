//! A strict RFC 9112 reader in front of hyper's HTTP/1 parser.
//!
//! hyper is lenient where the RFC allows a recipient to be, and repairs some messages
//! before the gateway sees them: it accepts a bare LF as a line end, drops a
//! `Content-Length` that comes with `Transfer-Encoding`, folds identical duplicate
//! `Content-Length`s into one, and answers some malformed heads itself with an empty
//! 400. A gateway must not repair: an upstream or another proxy that reads the same bytes
//! differently is how requests are smuggled. So every byte the client sends passes
//! through [`Guard`] first. It reads each request head whole, checks it strictly, and only
//! then hands it on; it follows each body's framing (`Content-Length` or `chunked`) to
//! find where the next head starts.
//!
//! A head that fails is never shown to hyper. In its place the guard hands on a minimal
//! request without a body, then nothing more (later bytes are dropped), and records why in the connection's
//! [`Verdicts`]; the stack answers that request with the problem (400, 431 or 501,
//! problem+json with a request id, `Connection: close`) and nothing reaches the upstream.
//! A body whose chunked framing is malformed ends the stream with an error (hyper's own
//! decoder would refuse it too); the request is then answered 400.
//!
//! What a head must be (RFC 9112 §2–§7, RFC 9110 §5):
//! - lines end with CRLF; a bare CR or LF, NUL or any other control character → 400;
//!   empty lines before the request line are skipped (§2.2);
//! - `method SP request-target SP HTTP/1.1` (or `1.0`), the method a token, the target
//!   visible ASCII;
//! - field names are tokens, the colon follows at once, values are visible characters,
//!   spaces and tabs (obs-text allowed); a line starting with whitespace (obsolete line
//!   folding) → 400;
//! - `Content-Length`: once, digits only; `Transfer-Encoding`: once, not on HTTP/1.0,
//!   only `chunked` and only once (other codings → 501); never both;
//! - HTTP/1.1 has exactly one `Host`.
//! - the head is at most `max_head` bytes (431).

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use portcullis::ProblemKind;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a head was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 431 or 501.
    pub kind: ProblemKind,
    /// What was wrong (never the bytes themselves).
    pub detail: &'static str,
}

impl Refusal {
    fn bad(detail: &'static str) -> Self {
        Self {
            kind: ProblemKind::BadRequest,
            detail,
        }
    }
}

/// What the guard decided about a connection's requests, read by the stack.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// The index (from 0) of the refused request on this connection, and why.
    refused: Mutex<Option<(u64, Refusal)>>,
}

impl Verdicts {
    /// The refusal of request number `index` on this connection, if it was refused.
    pub fn refusal(&self, index: u64) -> Option<Refusal> {
        let g = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref()
            .filter(|(i, _)| *i == index)
            .map(|(_, r)| r.clone())
    }

    fn set(&self, index: u64, r: Refusal) {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some((index, r));
    }
}

/// The most one read takes from the connection.
const READ_CHUNK: usize = 16 * 1024;

/// Handed on in place of a refused head: no body, nothing after it.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: refused.invalid\r\n\r\n";

#[derive(Debug)]
enum State {
    /// Reading a head (bytes held back until it is whole and checked).
    Head,
    /// Passing on a body of known length.
    Body(u64),
    /// Passing on a chunked body.
    Chunked(Chunk),
    /// A head was refused: the stand-in has been queued; then end of stream.
    Done,
    /// Chunked framing was malformed.
    Broken,
}

#[derive(Debug)]
enum Chunk {
    /// Reading a chunk-size line (size so far, digits so far, in an extension).
    Size {
        size: u64,
        digits: u8,
        ext: bool,
        cr: bool,
    },
    /// Passing on chunk data, then expecting CRLF.
    Data(u64),
    DataCr,
    DataLf,
    /// Reading trailer lines after the last chunk (bytes on this line, saw CR).
    Trailer {
        line: usize,
        cr: bool,
    },
}

/// Reads through a strict HTTP/1 framing check; writes pass straight through.
#[derive(Debug)]
pub struct Guard<IO> {
    io: IO,
    state: State,
    head: Vec<u8>,
    max_head: usize,
    /// Checked bytes waiting to be handed on.
    out: Vec<u8>,
    out_pos: usize,
    /// What reads land in: allocated once per connection, on the first read (zeroing a
    /// stack buffer on every read costs more than the check itself).
    chunk: Box<[u8]>,
    /// Bytes read but not yet examined.
    rest: Vec<u8>,
    index: u64,
    verdicts: std::sync::Arc<Verdicts>,
    eof: bool,
}

impl<IO> Guard<IO> {
    /// Guards `io`; heads larger than `max_head` bytes are refused with 431.
    pub fn new(io: IO, max_head: usize, verdicts: std::sync::Arc<Verdicts>) -> Self {
        Self {
            io,
            state: State::Head,
            head: Vec::new(),
            max_head,
            out: Vec::new(),
            out_pos: 0,
            chunk: Box::default(),
            rest: Vec::new(),
            index: 0,
            verdicts,
            eof: false,
        }
    }

    /// The guarded stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Examines `raw`, moving checked bytes to `self.out`.
    fn advance(&mut self, raw: &[u8]) {
        let mut i = 0;
        while i < raw.len() {
            match &mut self.state {
                State::Done | State::Broken => break,
                State::Head => {
                    // Empty lines before a request line are skipped (RFC 9112 §2.2).
                    let b = raw[i];
                    if self.head.is_empty() && b == b'\r' {
                        self.head.push(b);
                        i += 1;
                        continue;
                    }
                    if self.head == b"\r" && b == b'\n' {
                        self.head.clear();
                        i += 1;
                        continue;
                    }
                    // Up to the end of the head.
                    let mut whole = false;
                    while i < raw.len() && self.head.len() <= self.max_head {
                        self.head.push(raw[i]);
                        i += 1;
                        if self.head.ends_with(b"\r\n\r\n") {
                            whole = true;
                            break;
                        }
                    }
                    if !whole {
                        if self.head.len() > self.max_head {
                            self.refuse(Refusal {
                                kind: ProblemKind::HeadersTooLarge,
                                detail: "the request head is larger than the limit",
                            });
                        }
                        break;
                    }
                    let head = std::mem::take(&mut self.head);
                    match check_head(&head) {
                        Ok(body) => {
                            self.out.extend_from_slice(&head);
                            self.index += 1;
                            self.state = match body {
                                Framing::None | Framing::Length(0) => State::Head,
                                Framing::Length(n) => State::Body(n),
                                Framing::Chunked => State::Chunked(Chunk::Size {
                                    size: 0,
                                    digits: 0,
                                    ext: false,
                                    cr: false,
                                }),
                            };
                        }
                        Err(r) => {
                            self.refuse(r);
                            break;
                        }
                    }
                }
                State::Body(left) => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(raw.len() - i);
                    self.out.extend_from_slice(&raw[i..i + n]);
                    i += n;
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::Chunked(c) => {
                    let b = raw[i];
                    match step_chunk(c, b) {
                        Ok(Some(Step::Pass(n))) => {
                            // Pass a run of chunk data at once.
                            let n = usize::try_from(n).unwrap_or(usize::MAX).min(raw.len() - i);
                            self.out.extend_from_slice(&raw[i..i + n]);
                            i += n;
                            if let Chunk::Data(left) = c {
                                *left -= n as u64;
                                if *left == 0 {
                                    *c = Chunk::DataCr;
                                }
                            }
                            continue;
                        }
                        Ok(Some(Step::End)) => {
                            self.out.push(b);
                            i += 1;
                            self.state = State::Head;
                            continue;
                        }
                        Ok(None) => {
                            self.out.push(b);
                            i += 1;
                        }
                        Err(()) => {
                            self.state = State::Broken;
                            break;
                        }
                    }
                }
            }
        }
        if i < raw.len() && matches!(self.state, State::Head | State::Body(_) | State::Chunked(_)) {
            self.rest = raw[i..].to_vec();
        }
    }

    fn refuse(&mut self, r: Refusal) {
        self.verdicts.set(self.index, r);
        self.out.extend_from_slice(STAND_IN);
        self.head.clear();
        self.state = State::Done;
    }
}

enum Step {
    /// Pass up to this many data bytes at once.
    Pass(u64),
    /// The body ended with this byte.
    End,
}

/// One byte of chunked framing: `Ok(None)` to pass it on, `Err` when malformed.
fn step_chunk(c: &mut Chunk, b: u8) -> Result<Option<Step>, ()> {
    match c {
        Chunk::Size {
            size,
            digits,
            ext,
            cr,
        } => {
            if *cr {
                if b != b'\n' {
                    return Err(());
                }
                if *digits == 0 {
                    return Err(());
                }
                *c = if *size == 0 {
                    Chunk::Trailer { line: 0, cr: false }
                } else {
                    Chunk::Data(*size)
                };
                return Ok(None);
            }
            match b {
                b'\r' => *cr = true,
                b'\n' => return Err(()),
                _ if *ext => {
                    if b != b'\t' && (b < 0x20 || b == 0x7f) {
                        return Err(());
                    }
                }
                b';' if *digits > 0 => *ext = true,
                // Whitespace before an extension (RFC 9112 §7.1.1 BWS).
                b' ' | b'\t' if *digits > 0 => *ext = true,
                _ => {
                    let v = (b as char).to_digit(16).ok_or(())?;
                    if *digits >= 16 {
                        return Err(());
                    }
                    *size = (*size << 4) | u64::from(v);
                    *digits += 1;
                }
            }
            Ok(None)
        }
        Chunk::Data(n) => Ok(Some(Step::Pass(*n))),
        Chunk::DataCr => {
            if b != b'\r' {
                return Err(());
            }
            *c = Chunk::DataLf;
            Ok(None)
        }
        Chunk::DataLf => {
            if b != b'\n' {
                return Err(());
            }
            *c = Chunk::Size {
                size: 0,
                digits: 0,
                ext: false,
                cr: false,
            };
            Ok(None)
        }
        Chunk::Trailer { line, cr } => {
            if *cr {
                if b != b'\n' {
                    return Err(());
                }
                if *line == 0 {
                    return Ok(Some(Step::End));
                }
                *line = 0;
                *cr = false;
                return Ok(None);
            }
            match b {
                b'\r' => *cr = true,
                b'\n' | 0 => return Err(()),
                _ => {
                    *line += 1;
                    if *line > 8192 {
                        return Err(());
                    }
                }
            }
            Ok(None)
        }
    }
}

/// How a checked request's body is framed.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks a whole head (ending with CRLF CRLF).
fn check_head(head: &[u8]) -> Result<Framing, Refusal> {
    let body = &head[..head.len() - 4];
    let mut lines = Vec::new();
    let mut start = 0;
    let mut k = 0;
    while k < body.len() {
        match body[k] {
            b'\r' => {
                if body.get(k + 1) != Some(&b'\n') {
                    return Err(Refusal::bad("a bare CR in the request head"));
                }
                lines.push(&body[start..k]);
                k += 2;
                start = k;
            }
            b'\n' => return Err(Refusal::bad("a bare LF in the request head")),
            _ => k += 1,
        }
    }
    lines.push(&body[start..]);
    let mut lines = lines.into_iter();
    let request_line = lines.next().unwrap_or_default();
    let http10 = request_line_ok(request_line)?;

    let (mut lengths, mut codings, mut hosts) = (Vec::new(), Vec::new(), 0);
    for line in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(Refusal::bad("obsolete line folding"));
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(Refusal::bad("a header line without a colon"))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(Refusal::bad("an invalid header field name"));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Refusal::bad("a control character in a header field"));
        }
        let value = trim_ows(value);
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths.push(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.push(value);
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
    }
    if !lengths.is_empty() && !codings.is_empty() {
        return Err(Refusal::bad("both Content-Length and Transfer-Encoding"));
    }
    if lengths.len() > 1 {
        return Err(Refusal::bad("Content-Length more than once"));
    }
    if codings.len() > 1 {
        return Err(Refusal::bad("Transfer-Encoding more than once"));
    }
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(Refusal::bad("HTTP/1.1 needs exactly one Host"));
    }
    if let Some(v) = lengths.first() {
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err(Refusal::bad("Content-Length is not a decimal number"));
        }
        let n = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(Refusal::bad("Content-Length is not a decimal number"))?;
        return Ok(Framing::Length(n));
    }
    if let Some(v) = codings.first() {
        if http10 {
            return Err(Refusal::bad("Transfer-Encoding on HTTP/1.0"));
        }
        let mut chunked = 0;
        for coding in v.split(|b| *b == b',') {
            let coding = trim_ows(coding);
            if coding.eq_ignore_ascii_case(b"chunked") {
                chunked += 1;
            } else if !coding.is_empty() {
                return Err(Refusal {
                    kind: ProblemKind::NotImplemented,
                    detail: "only the chunked transfer coding is implemented",
                });
            }
        }
        return match chunked {
            1 => Ok(Framing::Chunked),
            0 => Err(Refusal::bad("Transfer-Encoding without a coding")),
            _ => Err(Refusal::bad("chunked more than once")),
        };
    }
    Ok(Framing::None)
}

/// `method SP target SP HTTP/1.x`; whether it is HTTP/1.0.
fn request_line_ok(line: &[u8]) -> Result<bool, Refusal> {
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::bad("a malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) {
        return Err(Refusal::bad("an invalid method"));
    }
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Refusal::bad("an invalid request target"));
    }
    match version {
        b"HTTP/1.1" => Ok(false),
        b"HTTP/1.0" => Ok(true),
        _ => Err(Refusal::bad("an unsupported HTTP version")),
    }
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match this.state {
                // After a refusal: what the client sends is dropped, and its end passed on.
                // hyper must not see end-of-stream before the refusal is answered (it
                // would take the client for gone), and closes after answering.
                State::Done => loop {
                    let mut tmp = [0u8; 4096];
                    let mut rb = ReadBuf::new(&mut tmp);
                    match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if !rb.filled().is_empty() => {}
                        other => return other,
                    }
                },
                State::Broken => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed chunked framing",
                    )));
                }
                _ => {}
            }
            if this.eof {
                // The client closed: a partial head is dropped, like hyper would.
                return Poll::Ready(Ok(()));
            }
            if !this.rest.is_empty() {
                let rest = std::mem::take(&mut this.rest);
                this.advance(&rest);
                continue;
            }
            let mut chunk = std::mem::take(&mut this.chunk);
            if chunk.is_empty() {
                chunk = vec![0u8; READ_CHUNK].into_boxed_slice();
            }
            let mut rb = ReadBuf::new(&mut chunk);
            let polled = Pin::new(&mut this.io).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            match polled {
                Poll::Ready(Ok(())) if n == 0 => this.eof = true,
                Poll::Ready(Ok(())) => this.advance(&chunk[..n]),
                Poll::Ready(Err(e)) => {
                    this.chunk = chunk;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    this.chunk = chunk;
                    return Poll::Pending;
                }
            }
            this.chunk = chunk;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guard<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    /// Feeds `input` in pieces of `piece` bytes; what hyper would see, and the verdict.
    async fn run(input: &[u8], piece: usize) -> (Vec<u8>, Option<(u64, Refusal)>, bool) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let verdicts = Arc::new(Verdicts::default());
        let mut g = Guard::new(server, 1024, verdicts.clone());
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for p in input.chunks(piece.max(1)) {
                client.write_all(p).await.unwrap();
                tokio::task::yield_now().await;
            }
            client.shutdown().await.unwrap();
            client
        });
        let mut seen = Vec::new();
        let broken = g.read_to_end(&mut seen).await.is_err();
        drop(writer.await.unwrap());
        let v = verdicts.refused.lock().unwrap().clone();
        (seen, v, broken)
    }

    const GOOD: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
        b"GET /ten HTTP/1.0\r\n\r\n",
        b"\r\nGET /after-blank HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
    ];

    #[tokio::test]
    async fn good_requests_pass_byte_for_byte_however_they_are_split() {
        let all: Vec<u8> = GOOD.concat();
        let want: Vec<u8> = GOOD
            .iter()
            .flat_map(|r| r.strip_prefix(b"\r\n").unwrap_or(r).to_vec())
            .collect();
        for piece in [1, 2, 3, 7, 64, 4096] {
            let (seen, v, broken) = run(&all, piece).await;
            assert_eq!(v, None, "piece {piece}");
            assert!(!broken);
            assert_eq!(
                String::from_utf8_lossy(&seen),
                String::from_utf8_lossy(&want),
                "piece {piece}"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_head_is_replaced_and_nothing_after_it_passes() {
        let first = GOOD[1];
        let mut input = first.to_vec();
        input.extend_from_slice(
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        for piece in [1, 5, 4096] {
            let (seen, v, _) = run(&input, piece).await;
            let mut want = first.to_vec();
            want.extend_from_slice(STAND_IN);
            assert_eq!(seen, want, "piece {piece}");
            let (index, r) = v.unwrap();
            assert_eq!(index, 1, "the second request was refused");
            assert_eq!(r.detail, "both Content-Length and Transfer-Encoding");
        }
    }

    #[tokio::test]
    async fn refusal_table() {
        let cases: &[(&[u8], ProblemKind, &str)] = &[
            (
                b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
                ProblemKind::BadRequest,
                "bare LF",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
                ProblemKind::BadRequest,
                "bare CR",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
                ProblemKind::BadRequest,
                "control",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
                ProblemKind::BadRequest,
                "folding",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n",
                ProblemKind::BadRequest,
                "field name",
            ),
            (b"GET / HTTP/1.1\r\n\r\n", ProblemKind::BadRequest, "Host"),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
                ProblemKind::BadRequest,
                "Host",
            ),
            (
                b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
                ProblemKind::BadRequest,
                "request line",
            ),
            (
                b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
                ProblemKind::BadRequest,
                "version",
            ),
            (
                b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
                ProblemKind::BadRequest,
                "method",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
                ProblemKind::BadRequest,
                "more than once",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                ProblemKind::BadRequest,
                "decimal",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                ProblemKind::NotImplemented,
                "chunked",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,chunked\r\n\r\n",
                ProblemKind::BadRequest,
                "more than once",
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                ProblemKind::BadRequest,
                "HTTP/1.0",
            ),
        ];
        for (input, kind, detail) in cases {
            let (seen, v, _) = run(input, 3).await;
            let (index, r) =
                v.unwrap_or_else(|| panic!("not refused: {}", String::from_utf8_lossy(input)));
            assert_eq!(
                (index, r.kind),
                (0, *kind),
                "{}",
                String::from_utf8_lossy(input)
            );
            assert!(
                r.detail.contains(detail),
                "{} : {}",
                r.detail,
                String::from_utf8_lossy(input)
            );
            assert_eq!(seen, STAND_IN);
        }
        let (_, v, _) = run(&[b'a'; 2000], 100).await;
        assert_eq!(v.unwrap().1.kind, ProblemKind::HeadersTooLarge);
    }

    #[tokio::test]
    async fn malformed_chunks_end_the_stream_with_an_error() {
        for body in [
            &b"ffffffffffffffffff1\r\na\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"z\r\n",
            b";ext\r\n",
        ] {
            let mut input =
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(body);
            let (_, v, broken) = run(&input, 4).await;
            assert!(broken, "{}", String::from_utf8_lossy(body));
            assert_eq!(v, None);
        }
    }
}
