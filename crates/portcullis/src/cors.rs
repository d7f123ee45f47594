//! CORS by an allow-list of exact origins.
//!
//! An origin is `scheme://host[:port]`. Origins compare exactly once the scheme and host
//! are ASCII-lowercased and a default port (`80` for `http` and `ws`, `443` for `https`
//! and `wss`) is dropped: `https://A.example:443` is `https://a.example`, and
//! `https://a.example:8443` is another origin. Rules:
//!
//! - configured entries must be origins: no path, query, fragment or trailing `/`, no user
//!   name, no wildcard subdomain; anything else is a config error naming the entry;
//! - `"*"` allows any origin, but only without credentials (a config error otherwise);
//!   even then the request's own origin is echoed, never `*`;
//! - the `null` origin (sandboxed frames, `file:` pages, cross-origin redirects) is never
//!   allowed: anyone can produce it, so it proves nothing;
//! - a preflight passes when its origin is allowed, its `Access-Control-Request-Method` is
//!   listed (the simple methods `GET`, `HEAD` and `POST` too: nothing is implied; methods
//!   compare case-sensitively, as in Fetch), and every name in its
//!   `Access-Control-Request-Headers` is listed (compared ignoring ASCII case);
//! - on an actual response, with CORS enabled: always `Vary: Origin`; the upstream's own
//!   `Access-Control-*` headers are removed (the gateway owns CORS); for an allowed origin,
//!   `Access-Control-Allow-Origin` echoes it byte for byte, with
//!   `Access-Control-Allow-Credentials: true` and `Access-Control-Expose-Headers` when
//!   configured.
//!
//! A refused preflight gets no CORS header at all, so the browser blocks the request; the
//! gateway answers it with a 403 problem. To give that 403 its `Vary: Origin`, call
//! [`Cors::apply`] with an empty request header map.
//!
//! # Security
//!
//! CORS loosens the same-origin policy; it protects nothing by itself. A server must still
//! authenticate and check CSRF on every request: a refused preflight stops a browser, not
//! `curl`. `"*"` suits public, unauthenticated APIs only.
//!
//! ```
//! use std::time::Duration;
//! use http::{HeaderMap, HeaderValue, Method};
//! use portcullis::cors::{Cors, CorsConfig, Preflight};
//!
//! let cors = Cors::new(CorsConfig {
//!     allowed_origins: vec!["https://app.example".into()],
//!     allowed_methods: vec![Method::GET, Method::POST],
//!     allowed_headers: vec![http::header::CONTENT_TYPE],
//!     exposed_headers: vec![],
//!     allow_credentials: true,
//!     max_age: Duration::from_secs(600),
//! })
//! .unwrap();
//!
//! let mut req = HeaderMap::new();
//! req.insert("origin", HeaderValue::from_static("https://app.example"));
//! req.insert("access-control-request-method", HeaderValue::from_static("POST"));
//! req.insert("access-control-request-headers", HeaderValue::from_static("content-type"));
//! let Preflight::Allowed(answer) = cors.preflight(&req) else { panic!() };
//! assert_eq!(answer["access-control-allow-origin"], "https://app.example");
//! assert_eq!(answer["access-control-max-age"], "600");
//!
//! let mut res = HeaderMap::new();
//! cors.apply(&req, &mut res);
//! assert_eq!(res["access-control-allow-credentials"], "true");
//! assert_eq!(res["vary"], "Origin");
//! ```

use std::time::Duration;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};

/// `cors.*` as the gateway reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example`), or `"*"`; empty: CORS off.
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may ask for.
    pub allowed_methods: Vec<Method>,
    /// Request headers a preflight may ask for.
    pub allowed_headers: Vec<HeaderName>,
    /// Response headers scripts may read (`Access-Control-Expose-Headers`).
    pub exposed_headers: Vec<HeaderName>,
    /// Whether cookies and HTTP authentication may ride on cross-origin requests.
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer.
    pub max_age: Duration,
}

/// `cors.max_age` by default: long enough to spare most preflights, short enough that a
/// tightened policy reaches browsers within minutes (Chromium caps it at 2 h anyway).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

impl Default for CorsConfig {
    /// No origins (CORS off), with DESIGN §3's methods, headers and max age.
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: vec![
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ],
            allowed_headers: [
                "authorization",
                "content-type",
                "x-csrf-token",
                "x-request-id",
            ]
            .into_iter()
            .map(HeaderName::from_static)
            .collect(),
            exposed_headers: Vec::new(),
            allow_credentials: false,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// A `cors` setting that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorsConfigError {
    /// `"*"` together with credentials.
    #[error(
        "\"*\" in cors.allowed_origins cannot be used with cors.allow_credentials = true \
         (browsers refuse it, and echoing every origin would let any site read credentialed \
         responses): list the exact origins in cors.allowed_origins, or set \
         cors.allow_credentials = false"
    )]
    WildcardWithCredentials,
    /// The `null` origin.
    #[error(
        "{entry:?} in cors.allowed_origins: the null origin is never allowed, since sandboxed \
         frames, file: pages and redirects all send it; remove the entry"
    )]
    NullOrigin {
        /// The entry as configured.
        entry: String,
    },
    /// A wildcard other than a lone `"*"`.
    #[error(
        "{entry:?} in cors.allowed_origins: wildcards such as \"https://*.example.com\" are \
         not supported; list each origin exactly, or use \"*\" alone for any origin"
    )]
    WildcardSubdomain {
        /// The entry as configured.
        entry: String,
    },
    /// No `scheme://`.
    #[error(
        "{entry:?} in cors.allowed_origins has no scheme: write it as {suggestion:?} \
         (or with http:// if that is what browsers load)"
    )]
    MissingScheme {
        /// The entry as configured.
        entry: String,
        /// The entry with `https://` in front.
        suggestion: String,
    },
    /// A path, query, fragment or trailing `/`.
    #[error(
        "{entry:?} in cors.allowed_origins is not an origin: an origin has no path, query or \
         fragment, not even a trailing \"/\"; write {suggestion:?}"
    )]
    NotAnOrigin {
        /// The entry as configured.
        entry: String,
        /// The entry cut down to its origin.
        suggestion: String,
    },
    /// A user name or password.
    #[error(
        "{entry:?} in cors.allowed_origins has a user name: an origin has none; \
         write {suggestion:?}"
    )]
    UserInfo {
        /// The entry as configured.
        entry: String,
        /// The entry without its user information.
        suggestion: String,
    },
    /// Anything else wrong in an entry.
    #[error(
        "{entry:?} in cors.allowed_origins is not an origin: {reason}; write it as \
         scheme://host or scheme://host:port, like \"https://app.example\""
    )]
    Malformed {
        /// The entry as configured.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `"*"` among header names.
    #[error("\"*\" in {key} is not supported: list the header names, like \"content-type\"")]
    WildcardHeader {
        /// `cors.allowed_headers` or `cors.exposed_headers`.
        key: &'static str,
    },
}

/// What a preflight gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preflight {
    /// answer 204 with these headers
    Allowed(HeaderMap),
    /// answer without any CORS header (the gateway sends a 403 problem); the reason is
    /// for logs, stable, and never sent to the client
    Refused(&'static str),
}

/// A CORS policy ready to apply, with its header values built once.
#[derive(Clone, Debug)]
pub struct Cors {
    origins: Vec<Origin>,
    any_origin: bool,
    methods: Vec<Method>,
    headers: Vec<HeaderName>,
    credentials: bool,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
}

/// The `Vary` of a preflight's answer: the answer depends on all three.
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// CORS response headers the upstream may send and the gateway replaces or removes.
const OWNED: [HeaderName; 7] = [
    ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE,
    HeaderName::from_static("access-control-allow-private-network"),
];

impl Cors {
    /// Checks `cfg` and builds the policy.
    pub fn new(cfg: CorsConfig) -> Result<Self, CorsConfigError> {
        let mut origins = Vec::with_capacity(cfg.allowed_origins.len());
        let mut any_origin = false;
        for entry in &cfg.allowed_origins {
            if entry == "*" {
                any_origin = true;
                continue;
            }
            origins.push(Origin::configured(entry)?);
        }
        if any_origin && cfg.allow_credentials {
            return Err(CorsConfigError::WildcardWithCredentials);
        }
        for (key, names) in [
            ("cors.allowed_headers", &cfg.allowed_headers),
            ("cors.exposed_headers", &cfg.exposed_headers),
        ] {
            if names.iter().any(|n| n.as_str() == "*") {
                return Err(CorsConfigError::WildcardHeader { key });
            }
        }
        let allow_methods = join(cfg.allowed_methods.iter().map(Method::as_str));
        let allow_headers = join(cfg.allowed_headers.iter().map(HeaderName::as_str));
        let expose_headers = join(cfg.exposed_headers.iter().map(HeaderName::as_str));
        let max_age = HeaderValue::from(cfg.max_age.as_secs());
        Ok(Self {
            origins,
            any_origin,
            methods: cfg.allowed_methods,
            headers: cfg.allowed_headers,
            credentials: cfg.allow_credentials,
            allow_methods,
            allow_headers,
            expose_headers,
            max_age,
        })
    }

    /// Whether any origin is allowed; false when `allowed_origins` is empty, and then
    /// [`apply`](Self::apply) changes nothing.
    pub fn enabled(&self) -> bool {
        self.any_origin || !self.origins.is_empty()
    }

    /// Whether `req` is a CORS preflight: `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`.
    pub fn is_preflight<B>(req: &Request<B>) -> bool {
        req.method() == Method::OPTIONS
            && req.headers().contains_key(ORIGIN)
            && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The answer to a preflight with these request headers.
    pub fn preflight(&self, request_headers: &HeaderMap) -> Preflight {
        if !self.enabled() {
            return Preflight::Refused("cors is not enabled");
        }
        let origin = match self.allowed_origin(request_headers) {
            Ok(origin) => origin,
            Err(reason) => return Preflight::Refused(reason),
        };
        let mut methods = request_headers
            .get_all(ACCESS_CONTROL_REQUEST_METHOD)
            .iter();
        let (Some(method), None) = (methods.next(), methods.next()) else {
            return Preflight::Refused("not exactly one access-control-request-method");
        };
        if !self
            .methods
            .iter()
            .any(|m| m.as_str().as_bytes() == method.as_bytes())
        {
            return Preflight::Refused("method not allowed");
        }
        for value in request_headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            let Ok(list) = value.to_str() else {
                return Preflight::Refused("malformed access-control-request-headers");
            };
            for name in list.split(',').map(|n| n.trim_matches([' ', '\t'])) {
                if name.is_empty() {
                    continue;
                }
                if !self
                    .headers
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(name))
                {
                    return Preflight::Refused("header not allowed");
                }
            }
        }

        let mut answer = HeaderMap::with_capacity(7);
        answer.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if let Some(methods) = &self.allow_methods {
            answer.insert(ACCESS_CONTROL_ALLOW_METHODS, methods.clone());
        }
        if let Some(headers) = &self.allow_headers {
            answer.insert(ACCESS_CONTROL_ALLOW_HEADERS, headers.clone());
        }
        if self.credentials {
            answer.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        answer.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        answer.insert(VARY, HeaderValue::from_static(PREFLIGHT_VARY));
        Preflight::Allowed(answer)
    }

    /// Adds CORS headers to an actual (non-preflight) response: always `Vary: Origin` when
    /// enabled (appended to an existing Vary, not duplicated); for an allowed origin,
    /// `Access-Control-Allow-Origin` echoing the origin exactly (never `*`),
    /// `Access-Control-Allow-Credentials: true` when configured,
    /// `Access-Control-Expose-Headers` when configured; for a disallowed or missing origin,
    /// no CORS headers (and any upstream Access-Control-* headers removed, since the
    /// gateway owns CORS when enabled).
    pub fn apply(&self, request_headers: &HeaderMap, response_headers: &mut HeaderMap) {
        if !self.enabled() {
            return;
        }
        remove_upstream_cors(response_headers);
        add_vary_origin(response_headers);
        let Ok(origin) = self.allowed_origin(request_headers) else {
            return;
        };
        response_headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            response_headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(exposed) = &self.expose_headers {
            response_headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
        }
    }

    /// The request's `Origin` if it is allowed, else why not.
    fn allowed_origin<'h>(
        &self,
        request_headers: &'h HeaderMap,
    ) -> Result<&'h HeaderValue, &'static str> {
        let mut values = request_headers.get_all(ORIGIN).iter();
        let value = match (values.next(), values.next()) {
            (Some(value), None) => value,
            (None, _) => return Err("no origin"),
            (Some(_), Some(_)) => return Err("more than one origin"),
        };
        let text = value.to_str().map_err(|_| "malformed origin")?;
        if text.eq_ignore_ascii_case("null") {
            return Err("null origin");
        }
        let origin = parse(text).map_err(|_| "malformed origin")?;
        if self.any_origin || self.origins.iter().any(|o| o.matches(&origin)) {
            Ok(value)
        } else {
            Err("origin not allowed")
        }
    }
}

/// Removes every upstream `Access-Control-*` response header. Allocates only when there are
/// unusual ones to remove.
fn remove_upstream_cors(headers: &mut HeaderMap) {
    for name in &OWNED {
        headers.remove(name);
    }
    let is_cors = |n: &HeaderName| n.as_str().starts_with("access-control-");
    if headers.keys().any(is_cors) {
        let names: Vec<HeaderName> = headers.keys().filter(|n| is_cors(n)).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Adds `Origin` to `Vary` unless it is there already (or `Vary: *` covers it).
fn add_vary_origin(headers: &mut HeaderMap) {
    let mut existing = false;
    for value in headers.get_all(VARY) {
        existing = true;
        let items = value.as_bytes().split(|&b| b == b',');
        if items
            .map(|i| i.trim_ascii())
            .any(|i| i == b"*" || i.eq_ignore_ascii_case(b"origin"))
        {
            return;
        }
    }
    if !existing {
        headers.insert(VARY, HeaderValue::from_static("Origin"));
        return;
    }
    // One field line, so readers that look at the first `Vary` only still see it.
    let mut joined = Vec::new();
    for value in headers.get_all(VARY) {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            joined.extend_from_slice(value);
            joined.extend_from_slice(b", ");
        }
    }
    joined.extend_from_slice(b"Origin");
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(VARY, value);
    }
}

/// `items` joined with `", "`; `None` when there are none.
fn join<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let joined = items.collect::<Vec<_>>().join(", ");
    if joined.is_empty() {
        return None;
    }
    Some(HeaderValue::from_str(&joined).expect("tokens are valid in a header value"))
}

/// A configured origin: scheme and host lowercased, default port dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn configured(entry: &str) -> Result<Self, CorsConfigError> {
        let err = |e: ParseError| match e {
            ParseError::Null => CorsConfigError::NullOrigin {
                entry: entry.to_owned(),
            },
            ParseError::Wildcard => CorsConfigError::WildcardSubdomain {
                entry: entry.to_owned(),
            },
            ParseError::MissingScheme => CorsConfigError::MissingScheme {
                entry: entry.to_owned(),
                suggestion: format!(
                    "https://{}",
                    entry.split(['/', '?', '#']).next().unwrap_or_default()
                ),
            },
            ParseError::NotAnOrigin(cut) => CorsConfigError::NotAnOrigin {
                entry: entry.to_owned(),
                suggestion: entry[..cut].to_owned(),
            },
            ParseError::UserInfo(at) => CorsConfigError::UserInfo {
                entry: entry.to_owned(),
                suggestion: format!(
                    "{}{}",
                    &entry[..entry.find("://").map_or(0, |i| i + 3)],
                    &entry[at + 1..]
                ),
            },
            ParseError::Malformed(reason) => CorsConfigError::Malformed {
                entry: entry.to_owned(),
                reason,
            },
        };
        if entry.eq_ignore_ascii_case("null") {
            return Err(err(ParseError::Null));
        }
        let p = parse(entry).map_err(err)?;
        Ok(Self {
            scheme: p.scheme.to_ascii_lowercase(),
            host: p.host.to_ascii_lowercase(),
            port: p.port,
        })
    }

    fn matches(&self, o: &Parsed<'_>) -> bool {
        self.port == o.port
            && self.scheme.eq_ignore_ascii_case(o.scheme)
            && self.host.eq_ignore_ascii_case(o.host)
    }
}

/// An origin as written: `port` is `None` when absent or the scheme's default.
#[derive(Debug, PartialEq, Eq)]
struct Parsed<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    Null,
    Wildcard,
    MissingScheme,
    /// A path, query or fragment starts at this byte.
    NotAnOrigin(usize),
    /// The user information ends with the `@` at this byte.
    UserInfo(usize),
    Malformed(&'static str),
}

/// Parses `scheme://host[:port]` without allocating.
fn parse(s: &str) -> Result<Parsed<'_>, ParseError> {
    if s.contains('*') {
        return Err(ParseError::Wildcard);
    }
    let Some(sep) = s.find("://") else {
        return Err(if s.is_empty() {
            ParseError::Malformed("it is empty")
        } else if s.contains(':') {
            ParseError::Malformed("it has no \"://\" after the scheme")
        } else {
            ParseError::MissingScheme
        });
    };
    let scheme = &s[..sep];
    let authority_start = sep + 3;
    let authority = &s[authority_start..];
    let valid_scheme = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !valid_scheme {
        return Err(ParseError::Malformed("the scheme is not valid"));
    }
    if let Some(i) = authority.find(['/', '?', '#']) {
        return Err(ParseError::NotAnOrigin(authority_start + i));
    }
    if let Some(i) = authority.rfind('@') {
        return Err(ParseError::UserInfo(authority_start + i));
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err(ParseError::Malformed("the IPv6 address has no closing ']'"));
        };
        let inside = &rest[..end];
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return Err(ParseError::Malformed("the IPv6 address is not valid"));
        }
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(ParseError::Malformed("text follows the IPv6 address")),
        };
        (&authority[..end + 2], port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(ParseError::Malformed("the host is empty"));
    }
    if !host.is_ascii() {
        return Err(ParseError::Malformed(
            "the host is not ASCII (write an international name in its xn-- form)",
        ));
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(ParseError::Malformed(
            "the host has characters a host cannot have",
        ));
    }
    let port = match port {
        None => None,
        Some(p) if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(ParseError::Malformed(
                "the port is not a number from 0 to 65535",
            ));
        }
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| ParseError::Malformed("the port is not a number from 0 to 65535"))?,
        ),
    };
    let is = |name: &str| scheme.eq_ignore_ascii_case(name);
    let default = if is("http") || is("ws") {
        Some(80)
    } else if is("https") || is("wss") {
        Some(443)
    } else {
        None
    };
    Ok(Parsed {
        scheme,
        host,
        port: port.filter(|&p| Some(p) != default),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (scheme, host, port) of a configured origin.
    type Canonical = (String, String, Option<u16>);

    /// Request header fields, in order.
    type Fields = &'static [(&'static str, &'static str)];

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    fn config(origins: &[&str], credentials: bool) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            allowed_methods: vec![Method::GET, Method::POST],
            allowed_headers: vec![
                HeaderName::from_static("content-type"),
                HeaderName::from_static("x-request-id"),
            ],
            exposed_headers: vec![],
            allow_credentials: credentials,
            max_age: Duration::from_secs(600),
        }
    }

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(config(origins, credentials)).unwrap()
    }

    /// A header map with these fields, repeated names appended.
    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in fields {
            m.append(*n, hv(v));
        }
        m
    }

    fn all(m: &HeaderMap, name: &str) -> Vec<String> {
        m.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    fn cors_names(m: &HeaderMap) -> Vec<&str> {
        m.keys()
            .map(HeaderName::as_str)
            .filter(|n| n.starts_with("access-control-"))
            .collect()
    }

    #[test]
    fn configured_origins_table() {
        use CorsConfigError::*;
        let e = |s: &str| s.to_owned();
        let ok = |scheme: &str, host: &str, port: Option<u16>| Ok((e(scheme), e(host), port));
        let bad = |entry: &str, reason: &'static str| {
            Err(Malformed {
                entry: e(entry),
                reason,
            })
        };
        const PORT: &str = "the port is not a number from 0 to 65535";
        const NO_SEP: &str = "it has no \"://\" after the scheme";
        const SCHEME: &str = "the scheme is not valid";
        #[rustfmt::skip]
        let cases: &[(&str, &str, Result<Canonical, CorsConfigError>)] = &[
            ("plain", "https://a.example", ok("https", "a.example", None)),
            ("case", "HTTPS://A.Example", ok("https", "a.example", None)),
            ("https default port", "https://a.example:443", ok("https", "a.example", None)),
            ("http default port", "http://a.example:80", ok("http", "a.example", None)),
            ("80 is not https's default", "https://a.example:80", ok("https", "a.example", Some(80))),
            ("other port", "https://a.example:8443", ok("https", "a.example", Some(8443))),
            ("IPv4", "http://127.0.0.1:3000", ok("http", "127.0.0.1", Some(3000))),
            ("IPv6", "http://[::1]:8080", ok("http", "[::1]", Some(8080))),
            ("IPv6, default port", "https://[2001:DB8::1]:443", ok("https", "[2001:db8::1]", None)),
            ("other scheme", "chrome-extension://abcdefgh", ok("chrome-extension", "abcdefgh", None)),
            ("null", "null", Err(NullOrigin { entry: e("null") })),
            ("NULL", "NULL", Err(NullOrigin { entry: e("NULL") })),
            ("trailing slash", "https://a.example/",
                Err(NotAnOrigin { entry: e("https://a.example/"), suggestion: e("https://a.example") })),
            ("path", "https://a.example:8443/app",
                Err(NotAnOrigin { entry: e("https://a.example:8443/app"), suggestion: e("https://a.example:8443") })),
            ("query", "https://a.example?x=1",
                Err(NotAnOrigin { entry: e("https://a.example?x=1"), suggestion: e("https://a.example") })),
            ("fragment", "https://a.example#top",
                Err(NotAnOrigin { entry: e("https://a.example#top"), suggestion: e("https://a.example") })),
            ("userinfo", "https://user:pw@a.example",
                Err(UserInfo { entry: e("https://user:pw@a.example"), suggestion: e("https://a.example") })),
            ("wildcard subdomain", "https://*.a.example", Err(WildcardSubdomain { entry: e("https://*.a.example") })),
            ("wildcard, no scheme", "*.a.example", Err(WildcardSubdomain { entry: e("*.a.example") })),
            ("no scheme", "a.example",
                Err(MissingScheme { entry: e("a.example"), suggestion: e("https://a.example") })),
            ("no scheme, trailing slash", "a.example/",
                Err(MissingScheme { entry: e("a.example/"), suggestion: e("https://a.example") })),
            ("empty", "", bad("", "it is empty")),
            ("one slash", "https:/a.example", bad("https:/a.example", NO_SEP)),
            ("no scheme, with port", "a.example:8443", bad("a.example:8443", NO_SEP)),
            ("empty host", "https://", bad("https://", "the host is empty")),
            ("empty port", "https://a.example:", bad("https://a.example:", PORT)),
            ("port too large", "https://a.example:65536", bad("https://a.example:65536", PORT)),
            ("signed port", "https://a.example:+443", bad("https://a.example:+443", PORT)),
            ("leading space", " https://a.example", bad(" https://a.example", SCHEME)),
            ("scheme starts with a digit", "1http://a.example", bad("1http://a.example", SCHEME)),
            ("space in host", "https://a .example",
                bad("https://a .example", "the host has characters a host cannot have")),
            ("non-ASCII host", "https://bücher.example",
                bad("https://bücher.example", "the host is not ASCII (write an international name in its xn-- form)")),
            ("unclosed IPv6", "http://[::1:8080", bad("http://[::1:8080", "the IPv6 address has no closing ']'")),
            ("bad IPv6", "http://[::g]", bad("http://[::g]", "the IPv6 address is not valid")),
            ("text after IPv6", "http://[::1]x", bad("http://[::1]x", "text follows the IPv6 address")),
        ];
        for (name, entry, want) in cases {
            let got = Cors::new(config(&[entry], false)).map(|cors| {
                let o = &cors.origins[0];
                (o.scheme.clone(), o.host.clone(), o.port)
            });
            assert_eq!(&got, want, "{name}");
            if let Err(err) = want {
                let msg = err.to_string();
                assert!(
                    msg.contains(&format!("{entry:?}")),
                    "{name}: names the entry: {msg}"
                );
                assert!(
                    ["remove", "write", "list each origin"]
                        .iter()
                        .any(|fix| msg.contains(fix)),
                    "{name}: says how to fix it: {msg}"
                );
            }
        }
    }

    #[test]
    fn the_first_bad_entry_is_reported() {
        let err = Cors::new(config(
            &["https://ok.example", "https://bad.example/", "null"],
            false,
        ))
        .unwrap_err();
        assert!(matches!(err, CorsConfigError::NotAnOrigin { .. }), "{err}");
    }

    #[test]
    fn wildcard_table() {
        struct Case {
            name: &'static str,
            origins: &'static [&'static str],
            credentials: bool,
            ok: bool,
        }
        let cases = [
            Case {
                name: "alone, no credentials",
                origins: &["*"],
                credentials: false,
                ok: true,
            },
            Case {
                name: "with others, no credentials",
                origins: &["https://a.example", "*"],
                credentials: false,
                ok: true,
            },
            Case {
                name: "alone, credentials",
                origins: &["*"],
                credentials: true,
                ok: false,
            },
            Case {
                name: "with others, credentials",
                origins: &["https://a.example", "*"],
                credentials: true,
                ok: false,
            },
            Case {
                name: "exact origins, credentials",
                origins: &["https://a.example"],
                credentials: true,
                ok: true,
            },
        ];
        for c in cases {
            match Cors::new(config(c.origins, c.credentials)) {
                Ok(cors) => {
                    assert!(c.ok, "{}", c.name);
                    assert!(cors.enabled(), "{}", c.name);
                }
                Err(err) => {
                    assert!(!c.ok, "{}: {err}", c.name);
                    assert_eq!(err, CorsConfigError::WildcardWithCredentials, "{}", c.name);
                    let msg = err.to_string();
                    assert!(msg.contains("cors.allow_credentials"), "{msg}");
                    assert!(msg.contains("cors.allowed_origins"), "{msg}");
                }
            }
        }
    }

    #[test]
    fn wildcard_header_names_are_refused() {
        for (key, allowed, exposed) in [
            (
                "cors.allowed_headers",
                vec![HeaderName::from_static("*")],
                vec![],
            ),
            (
                "cors.exposed_headers",
                vec![],
                vec![HeaderName::from_static("*")],
            ),
        ] {
            let err = Cors::new(CorsConfig {
                allowed_headers: allowed,
                exposed_headers: exposed,
                ..config(&["https://a.example"], false)
            })
            .unwrap_err();
            assert_eq!(err, CorsConfigError::WildcardHeader { key });
            assert!(err.to_string().contains(key));
        }
    }

    #[test]
    fn actual_request_origin_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &[&str], bool)] = &[
            ("exact", &["https://a.example"], true),
            ("host case", &["https://A.EXAMPLE"], true),
            ("scheme case", &["HTTPS://a.example"], true),
            ("default port", &["https://a.example:443"], true),
            ("configured port", &["http://localhost:3000"], true),
            ("other port", &["https://a.example:8443"], false),
            ("configured port missing", &["http://localhost"], false),
            ("other scheme", &["http://a.example"], false),
            ("subdomain", &["https://b.a.example"], false),
            ("suffix", &["https://a.example.evil"], false),
            ("prefix", &["https://evila.example"], false),
            ("null", &["null"], false),
            ("NULL", &["NULL"], false),
            ("trailing slash", &["https://a.example/"], false),
            ("userinfo", &["https://x@a.example"], false),
            ("empty", &[""], false),
            ("missing", &[], false),
            ("two origins", &["https://a.example", "https://a.example"], false),
        ];
        for credentials in [false, true] {
            let cors = cors(&["https://a.example", "http://localhost:3000"], credentials);
            for &(name, origins, allowed) in cases {
                let fields: Vec<_> = origins.iter().map(|o| ("origin", *o)).collect();
                let mut res = HeaderMap::new();
                cors.apply(&map(&fields), &mut res);
                assert_eq!(all(&res, "vary"), ["Origin"], "{name}");
                if allowed {
                    assert_eq!(
                        all(&res, "access-control-allow-origin"),
                        [origins[0]],
                        "{name}: echoed exactly"
                    );
                    let want: &[&str] = if credentials { &["true"] } else { &[] };
                    assert_eq!(
                        all(&res, "access-control-allow-credentials"),
                        want,
                        "{name}"
                    );
                } else {
                    assert!(cors_names(&res).is_empty(), "{name}: {res:?}");
                }
            }
        }
    }

    #[test]
    fn wildcard_echoes_the_origin() {
        let cors = cors(&["*"], false);
        for (origin, allowed) in [
            ("https://anything.example", true),
            ("http://localhost:8080", true),
            ("HTTPS://X.EXAMPLE:443", true),
            ("null", false),
            ("https://a.example/", false),
            ("not an origin", false),
        ] {
            let mut res = HeaderMap::new();
            cors.apply(&map(&[("origin", origin)]), &mut res);
            assert_eq!(all(&res, "vary"), ["Origin"]);
            if allowed {
                assert_eq!(all(&res, "access-control-allow-origin"), [origin]);
                assert!(!res.contains_key("access-control-allow-credentials"));
            } else {
                assert!(cors_names(&res).is_empty(), "{origin}");
            }
        }
    }

    #[test]
    fn expose_headers_when_configured() {
        let mut cfg = config(&["https://a.example"], false);
        let plain = Cors::new(cfg.clone()).unwrap();
        cfg.exposed_headers = vec![
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("ratelimit"),
        ];
        let exposing = Cors::new(cfg).unwrap();
        let req = map(&[("origin", "https://a.example")]);
        let mut res = HeaderMap::new();
        plain.apply(&req, &mut res);
        assert!(!res.contains_key("access-control-expose-headers"));
        let mut res = HeaderMap::new();
        exposing.apply(&req, &mut res);
        assert_eq!(
            all(&res, "access-control-expose-headers"),
            ["x-request-id, ratelimit"]
        );
        let mut res = HeaderMap::new();
        exposing.apply(&map(&[("origin", "https://b.example")]), &mut res);
        assert!(!res.contains_key("access-control-expose-headers"));
    }

    #[test]
    fn vary_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("none", &[], &["Origin"]),
            ("appended", &["Accept-Encoding"], &["Accept-Encoding, Origin"]),
            ("already there", &["Accept-Encoding, Origin"], &["Accept-Encoding, Origin"]),
            ("already there, other case", &["origin"], &["origin"]),
            ("already there, own line", &["Accept", "Origin"], &["Accept", "Origin"]),
            ("star covers it", &["*"], &["*"]),
            ("several lines become one", &["Accept", "Accept-Encoding"], &["Accept, Accept-Encoding, Origin"]),
            ("empty value", &[""], &["Origin"]),
            ("a longer name is another name", &["X-Origin-Hint"], &["X-Origin-Hint, Origin"]),
        ];
        let cors = cors(&["https://a.example"], false);
        for &(name, upstream, want) in cases {
            for origin in ["https://a.example", "https://b.example"] {
                let fields: Vec<_> = upstream.iter().map(|v| ("vary", *v)).collect();
                let mut res = map(&fields);
                cors.apply(&map(&[("origin", origin)]), &mut res);
                assert_eq!(all(&res, "vary"), want, "{name} {origin}");
            }
        }
    }

    #[test]
    fn upstream_cors_headers_are_replaced_or_removed() {
        let upstream = || {
            map(&[
                ("access-control-allow-origin", "*"),
                ("access-control-allow-credentials", "true"),
                ("access-control-allow-methods", "*"),
                ("access-control-allow-headers", "*"),
                ("access-control-expose-headers", "x-secret"),
                ("access-control-max-age", "86400"),
                ("access-control-allow-private-network", "true"),
                ("access-control-something-new", "1"),
                ("content-type", "application/json"),
            ])
        };
        let cors = cors(&["https://a.example"], false);
        for (origin, echoed) in [
            (Some("https://a.example"), true),
            (Some("https://b.example"), false),
            (Some("null"), false),
            (None, false),
        ] {
            let req = origin.map_or_else(HeaderMap::new, |o| map(&[("origin", o)]));
            let mut res = upstream();
            cors.apply(&req, &mut res);
            assert_eq!(res["content-type"], "application/json");
            if echoed {
                assert_eq!(
                    cors_names(&res),
                    ["access-control-allow-origin"],
                    "{origin:?}"
                );
                assert_eq!(all(&res, "access-control-allow-origin"), [origin.unwrap()]);
            } else {
                assert!(cors_names(&res).is_empty(), "{origin:?}: {res:?}");
            }
        }
    }

    #[test]
    fn disabled_changes_nothing() {
        let cors = cors(&[], true);
        assert!(!cors.enabled());
        let req = map(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "GET"),
        ]);
        let mut res = map(&[("access-control-allow-origin", "*"), ("vary", "Accept")]);
        let before = res.clone();
        cors.apply(&req, &mut res);
        assert_eq!(res, before);
        assert_eq!(
            cors.preflight(&req),
            Preflight::Refused("cors is not enabled")
        );
    }

    #[test]
    fn preflight_table() {
        const O: (&str, &str) = ("origin", "https://a.example");
        const POST: (&str, &str) = ("access-control-request-method", "POST");
        const ACRM: &str = "access-control-request-method";
        const ACRH: &str = "access-control-request-headers";
        #[rustfmt::skip]
        let cases: &[(&str, Fields, Result<(), &str>)] = &[
            ("method only", &[O, POST], Ok(())),
            ("method and headers", &[O, POST, (ACRH, "content-type,x-request-id")], Ok(())),
            ("headers in any case, spaces and tabs", &[O, POST, (ACRH, " Content-Type ,\tX-Request-ID ")], Ok(())),
            ("headers over several lines", &[O, POST, (ACRH, "content-type"), (ACRH, "x-request-id")], Ok(())),
            ("empty headers list", &[O, POST, (ACRH, "")], Ok(())),
            ("empty items skipped", &[O, POST, (ACRH, "content-type,,")], Ok(())),
            ("origin, default port", &[("origin", "https://a.example:443"), POST], Ok(())),
            ("origin, case", &[("origin", "https://A.Example"), POST], Ok(())),
            ("listed simple method", &[O, (ACRM, "GET")], Ok(())),
            ("unlisted method", &[O, (ACRM, "PUT")], Err("method not allowed")),
            ("unlisted simple method", &[O, (ACRM, "HEAD")], Err("method not allowed")),
            ("method case matters", &[O, (ACRM, "post")], Err("method not allowed")),
            ("empty method", &[O, (ACRM, "")], Err("method not allowed")),
            ("two methods", &[O, POST, POST], Err("not exactly one access-control-request-method")),
            ("no method", &[O], Err("not exactly one access-control-request-method")),
            ("unlisted header", &[O, POST, (ACRH, "content-type,x-api-key")], Err("header not allowed")),
            ("unlisted header, own line", &[O, POST, (ACRH, "content-type"), (ACRH, "authorization")], Err("header not allowed")),
            ("prefix of a listed header", &[O, POST, (ACRH, "content")], Err("header not allowed")),
            ("no origin", &[POST], Err("no origin")),
            ("null origin", &[("origin", "null"), POST], Err("null origin")),
            ("two origins", &[O, O, POST], Err("more than one origin")),
            ("malformed origin", &[("origin", "https://a.example/"), POST], Err("malformed origin")),
            ("other origin", &[("origin", "https://b.example"), POST], Err("origin not allowed")),
            ("other port", &[("origin", "https://a.example:8443"), POST], Err("origin not allowed")),
        ];
        for credentials in [false, true] {
            let cors = cors(&["https://a.example"], credentials);
            for &(name, request, want) in cases {
                match (cors.preflight(&map(request)), want) {
                    (Preflight::Allowed(h), Ok(())) => {
                        let origin = request.iter().find(|(n, _)| *n == "origin").unwrap().1;
                        assert_eq!(all(&h, "access-control-allow-origin"), [origin], "{name}");
                        let has_credentials = h.contains_key("access-control-allow-credentials");
                        assert_eq!(has_credentials, credentials, "{name}");
                    }
                    (Preflight::Refused(got), Err(want)) => assert_eq!(got, want, "{name}"),
                    (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn an_allowed_preflight_has_exactly_these_headers() {
        for credentials in [false, true] {
            let cors = cors(&["https://a.example"], credentials);
            let Preflight::Allowed(h) = cors.preflight(&map(&[
                ("origin", "https://A.example:443"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ])) else {
                panic!("refused")
            };
            let mut got: Vec<_> = h
                .iter()
                .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
                .collect();
            got.sort();
            let mut want = vec![
                ("access-control-allow-headers", "content-type, x-request-id"),
                ("access-control-allow-methods", "GET, POST"),
                ("access-control-allow-origin", "https://A.example:443"),
                ("access-control-max-age", "600"),
                (
                    "vary",
                    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                ),
            ];
            if credentials {
                want.push(("access-control-allow-credentials", "true"));
            }
            want.sort();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn wildcard_preflight_echoes_and_refuses_null() {
        let cors = cors(&["*"], false);
        let ok = cors.preflight(&map(&[
            ("origin", "https://any.example"),
            ("access-control-request-method", "GET"),
        ]));
        let Preflight::Allowed(h) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!(h["access-control-allow-origin"], "https://any.example");
        assert!(!h.contains_key("access-control-allow-credentials"));
        assert_eq!(
            cors.preflight(&map(&[
                ("origin", "null"),
                ("access-control-request-method", "GET")
            ])),
            Preflight::Refused("null origin")
        );
    }

    #[test]
    fn preflight_without_allowed_headers_sends_no_allow_headers() {
        let cors = Cors::new(CorsConfig {
            allowed_headers: vec![],
            ..config(&["https://a.example"], false)
        })
        .unwrap();
        let req = |headers: &'static str| {
            map(&[
                ("origin", "https://a.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", headers),
            ])
        };
        let Preflight::Allowed(h) = cors.preflight(&req("")) else {
            panic!()
        };
        assert!(!h.contains_key("access-control-allow-headers"));
        assert_eq!(
            cors.preflight(&req("content-type")),
            Preflight::Refused("header not allowed")
        );
    }

    #[test]
    fn max_age_in_whole_seconds() {
        for (age, want) in [
            (Duration::from_secs(600), "600"),
            (Duration::from_millis(1999), "1"),
            (Duration::ZERO, "0"),
            (Duration::from_secs(7200), "7200"),
        ] {
            let cors = Cors::new(CorsConfig {
                max_age: age,
                ..config(&["https://a.example"], false)
            })
            .unwrap();
            let Preflight::Allowed(h) = cors.preflight(&map(&[
                ("origin", "https://a.example"),
                ("access-control-request-method", "GET"),
            ])) else {
                panic!()
            };
            assert_eq!(h["access-control-max-age"], want);
        }
    }

    #[test]
    fn is_preflight_table() {
        for (name, method, fields, want) in [
            (
                "both headers",
                Method::OPTIONS,
                &[
                    ("origin", "https://a.example"),
                    ("access-control-request-method", "PUT"),
                ][..],
                true,
            ),
            (
                "no request method",
                Method::OPTIONS,
                &[("origin", "https://a.example")][..],
                false,
            ),
            (
                "no origin",
                Method::OPTIONS,
                &[("access-control-request-method", "PUT")][..],
                false,
            ),
            ("plain OPTIONS", Method::OPTIONS, &[][..], false),
            (
                "not OPTIONS",
                Method::POST,
                &[
                    ("origin", "https://a.example"),
                    ("access-control-request-method", "PUT"),
                ][..],
                false,
            ),
        ] {
            let mut req = Request::builder().method(method).body(()).unwrap();
            *req.headers_mut() = map(fields);
            assert_eq!(Cors::is_preflight(&req), want, "{name}");
        }
    }

    #[test]
    fn enabled_follows_the_origins() {
        assert!(!cors(&[], false).enabled());
        assert!(cors(&["https://a.example"], false).enabled());
        assert!(cors(&["*"], false).enabled());
    }

    #[test]
    fn default_config_is_design_section_3() {
        let cfg = CorsConfig::default();
        assert!(cfg.allowed_origins.is_empty());
        assert_eq!(
            cfg.allowed_methods,
            [
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE
            ]
        );
        let headers: Vec<_> = cfg.allowed_headers.iter().map(HeaderName::as_str).collect();
        assert_eq!(
            headers,
            [
                "authorization",
                "content-type",
                "x-csrf-token",
                "x-request-id"
            ]
        );
        assert!(!cfg.allow_credentials);
        assert_eq!(cfg.max_age, Duration::from_secs(600));
        assert!(!Cors::new(cfg).unwrap().enabled());
    }
}
