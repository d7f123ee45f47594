//! CSRF, the HTTP face: where a request comes from, and where its token is.
//!
//! Pure functions over headers and a buffered body; the tokens themselves (signed, bound
//! to a session, kept in the store) are [`portcullis_core::csrf`].
//!
//! # Where a request comes from ([`check_source`])
//!
//! OWASP's layering, on state-changing requests that ride on cookies:
//!
//! 1. **Fetch Metadata.** `Sec-Fetch-Site: same-origin` or `none` (the user typed the URL,
//!    or a bookmark) passes. `same-site` (a sibling subdomain) and `cross-site` are refused
//!    unless the request's `Origin` is one of the trusted origins. An absent header (an
//!    older browser, a non-browser client), an unknown value or several values: next step.
//! 2. **Origin.** Present: it must be the gateway's own origin or a trusted one; anything
//!    else, `null` included (sandboxed frames, `file:` pages, cross-origin redirects:
//!    anyone can produce it), is refused.
//! 3. **Referer**, when there is no `Origin`: its origin must match the same way.
//! 4. None of them: pass. The token check follows in any case.
//!
//! Origins compare once the scheme and host are ASCII-lowercased and a default port
//! (`80` for `http` and `ws`, `443` for `https` and `wss`) is dropped.
//!
//! # Where the token is
//!
//! In a header ([`token_from_header`]: exactly one field, visible ASCII, at most
//! [`MAX_TOKEN_LEN`] bytes), or in a form body ([`form_token`]:
//! `application/x-www-form-urlencoded` or `multipart/form-data`), never in the query string
//! (it would reach logs, history and `Referer`) and never in JSON (a JSON body is sent by
//! script, and script can set the header).
//!
//! Multipart bodies are read by a small scanner rather than a streaming parser: the body
//! is already buffered, and the scanner is strict (CRLF line ends, the boundary of the
//! `Content-Type`, a closing delimiter), linear in the body's size, bounded in parts
//! ([`MAX_PARTS`]) and header bytes per part, and never looks inside a part's content for
//! anything but the next delimiter. File parts are skipped.
//!
//! # Security
//!
//! - Fetch Metadata and `Origin` are set by the browser; a page cannot forge them. A
//!   non-browser client can, but it is not the confused deputy CSRF is about: it has
//!   the cookies itself.
//! - A trusted origin is trusted whatever `Sec-Fetch-Site` says: list only origins whose
//!   every page you trust (an XSS there is an XSS here).
//! - Some privacy tools strip `Referer` and some proxies strip `Origin`; neither being
//!   present passes this check, so the token check is what protects such requests.
//!
//! ```
//! use http::{HeaderMap, HeaderValue};
//! use portcullis::csrf::{check_source, form_token};
//!
//! let own = "https://app.example";
//! let mut h = HeaderMap::new();
//! h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
//! h.insert("origin", HeaderValue::from_static("https://evil.example"));
//! assert!(check_source(&h, own, &[]).is_err());
//!
//! let mut h = HeaderMap::new();
//! h.insert("origin", HeaderValue::from_static("https://APP.example:443"));
//! assert_eq!(check_source(&h, own, &[]), Ok(()));
//!
//! let mut h = HeaderMap::new();
//! h.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded"));
//! assert_eq!(form_token(&h, b"q=1&_csrf=v1.abc%2Bdef", "_csrf").as_deref(), Some("v1.abc+def"));
//! ```

use std::borrow::Cow;

use http::header::{CONTENT_TYPE, ORIGIN, REFERER};
use http::{HeaderMap, HeaderName};
use memchr::memmem;

/// Longest token read from a header or a form field; a longer value is no token.
pub const MAX_TOKEN_LEN: usize = 512;
/// Most parts of a multipart body scanned; a longer form yields no token.
pub const MAX_PARTS: usize = 1024;
/// Most bytes of one part's header section.
const MAX_PART_HEADER_BYTES: usize = 8 * 1024;
/// RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
const MAX_BOUNDARY: usize = 70;

const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// Whether the request may come from where it says it comes from: Fetch Metadata, then
/// `Origin` (or `Referer`), OWASP's layering (see the module's docs). `own_origin` like
/// `https://app.example` (`scheme://host[:port]`); `trusted` exact origins (the same
/// normalisation: lowercase, default ports dropped). The error says why, in a few words
/// that never quote the request.
pub fn check_source(
    headers: &HeaderMap,
    own_origin: &str,
    trusted: &[String],
) -> Result<(), &'static str> {
    match fetch_site(headers) {
        Some(FetchSite::SameOrigin | FetchSite::None) => return Ok(()),
        Some(site @ (FetchSite::SameSite | FetchSite::CrossSite)) => {
            let origin = single(headers, &ORIGIN).and_then(Origin::parse);
            return match origin {
                Some(o) if o.in_list(trusted) => Ok(()),
                _ if site == FetchSite::SameSite => {
                    Err("same-site request from an untrusted origin")
                }
                _ => Err("cross-site request"),
            };
        }
        None => {}
    }
    let own = Origin::parse(own_origin);
    let allowed = |o: &Origin<'_>| own.as_ref().is_some_and(|own| own == o) || o.in_list(trusted);
    match count(headers, &ORIGIN) {
        0 => {}
        1 => {
            let value = single(headers, &ORIGIN).unwrap_or_default();
            if value.eq_ignore_ascii_case("null") {
                return Err("opaque origin (null)");
            }
            return match Origin::parse(value) {
                Some(o) if allowed(&o) => Ok(()),
                _ => Err("untrusted origin"),
            };
        }
        _ => return Err("untrusted origin"),
    }
    match count(headers, &REFERER) {
        0 => Ok(()),
        1 => match single(headers, &REFERER).and_then(Origin::of_url) {
            Some(o) if allowed(&o) => Ok(()),
            _ => Err("untrusted referer"),
        },
        _ => Err("untrusted referer"),
    }
}

/// The token in header `name`: exactly one field, visible ASCII, non-empty, at most
/// [`MAX_TOKEN_LEN`] bytes; `None` otherwise.
pub fn token_from_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return None;
    };
    let b = v.as_bytes();
    if b.is_empty() || b.len() > MAX_TOKEN_LEN || !b.iter().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    v.to_str().ok()
}

/// Whether the body is a form a token can be read from: `application/x-www-form-urlencoded`
/// or `multipart/form-data` (with a valid boundary).
pub fn is_form(headers: &HeaderMap) -> bool {
    form_kind(headers).is_some()
}

/// The value of form field `field` in a buffered urlencoded or multipart body; `None` when
/// absent, empty, longer than [`MAX_TOKEN_LEN`], repeated with different values, or the
/// body is not such a form (a multipart body must be well formed to its closing
/// delimiter). Never reads the query string or JSON; skips multipart file parts.
pub fn form_token(headers: &HeaderMap, body: &[u8], field: &str) -> Option<String> {
    let value = match form_kind(headers)? {
        FormKind::UrlEncoded => {
            let mut found: Option<Cow<'_, str>> = None;
            for (name, value) in form_urlencoded::parse(body) {
                if name == field {
                    match &found {
                        Some(prev) if *prev != value => return None,
                        Some(_) => {}
                        None => found = Some(value),
                    }
                }
            }
            found?.into_owned()
        }
        FormKind::Multipart(boundary) => multipart_field(body, &boundary, field)?,
    };
    (!value.is_empty() && value.len() <= MAX_TOKEN_LEN).then_some(value)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FetchSite {
    SameOrigin,
    SameSite,
    CrossSite,
    None,
}

fn fetch_site(headers: &HeaderMap) -> Option<FetchSite> {
    let v = single(headers, &HeaderName::from_static(SEC_FETCH_SITE))?;
    Some(match v.trim().to_ascii_lowercase().as_str() {
        "same-origin" => FetchSite::SameOrigin,
        "same-site" => FetchSite::SameSite,
        "cross-site" => FetchSite::CrossSite,
        "none" => FetchSite::None,
        _ => return None,
    })
}

fn count(headers: &HeaderMap, name: &HeaderName) -> usize {
    headers.get_all(name).iter().take(2).count()
}

/// The value of `name` when it appears exactly once and is visible ASCII.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    }
}

/// An origin, compared as the module's docs say.
#[derive(Debug)]
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    /// Explicit, or the scheme's default; `None` for a scheme without one.
    port: Option<u16>,
}

impl PartialEq for Origin<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.scheme.eq_ignore_ascii_case(other.scheme)
            && self.host.eq_ignore_ascii_case(other.host)
            && self.port == other.port
    }
}

impl<'a> Origin<'a> {
    /// A serialised origin: `scheme://host[:port]` and nothing more.
    fn parse(s: &'a str) -> Option<Self> {
        let (scheme, authority) = s.trim().split_once("://")?;
        Self::from_parts(scheme, authority)
    }

    /// The origin of an absolute URL (a `Referer`).
    fn of_url(s: &'a str) -> Option<Self> {
        let (scheme, rest) = s.trim().split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        Self::from_parts(scheme, &rest[..end])
    }

    fn from_parts(scheme: &'a str, authority: &'a str) -> Option<Self> {
        let mut sb = scheme.bytes();
        if !sb.next()?.is_ascii_alphabetic()
            || !sb.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return None;
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let close = v6.find(']')?;
            let host = &authority[..close + 2];
            if !v6[..close]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return None;
            }
            (host, &authority[close + 2..])
        } else {
            let end = authority.find(':').unwrap_or(authority.len());
            let host = &authority[..end];
            if !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b))
            {
                return None;
            }
            (host, &authority[end..])
        };
        if host.is_empty() {
            return None;
        }
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => default_port(scheme),
            None => return None,
            Some(p) => {
                if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(p.parse().ok()?)
            }
        };
        Some(Self { scheme, host, port })
    }

    fn in_list(&self, list: &[String]) -> bool {
        list.iter()
            .any(|t| Origin::parse(t).is_some_and(|t| t == *self))
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

enum FormKind {
    UrlEncoded,
    Multipart(String),
}

fn form_kind(headers: &HeaderMap) -> Option<FormKind> {
    let value = single(headers, &CONTENT_TYPE)?;
    let (essence, params) = value.split_once(';').unwrap_or((value, ""));
    let essence = essence.trim_matches(is_ows);
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Some(FormKind::UrlEncoded);
    }
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let mut boundary = None;
    for (name, value) in parameters(params)? {
        if name.eq_ignore_ascii_case("boundary") {
            if boundary.is_some() {
                return None;
            }
            boundary = Some(value);
        }
    }
    boundary.filter(|b| is_boundary(b)).map(FormKind::Multipart)
}

/// RFC 2046 §5.1.1 `boundary`: 1 to 70 `bchars`, not ending in a space.
fn is_boundary(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= MAX_BOUNDARY
        && !b.ends_with(' ')
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 9110 §5.6.2 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `*( OWS ";" OWS [ name "=" ( token / quoted-string ) ] )`, after the first `;`, with
/// quoted strings unescaped; `None` when malformed. Quoted strings may hold UTF-8 (file
/// names in `Content-Disposition`), never control characters.
fn parameters(mut s: &str) -> Option<Vec<(&str, String)>> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches(is_ows);
        if s.is_empty() {
            return Some(out);
        }
        if let Some(rest) = s.strip_prefix(';') {
            s = rest;
            continue;
        }
        let (name, rest) = s.split_once('=')?;
        let name = name.trim_end_matches(is_ows);
        if !is_token(name) {
            return None;
        }
        let rest = rest.trim_start_matches(is_ows);
        let (value, rest) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => value.push(chars.next().filter(|(_, c)| !c.is_control())?.1),
                    c if c == '\t' || !c.is_control() => value.push(c),
                    _ => return None,
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = rest.find(|c| c == ';' || is_ows(c)).unwrap_or(rest.len());
            let (token, rest) = rest.split_at(end);
            if !is_token(token) {
                return None;
            }
            (token.to_owned(), rest)
        };
        out.push((name, value));
        s = rest.trim_start_matches(is_ows);
        if !s.is_empty() {
            s = s.strip_prefix(';')?;
        }
    }
}

/// The content of the non-file part named `field` (RFC 7578), the same in every part that
/// has that name; `None` when absent, repeated with different contents, or the body is not
/// well formed (RFC 2046 §5.1.1 with CRLF line ends) up to its closing delimiter.
fn multipart_field(body: &[u8], boundary: &str, field: &str) -> Option<String> {
    // Every delimiter but a first one at the very start is preceded by CRLF.
    let delimiter = format!("\r\n--{boundary}");
    let finder = memmem::Finder::new(delimiter.as_bytes());
    let mut pos = if body.starts_with(&delimiter.as_bytes()[2..]) {
        delimiter.len() - 2
    } else {
        finder.find(body)? + delimiter.len()
    };
    let mut found: Option<&[u8]> = None;
    for parts in 0..=MAX_PARTS {
        // After a delimiter: "--" closes the body; else transport padding, then CRLF.
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return String::from_utf8(found?.to_vec()).ok();
        }
        if parts == MAX_PARTS {
            return None;
        }
        let padding = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let start = pos + padding + b"\r\n".len();
        if !rest[padding..].starts_with(b"\r\n") {
            return None;
        }
        let end = start + finder.find(&body[start..])?;
        let part = &body[start..end];
        let (head, content) = if let Some(content) = part.strip_prefix(b"\r\n") {
            (&b""[..], content)
        } else {
            let split = memmem::find(part, b"\r\n\r\n")?;
            (&part[..split], &part[split + 4..])
        };
        if head.len() > MAX_PART_HEADER_BYTES {
            return None;
        }
        if field_name(head)?.is_some_and(|name| name == field) {
            match found {
                Some(prev) if prev != content => return None,
                _ => found = Some(content),
            }
        }
        pos = end + delimiter.len();
    }
    None
}

/// The name of a part from its header section: `Some(None)` for a file part or a part
/// without a usable `Content-Disposition: form-data`; `None` when the section is malformed
/// (a line without a colon, two `Content-Disposition` fields).
fn field_name(head: &[u8]) -> Option<Option<String>> {
    let head = std::str::from_utf8(head).ok()?;
    let mut disposition = None;
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name
            .trim_end_matches(is_ows)
            .eq_ignore_ascii_case("content-disposition")
        {
            if disposition.is_some() {
                return None;
            }
            disposition = Some(value);
        }
    }
    let Some(value) = disposition else {
        return Some(None);
    };
    let (kind, params) = value.split_once(';').unwrap_or((value, ""));
    if !kind.trim_matches(is_ows).eq_ignore_ascii_case("form-data") {
        return Some(None);
    }
    let Some(params) = parameters(params) else {
        return Some(None);
    };
    let mut name = None;
    for (k, v) in params {
        if k.eq_ignore_ascii_case("filename") || k.eq_ignore_ascii_case("filename*") {
            return Some(None);
        }
        if k.eq_ignore_ascii_case("name") {
            if name.is_some() {
                return Some(None);
            }
            name = Some(v);
        }
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const OWN: &str = "https://app.example";

    use crate::test_headers as headers;

    #[test]
    fn check_source_table() {
        let trusted = vec![
            "https://admin.app.example".to_owned(),
            "https://partner.example:8443".to_owned(),
        ];
        struct Case {
            name: &'static str,
            headers: &'static [(&'static str, &'static str)],
            ok: bool,
        }
        let cases = [
            // Fetch Metadata first.
            Case {
                name: "same-origin passes",
                headers: &[("sec-fetch-site", "same-origin")],
                ok: true,
            },
            Case {
                name: "same-origin passes whatever Origin says (the browser set both)",
                headers: &[
                    ("sec-fetch-site", "same-origin"),
                    ("origin", "https://app.example"),
                ],
                ok: true,
            },
            Case {
                name: "none (typed URL, bookmark) passes",
                headers: &[("sec-fetch-site", "none")],
                ok: true,
            },
            Case {
                name: "value compared ignoring case",
                headers: &[("sec-fetch-site", "Same-Origin")],
                ok: true,
            },
            Case {
                name: "cross-site refused",
                headers: &[("sec-fetch-site", "cross-site")],
                ok: false,
            },
            Case {
                name: "cross-site refused even with our own Origin (it cannot be)",
                headers: &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://app.example"),
                ],
                ok: false,
            },
            Case {
                name: "cross-site from a trusted origin passes",
                headers: &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://partner.example:8443"),
                ],
                ok: true,
            },
            Case {
                name: "same-site refused without Origin",
                headers: &[("sec-fetch-site", "same-site")],
                ok: false,
            },
            Case {
                name: "same-site from an untrusted sibling refused",
                headers: &[
                    ("sec-fetch-site", "same-site"),
                    ("origin", "https://blog.app.example"),
                ],
                ok: false,
            },
            Case {
                name: "same-site from a trusted sibling passes",
                headers: &[
                    ("sec-fetch-site", "same-site"),
                    ("origin", "https://admin.app.example"),
                ],
                ok: true,
            },
            Case {
                name: "unknown Sec-Fetch-Site: on to Origin (refused)",
                headers: &[
                    ("sec-fetch-site", "sideways"),
                    ("origin", "https://evil.example"),
                ],
                ok: false,
            },
            Case {
                name: "unknown Sec-Fetch-Site: on to Origin (passes)",
                headers: &[
                    ("sec-fetch-site", "sideways"),
                    ("origin", "https://app.example"),
                ],
                ok: true,
            },
            Case {
                name: "two Sec-Fetch-Site: on to Origin",
                headers: &[
                    ("sec-fetch-site", "same-origin"),
                    ("sec-fetch-site", "same-origin"),
                    ("origin", "https://evil.example"),
                ],
                ok: false,
            },
            // Origin.
            Case {
                name: "own Origin passes",
                headers: &[("origin", "https://app.example")],
                ok: true,
            },
            Case {
                name: "own Origin, other case and explicit default port",
                headers: &[("origin", "HTTPS://App.Example:443")],
                ok: true,
            },
            Case {
                name: "trusted Origin passes",
                headers: &[("origin", "https://partner.example:8443")],
                ok: true,
            },
            Case {
                name: "trusted host on another port refused",
                headers: &[("origin", "https://partner.example")],
                ok: false,
            },
            Case {
                name: "other scheme refused",
                headers: &[("origin", "http://app.example")],
                ok: false,
            },
            Case {
                name: "other port refused",
                headers: &[("origin", "https://app.example:8443")],
                ok: false,
            },
            Case {
                name: "foreign Origin refused",
                headers: &[("origin", "https://evil.example")],
                ok: false,
            },
            Case {
                name: "suffix trick refused",
                headers: &[("origin", "https://app.example.evil.example")],
                ok: false,
            },
            Case {
                name: "null refused",
                headers: &[("origin", "null")],
                ok: false,
            },
            Case {
                name: "Origin with a path refused",
                headers: &[("origin", "https://app.example/")],
                ok: false,
            },
            Case {
                name: "Origin with user info refused",
                headers: &[("origin", "https://app.example@evil.example")],
                ok: false,
            },
            Case {
                name: "garbage Origin refused",
                headers: &[("origin", "app.example")],
                ok: false,
            },
            Case {
                name: "two Origin fields refused",
                headers: &[
                    ("origin", "https://app.example"),
                    ("origin", "https://app.example"),
                ],
                ok: false,
            },
            Case {
                name: "Origin wins over a good Referer",
                headers: &[
                    ("origin", "https://evil.example"),
                    ("referer", "https://app.example/page"),
                ],
                ok: false,
            },
            // Referer when there is no Origin.
            Case {
                name: "own Referer passes",
                headers: &[("referer", "https://app.example/account?tab=1")],
                ok: true,
            },
            Case {
                name: "own Referer without a path passes",
                headers: &[("referer", "https://app.example")],
                ok: true,
            },
            Case {
                name: "trusted Referer passes",
                headers: &[("referer", "https://admin.app.example/x")],
                ok: true,
            },
            Case {
                name: "foreign Referer refused",
                headers: &[("referer", "https://evil.example/app.example")],
                ok: false,
            },
            Case {
                name: "Referer with our host as user info refused",
                headers: &[("referer", "https://app.example@evil.example/")],
                ok: false,
            },
            Case {
                name: "relative Referer refused",
                headers: &[("referer", "/account")],
                ok: false,
            },
            // Nothing at all: the token decides.
            Case {
                name: "no Fetch Metadata, no Origin, no Referer passes",
                headers: &[],
                ok: true,
            },
        ];
        for c in cases {
            let got = check_source(&headers(c.headers), OWN, &trusted);
            assert_eq!(got.is_ok(), c.ok, "{}: {got:?}", c.name);
        }
    }

    #[test]
    fn own_origin_and_trusted_are_normalised_too() {
        let h = headers(&[("origin", "https://app.example")]);
        assert_eq!(check_source(&h, "HTTPS://APP.EXAMPLE:443", &[]), Ok(()));
        let h = headers(&[("origin", "http://[::1]:8080")]);
        assert_eq!(check_source(&h, "http://[::1]:8080", &[]), Ok(()));
        let h = headers(&[("origin", "http://localhost")]);
        assert_eq!(
            check_source(&h, OWN, &["HTTP://LOCALHOST:80".to_owned()]),
            Ok(())
        );
        // A broken own origin matches nothing.
        let h = headers(&[("origin", "https://app.example")]);
        assert!(check_source(&h, "", &[]).is_err());
    }

    #[test]
    fn token_from_header_rules() {
        let name = HeaderName::from_static("x-csrf-token");
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            ("one value", &["v1.abc.def"], Some("v1.abc.def")),
            ("absent", &[], None),
            ("two values", &["v1.a", "v1.a"], None),
            ("empty", &[""], None),
            ("inner space", &["v1 abc"], None),
            ("too long", &[long.as_str()], None),
        ];
        for (case, values, want) in cases {
            let mut h = HeaderMap::new();
            for v in *values {
                h.append(&name, HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(token_from_header(&h, &name), *want, "{case}");
        }
        let mut h = HeaderMap::new();
        h.insert(&name, HeaderValue::from_bytes(b"v1.\xe9").unwrap());
        assert_eq!(token_from_header(&h, &name), None, "not ASCII");
        let max = "a".repeat(MAX_TOKEN_LEN);
        h.insert(&name, HeaderValue::from_str(&max).unwrap());
        assert_eq!(
            token_from_header(&h, &name),
            Some(max.as_str()),
            "at the bound"
        );
    }

    fn form(ct: &str) -> HeaderMap {
        headers(&[("content-type", ct)])
    }

    #[test]
    fn is_form_table() {
        let too_long = format!("multipart/form-data; boundary={}", "b".repeat(71));
        let cases = [
            ("application/x-www-form-urlencoded", true),
            ("Application/X-WWW-Form-Urlencoded; charset=UTF-8", true),
            ("multipart/form-data; boundary=abc", true),
            ("multipart/form-data; BOUNDARY=\"a b'()+_,-./:=?\"", true),
            ("multipart/form-data", false),
            ("multipart/form-data; boundary=", false),
            ("multipart/form-data; boundary=\"\"", false),
            ("multipart/form-data; boundary=\"ends with space \"", false),
            ("multipart/form-data; boundary=a; boundary=b", false),
            (too_long.as_str(), false),
            ("multipart/form-data; boundary=\"unterminated", false),
            ("multipart/mixed; boundary=abc", false),
            ("application/json", false),
            ("text/plain", false),
        ];
        for (ct, want) in cases {
            assert_eq!(is_form(&form(ct)), want, "{ct}");
        }
        assert!(!is_form(&HeaderMap::new()), "no Content-Type");
        let two = headers(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        assert!(!is_form(&two), "two Content-Type fields");
    }

    #[test]
    fn urlencoded_table() {
        let h = form("application/x-www-form-urlencoded");
        let cases: &[(&str, &[u8], Option<&str>)] = &[
            ("plain", b"_csrf=v1.abc", Some("v1.abc")),
            ("among others", b"a=1&_csrf=v1.abc&b=2", Some("v1.abc")),
            ("percent-encoding", b"_csrf=v1.a%2Fb%3D", Some("v1.a/b=")),
            ("plus is a space", b"_csrf=a+b", Some("a b")),
            ("encoded name", b"%5Fcsrf=v1.x", Some("v1.x")),
            ("absent", b"a=1&b=2", None),
            ("a similar name", b"_csrf_=x&csrf=y&x_csrf=z", None),
            ("empty value", b"_csrf=", None),
            ("no value", b"_csrf", None),
            ("repeated, same value", b"_csrf=x&_csrf=x", Some("x")),
            ("repeated, different values", b"_csrf=x&_csrf=y", None),
            ("empty body", b"", None),
        ];
        for (case, body, want) in cases {
            assert_eq!(form_token(&h, body, "_csrf").as_deref(), *want, "{case}");
        }
        let long = format!("_csrf={}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(form_token(&h, long.as_bytes(), "_csrf"), None, "too long");
        // Not a form: JSON is never read, whatever it holds.
        let json = form("application/json");
        assert_eq!(form_token(&json, b"_csrf=v1.abc", "_csrf"), None);
        assert_eq!(
            form_token(&HeaderMap::new(), b"_csrf=v1.abc", "_csrf"),
            None
        );
    }

    /// A multipart body from `(headers, content)` parts, CRLF throughout.
    fn multipart(boundary: &str, parts: &[(&str, &str)]) -> Vec<u8> {
        let mut b = String::new();
        for (head, content) in parts {
            b.push_str(&format!("--{boundary}\r\n{head}\r\n\r\n{content}\r\n"));
        }
        b.push_str(&format!("--{boundary}--\r\n"));
        b.into_bytes()
    }

    fn field(name: &str) -> String {
        format!("Content-Disposition: form-data; name=\"{name}\"")
    }

    #[test]
    fn multipart_table() {
        let b = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
        let h = form(&format!("multipart/form-data; boundary={b}"));
        let file = "Content-Disposition: form-data; name=\"upload\"; filename=\"a.txt\"\r\n\
                    Content-Type: text/plain";
        let csrf = field("_csrf");
        let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
            (
                "first part",
                multipart(b, &[(&csrf, "v1.tok"), (&field("a"), "1")]),
                Some("v1.tok"),
            ),
            (
                "middle part",
                multipart(
                    b,
                    &[(&field("a"), "1"), (&csrf, "v1.tok"), (&field("b"), "2")],
                ),
                Some("v1.tok"),
            ),
            (
                "last part",
                multipart(b, &[(&field("a"), "1"), (&csrf, "v1.tok")]),
                Some("v1.tok"),
            ),
            (
                "file parts around it",
                multipart(
                    b,
                    &[
                        (file, "hello\r\nworld"),
                        (&csrf, "v1.tok"),
                        (file, "\r\n\r\nbinary\r\n"),
                    ],
                ),
                Some("v1.tok"),
            ),
            (
                "the field name inside another part's content",
                multipart(
                    b,
                    &[
                        (
                            file,
                            "Content-Disposition: form-data; name=\"_csrf\"\r\n\r\nforged",
                        ),
                        (&field("a"), "name=\"_csrf\""),
                    ],
                ),
                None,
            ),
            (
                "a file part named like the field is not it",
                multipart(
                    b,
                    &[(
                        "Content-Disposition: form-data; name=\"_csrf\"; filename=\"t\"",
                        "v1.file",
                    )],
                ),
                None,
            ),
            (
                "a delimiter-like line in content, not our boundary",
                multipart(b, &[(file, "\r\n--other\r\n"), (&csrf, "v1.tok")]),
                Some("v1.tok"),
            ),
            (
                "other headers and case",
                multipart(
                    b,
                    &[(
                        "content-type: text/plain; charset=utf-8\r\n\
                         CONTENT-DISPOSITION: Form-Data ; Name=_csrf",
                        "v1.tok",
                    )],
                ),
                Some("v1.tok"),
            ),
            (
                "repeated, same value",
                multipart(b, &[(&csrf, "v1.tok"), (&csrf, "v1.tok")]),
                Some("v1.tok"),
            ),
            (
                "repeated, different values",
                multipart(b, &[(&csrf, "v1.tok"), (&csrf, "v1.other")]),
                None,
            ),
            ("absent", multipart(b, &[(&field("a"), "1")]), None),
            ("empty value", multipart(b, &[(&csrf, "")]), None),
            ("no parts", format!("--{b}--\r\n").into_bytes(), None),
            (
                "preamble and epilogue",
                [
                    b"preamble\r\n".as_slice(),
                    &multipart(b, &[(&csrf, "v1.tok")]),
                    b"epilogue",
                ]
                .concat(),
                Some("v1.tok"),
            ),
            (
                "transport padding after a delimiter",
                format!("--{b} \t\r\n{csrf}\r\n\r\nv1.tok\r\n--{b}--").into_bytes(),
                Some("v1.tok"),
            ),
            (
                "no closing delimiter",
                format!("--{b}\r\n{csrf}\r\n\r\nv1.tok\r\n").into_bytes(),
                None,
            ),
            (
                "bare LF line ends",
                format!("--{b}\n{csrf}\n\nv1.tok\n--{b}--\n").into_bytes(),
                None,
            ),
            (
                "no blank line after the headers",
                format!("--{b}\r\n{csrf}\r\nv1.tok\r\n--{b}--").into_bytes(),
                None,
            ),
            (
                "junk after a delimiter",
                format!("--{b}junk\r\n{csrf}\r\n\r\nv1.tok\r\n--{b}--").into_bytes(),
                None,
            ),
            (
                "header line without a colon",
                multipart(b, &[(&format!("{csrf}\r\nbroken"), "v1.tok")]),
                None,
            ),
            (
                "another boundary",
                multipart("other", &[(&csrf, "v1.tok")]),
                None,
            ),
            ("empty body", Vec::new(), None),
        ];
        for (case, body, want) in cases {
            assert_eq!(form_token(&h, &body, "_csrf").as_deref(), want, "{case}");
        }
    }

    #[test]
    fn multipart_odd_boundaries() {
        for (ct, boundary) in [
            (
                "multipart/form-data; boundary=\"a b'()+_,-./:=?\"",
                "a b'()+_,-./:=?",
            ),
            ("multipart/form-data;boundary=x", "x"),
            ("multipart/form-data; charset=utf-8; boundary=\"--\"", "--"),
            ("multipart/form-data; boundary=\"a\\bc\"", "abc"),
        ] {
            let h = form(ct);
            if !is_boundary(boundary) {
                assert!(!is_form(&h), "{ct}");
                continue;
            }
            let body = multipart(boundary, &[(&field("a"), "1"), (&field("_csrf"), "v1.tok")]);
            assert_eq!(
                form_token(&h, &body, "_csrf").as_deref(),
                Some("v1.tok"),
                "{ct}"
            );
        }
        // A boundary that prefixes a line in the content ends the part there: the body
        // is then malformed, never read past.
        let h = form("multipart/form-data; boundary=ab");
        let body = b"--ab\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n\r\n--abc\r\n--ab--";
        assert_eq!(form_token(&h, body, "f"), None);
    }

    #[test]
    fn multipart_is_bounded() {
        let b = "x";
        let h = form("multipart/form-data; boundary=x");
        let many: Vec<(String, &str)> = (0..=MAX_PARTS)
            .map(|i| (field(&format!("f{i}")), "1"))
            .collect();
        let csrf = field("_csrf");
        let mut parts: Vec<(&str, &str)> = vec![(csrf.as_str(), "t")];
        parts.extend(many.iter().map(|(h, c)| (h.as_str(), *c)));
        assert_eq!(
            form_token(&h, &multipart(b, &parts), "_csrf"),
            None,
            "too many parts"
        );
        parts.truncate(MAX_PARTS);
        assert_eq!(
            form_token(&h, &multipart(b, &parts), "_csrf").as_deref(),
            Some("t"),
            "at the bound"
        );
        let big_head = format!(
            "{}\r\nX-Pad: {}",
            field("_csrf"),
            "p".repeat(MAX_PART_HEADER_BYTES)
        );
        assert_eq!(
            form_token(&h, &multipart(b, &[(&big_head, "t")]), "_csrf"),
            None,
            "oversized part headers"
        );
    }
}
