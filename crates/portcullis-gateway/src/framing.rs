//! Request framing and `Host`, checked before anything else reads the request (RFC 9112
//! §6, RFC 9110 §7.2).
//!
//! hyper's parser already refuses what cannot be parsed at all (a bare CR or LF, NUL,
//! whitespace before a colon, obsolete line folding, an invalid field name or target).
//! What it accepts but an upstream or another proxy might read differently is refused
//! here, with the connection closed, so that no two parties ever disagree on where a
//! request ends (request smuggling) or whom it is for:
//!
//! - `Content-Length` together with `Transfer-Encoding`, in either order;
//! - `Content-Length` in more than one field, or not a plain decimal number (no sign, no
//!   list, no spaces);
//! - `Transfer-Encoding` in more than one field, on HTTP/1.0, with `chunked` more than
//!   once; any coding other than `chunked` → 501 (the gateway implements no other, and
//!   forwarding one it cannot read would leave the framing to the upstream);
//! - HTTP/1.1 without exactly one `Host`, a `Host` that is not `host[:port]`, or an
//!   absolute-form target naming another authority than `Host`.
//!
//! HTTP/2 frames requests itself; only the `Host` rules apply to it, and only when it
//! sends a `Host` field.

use http::header::{self, HeaderMap};
use http::uri::Authority;
use http::{Request, Version};
use portcullis::{Problem, ProblemKind};

/// Refuses a request whose framing or `Host` is ambiguous.
pub fn check<B>(req: &Request<B>) -> Result<(), Problem> {
    let h = req.headers();
    let h1 = matches!(req.version(), Version::HTTP_10 | Version::HTTP_11);
    if h1 {
        let lengths = h.get_all(header::CONTENT_LENGTH).iter().count();
        let codings = h.get_all(header::TRANSFER_ENCODING).iter().count();
        if lengths > 0 && codings > 0 {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        if lengths > 1 {
            return Err(bad("Content-Length more than once"));
        }
        if let Some(v) = h.get(header::CONTENT_LENGTH) {
            let b = v.as_bytes();
            if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
                return Err(bad("Content-Length is not a decimal number"));
            }
        }
        if codings > 1 {
            return Err(bad("Transfer-Encoding more than once"));
        }
        if let Some(v) = h.get(header::TRANSFER_ENCODING) {
            if req.version() == Version::HTTP_10 {
                return Err(bad("Transfer-Encoding on HTTP/1.0"));
            }
            transfer_coding(v.as_bytes())?;
        }
    }
    host(req, h, req.version() == Version::HTTP_11)
}

fn bad(what: &'static str) -> Problem {
    Problem::new(ProblemKind::BadRequest)
        .detail(what)
        .close_connection()
}

/// Only `chunked`, once.
fn transfer_coding(v: &[u8]) -> Result<(), Problem> {
    let text = std::str::from_utf8(v).map_err(|_| bad("Transfer-Encoding is not text"))?;
    let mut chunked = 0;
    for coding in text.split(',') {
        let coding = coding.trim_matches([' ', '\t']);
        if coding.eq_ignore_ascii_case("chunked") {
            chunked += 1;
        } else if !coding.is_empty() {
            return Err(Problem::new(ProblemKind::NotImplemented)
                .detail("only the chunked transfer coding is implemented")
                .close_connection());
        }
    }
    match chunked {
        0 => Err(bad("Transfer-Encoding without a coding")),
        1 => Ok(()),
        _ => Err(bad("chunked more than once")),
    }
}

fn host<B>(req: &Request<B>, h: &HeaderMap, required: bool) -> Result<(), Problem> {
    let mut hosts = h.get_all(header::HOST).iter();
    let value = match (hosts.next(), hosts.next()) {
        (None, _) if required => return Err(bad("no Host")),
        (None, _) => return Ok(()),
        (Some(_), Some(_)) => return Err(bad("Host more than once")),
        (Some(v), None) => v,
    };
    let authority = std::str::from_utf8(value.as_bytes())
        .ok()
        .filter(|s| !s.is_empty() && !s.contains('@'))
        .and_then(|s| s.parse::<Authority>().ok())
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| bad("Host is not host[:port]"))?;
    if let Some(target) = req.uri().authority()
        && !same_authority(target, &authority)
    {
        return Err(bad("the target names another host than Host"));
    }
    Ok(())
}

fn same_authority(a: &Authority, b: &Authority) -> bool {
    a.host().eq_ignore_ascii_case(b.host()) && a.port_u16() == b.port_u16()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn status(r: &Request<()>) -> Option<u16> {
        check(r).err().map(|p| p.kind().status().as_u16())
    }

    /// Version, target, headers, and the refusal's status (`None`: passes).
    type Case<'a> = (Version, &'a str, &'a [(&'a str, &'a str)], Option<u16>);

    #[test]
    fn framing_table() {
        const V10: Version = Version::HTTP_10;
        const V11: Version = Version::HTTP_11;
        const V2: Version = Version::HTTP_2;
        let cases: &[Case] = &[
            (V11, "/", &[("host", "a")], None),
            (V11, "/", &[], Some(400)),
            (V10, "/", &[], None),
            (V2, "/", &[], None),
            (V11, "/", &[("host", "a"), ("host", "a")], Some(400)),
            (V11, "/", &[("host", "a:80")], None),
            (V11, "/", &[("host", "[::1]:8080")], None),
            (V11, "/", &[("host", "u@a")], Some(400)),
            (V11, "/", &[("host", "a b")], Some(400)),
            (V11, "/", &[("host", "")], Some(400)),
            (V11, "http://a/x", &[("host", "A")], None),
            (V11, "http://b/x", &[("host", "a")], Some(400)),
            (V11, "http://a:81/x", &[("host", "a:80")], Some(400)),
            (V11, "/", &[("host", "a"), ("content-length", "10")], None),
            (
                V11,
                "/",
                &[("host", "a"), ("content-length", "+1")],
                Some(400),
            ),
            (
                V11,
                "/",
                &[("host", "a"), ("content-length", "1,1")],
                Some(400),
            ),
            (
                V11,
                "/",
                &[
                    ("host", "a"),
                    ("content-length", "1"),
                    ("content-length", "1"),
                ],
                Some(400),
            ),
            (
                V11,
                "/",
                &[("host", "a"), ("transfer-encoding", "chunked")],
                None,
            ),
            (
                V11,
                "/",
                &[("host", "a"), ("transfer-encoding", " Chunked ")],
                None,
            ),
            (
                V11,
                "/",
                &[("host", "a"), ("transfer-encoding", "gzip, chunked")],
                Some(501),
            ),
            (
                V11,
                "/",
                &[("host", "a"), ("transfer-encoding", "chunked, chunked")],
                Some(400),
            ),
            (
                V11,
                "/",
                &[
                    ("host", "a"),
                    ("transfer-encoding", "chunked"),
                    ("content-length", "3"),
                ],
                Some(400),
            ),
            (V10, "/", &[("transfer-encoding", "chunked")], Some(400)),
        ];
        for (v, uri, headers, want) in cases {
            assert_eq!(
                status(&req(*v, uri, headers)),
                *want,
                "{v:?} {uri} {headers:?}"
            );
        }
    }
}
