//! The decisions of a shared HTTP cache (RFC 9111), as plain functions with no storage:
//! which requests may be answered from a cache, which responses may be stored and for
//! how long, how old a stored response is, and which variant of it a request selects.
//!
//! The gateway's response cache stores what these functions allow; a Tower service can
//! use them the same way.
//!
//! What a shared cache in front of an API must get right, and where it is decided here:
//!
//! - **nothing private is shared**: `private`, `no-store`, `no-cache` (we never
//!   revalidate, so a response that must be revalidated is not stored), `Set-Cookie`,
//!   `Vary: *` and partial content are never stored ([`storable`]); requests with
//!   credentials are the caller's call (the gateway bypasses them unless a route keys
//!   its entries by subject, which also lets `private` responses be stored);
//! - **no unkeyed input can poison an entry**: requests carrying headers that can change
//!   the upstream's answer but are not part of the key (`X-Forwarded-*` and `Forwarded`
//!   from untrusted peers, `X-Original-URL`, `X-Rewrite-URL`, method overrides) bypass the
//!   cache ([`classify`]);
//! - **freshness** is the upstream's (`s-maxage`, `max-age`, `Expires` − `Date`), capped
//!   by the route's `ttl`, which is also the default for 200, 203 and 204 without any;
//!   errors are stored only with explicit freshness;
//! - **age** (`Age`) counts the time the response spent upstream of us as well as here.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

/// The `Cache-Control` directives a shared cache acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (without field names: with them the whole response is treated so too).
    pub no_cache: bool,
    /// `private`.
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `max-age=N`.
    pub max_age: Option<u64>,
    /// `s-maxage=N`, which replaces `max-age` in a shared cache.
    pub s_maxage: Option<u64>,
    /// `stale-if-error=N` (RFC 5861): how long after it goes stale the answer may still
    /// be served when the upstream fails.
    pub stale_if_error: Option<u64>,
}

impl Directives {
    /// The directives of every `Cache-Control` field in `headers`. Unknown directives are
    /// ignored; a malformed delta-seconds counts as 0 (stale), as RFC 9111 §1.2.2 asks; a
    /// directive given twice keeps its first value.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // Unreadable: the safe reading.
                d.no_store = true;
                continue;
            };
            for item in value.split(',') {
                let item = item.trim();
                let (name, arg) = match item.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (item, None),
                };
                let seconds = || {
                    arg.map(|a| {
                        // Larger than any sane lifetime: clamp (RFC 9111 §1.2.2).
                        if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) {
                            a.parse::<u64>().unwrap_or(u64::from(u32::MAX))
                        } else {
                            0
                        }
                    })
                };
                if name.eq_ignore_ascii_case("no-store") {
                    d.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    d.no_cache = true;
                } else if name.eq_ignore_ascii_case("private") {
                    d.private = true;
                } else if name.eq_ignore_ascii_case("public") {
                    d.public = true;
                } else if name.eq_ignore_ascii_case("max-age") {
                    d.max_age = d.max_age.or(seconds().or(Some(0)));
                } else if name.eq_ignore_ascii_case("s-maxage") {
                    d.s_maxage = d.s_maxage.or(seconds().or(Some(0)));
                } else if name.eq_ignore_ascii_case("stale-if-error") {
                    d.stale_if_error = d.stale_if_error.or(seconds().or(Some(0)));
                }
            }
        }
        d
    }
}

/// What a cache may do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestClass {
    /// `GET` or `HEAD`: answer from the cache when a fresh entry is there, else fetch and
    /// store.
    Lookup,
    /// `GET` or `HEAD` that asks for a fresh answer (`Cache-Control: no-cache`,
    /// `Pragma: no-cache`): fetch, then store.
    Refresh,
    /// A method that changes the resource (`POST`, `PUT`, `PATCH`, `DELETE`): forward,
    /// and after a success drop what is stored for its path.
    Invalidate,
    /// Neither answered from nor stored in the cache; the reason, for logs.
    Bypass(&'static str),
}

/// Request headers that can change what an upstream answers without being part of a
/// cache key: a request carrying one is never answered from, nor stored in, the cache.
const UNKEYED: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// How a cache treats a request. `peer_trusted`: the peer is a trusted proxy, whose
/// `X-Forwarded-*` headers are expected (the caller keys on the values it forwards).
pub fn classify(method: &Method, headers: &HeaderMap, peer_trusted: bool) -> RequestClass {
    match *method {
        Method::GET | Method::HEAD => {}
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => {
            return RequestClass::Invalidate;
        }
        _ => return RequestClass::Bypass("method"),
    }
    for name in headers.keys() {
        let n = name.as_str();
        if UNKEYED.contains(&n) {
            return RequestClass::Bypass("unkeyed header");
        }
        if !peer_trusted && (n.starts_with("x-forwarded-") || n == "forwarded") {
            return RequestClass::Bypass("forwarding header from an untrusted peer");
        }
    }
    if headers.contains_key(header::RANGE) || headers.contains_key(header::IF_RANGE) {
        return RequestClass::Bypass("range request");
    }
    // `If-None-Match` and `If-Modified-Since` are answered from a stored answer's
    // validators ([`not_modified`]); preconditions meant for writes go to the upstream.
    if headers.contains_key(header::IF_MATCH) || headers.contains_key(header::IF_UNMODIFIED_SINCE) {
        return RequestClass::Bypass("precondition");
    }
    let d = Directives::parse(headers);
    if d.no_store {
        return RequestClass::Bypass("request no-store");
    }
    let pragma_no_cache = headers
        .get_all(header::PRAGMA)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"));
    if d.no_cache || d.max_age == Some(0) || pragma_no_cache {
        return RequestClass::Refresh;
    }
    RequestClass::Lookup
}

/// A response a cache may store, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Storable {
    /// How long it stays fresh from now.
    pub fresh_for: Duration,
    /// Its age when received (seconds): the upstream's `Age`, or the time since its
    /// `Date` if that is larger.
    pub initial_age: u64,
    /// How long after going stale it may stand in for a failed upstream
    /// (`stale-if-error`, capped at [`STALE_IF_ERROR_CAP`]).
    pub stale_for: Duration,
}

/// The longest a stale answer stands in for a failed upstream, whatever
/// `stale-if-error` asks.
pub const STALE_IF_ERROR_CAP: Duration = Duration::from_secs(24 * 3600);

/// Why a response is not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    /// `no-store`, or `no-cache` (never revalidated here, so never stored).
    NoStore,
    /// `private` where the entry would be shared.
    Private,
    /// It sets a cookie.
    SetCookie,
    /// `Vary: *`: no request can be known to match it.
    VaryAll,
    /// Partial content, an informational or `304` status.
    Status,
    /// No explicit freshness, and its status gets no default (an error, a redirect).
    NoFreshness,
    /// Already stale on arrival.
    Stale,
}

impl NotStored {
    /// A short reason, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::SetCookie => "set-cookie",
            Self::VaryAll => "vary *",
            Self::Status => "status",
            Self::NoFreshness => "no freshness",
            Self::Stale => "stale",
        }
    }
}

/// Whether a response may be stored, and for how long.
///
/// `ttl`: the route's cap on freshness and the default for 200, 203 and 204 without
/// explicit freshness. `per_subject`: the entry is keyed by the caller's subject, so a
/// `private` response may be stored for that caller.
pub fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    ttl: Option<Duration>,
    per_subject: bool,
    now: SystemTime,
) -> Result<Storable, NotStored> {
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStored::Status);
    }
    let d = Directives::parse(headers);
    if d.no_store || d.no_cache {
        return Err(NotStored::NoStore);
    }
    if d.private && !per_subject {
        return Err(NotStored::Private);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_names(headers).is_none() {
        return Err(NotStored::VaryAll);
    }
    let date = http_date(headers, header::DATE);
    let explicit = d
        .s_maxage
        .or(d.max_age)
        .map(Duration::from_secs)
        .or_else(|| {
            headers.get(header::EXPIRES).map(|_| {
                // An invalid `Expires` means already expired (RFC 9111 §5.3).
                match (http_date(headers, header::EXPIRES), date.or(Some(now))) {
                    (Some(exp), Some(base)) => exp.duration_since(base).unwrap_or_default(),
                    _ => Duration::ZERO,
                }
            })
        });
    let lifetime = match (explicit, ttl) {
        (Some(e), Some(t)) => e.min(t),
        (Some(e), None) => e,
        (None, Some(t))
            if matches!(
                status,
                StatusCode::OK | StatusCode::NON_AUTHORITATIVE_INFORMATION | StatusCode::NO_CONTENT
            ) =>
        {
            t
        }
        (None, _) => return Err(NotStored::NoFreshness),
    };
    let initial_age = initial_age(headers, date, now);
    match lifetime.checked_sub(Duration::from_secs(initial_age)) {
        Some(left) if !left.is_zero() => Ok(Storable {
            fresh_for: left,
            initial_age,
            stale_for: d
                .stale_if_error
                .map_or(Duration::ZERO, Duration::from_secs)
                .min(STALE_IF_ERROR_CAP),
        }),
        _ => Err(NotStored::Stale),
    }
}

/// The age of a response when received: the larger of its `Age` and the time since its
/// `Date` (RFC 9111 §4.2.3, without the request's round trip, which only the upstream
/// hop adds here).
fn initial_age(headers: &HeaderMap, date: Option<SystemTime>, now: SystemTime) -> u64 {
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let apparent = date
        .and_then(|d| now.duration_since(d).ok())
        .map_or(0, |d| d.as_secs());
    age.max(apparent)
}

fn http_date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
}

/// The request header names a stored response varies on (lower case), or `None` for
/// `Vary: *`.
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let Ok(value) = value.to_str() else {
            return None;
        };
        for item in value.split(',') {
            let item = item.trim();
            if item == "*" {
                return None;
            }
            if let Ok(n) = HeaderName::from_bytes(item.as_bytes())
                && !names.contains(&n)
            {
                names.push(n);
            }
        }
    }
    Some(names)
}

/// The values a request has for the header `name`, joined as one value (`None` when it
/// has none), to compare a request with the one a variant was stored for.
pub fn selecting_value(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let rest: Vec<&HeaderValue> = values.collect();
    if rest.is_empty() {
        return Some(first.clone());
    }
    let mut joined = first.as_bytes().to_vec();
    for v in rest {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Whether a `GET` or `HEAD` with these request headers is answered `304 Not Modified`
/// by a stored answer with these response headers (RFC 9110 §13.1.2, §13.1.3): its
/// `If-None-Match` lists the answer's `ETag` (weak comparison) or is `*`; without
/// `If-None-Match`, its `If-Modified-Since` is not before the answer's `Last-Modified`.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let etag = stored
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(opaque_tag);
    let mut asked = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .peekable();
    if asked.peek().is_some() {
        return asked.any(|t| t == "*" || etag.is_some_and(|e| opaque_tag(t) == e));
    }
    match (
        http_date(request, header::IF_MODIFIED_SINCE),
        http_date(stored, header::LAST_MODIFIED),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// An entity tag without its weakness indicator: `W/"x"` and `"x"` compare equal.
fn opaque_tag(t: &str) -> &str {
    t.trim().strip_prefix("W/").unwrap_or(t.trim())
}

/// The header fields a `304` carries from the stored answer (RFC 9110 §15.4.5).
pub const NOT_MODIFIED_FIELDS: &[HeaderName] = &[
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

/// The current age (seconds) of an entry stored at `stored_at` with `initial_age`.
pub fn current_age(initial_age: u64, stored_at: SystemTime, now: SystemTime) -> u64 {
    initial_age + now.duration_since(stored_at).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_headers as h;

    const NOW_SECS: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
    }

    fn date(offset: i64) -> String {
        let t = if offset >= 0 {
            now() + Duration::from_secs(offset as u64)
        } else {
            now() - Duration::from_secs(offset.unsigned_abs())
        };
        httpdate::fmt_http_date(t)
    }

    const TTL: Option<Duration> = Some(Duration::from_secs(30));

    #[test]
    fn directives_are_read_from_every_field_case_insensitively() {
        let d = Directives::parse(&h(&[
            ("cache-control", "Public, MAX-AGE=60"),
            ("cache-control", "s-maxage=\"10\", max-age=5, foo=bar"),
        ]));
        assert!(d.public);
        assert_eq!(d.max_age, Some(60), "the first max-age wins");
        assert_eq!(d.s_maxage, Some(10));
        assert!(!d.no_store && !d.private && !d.no_cache);
        let d = Directives::parse(&h(&[("cache-control", "max-age=abc, no-cache=\"x\"")]));
        assert_eq!(d.max_age, Some(0), "malformed delta-seconds is stale");
        assert!(d.no_cache);
    }

    #[test]
    fn requests_that_could_poison_or_escape_the_key_bypass() {
        let get = Method::GET;
        assert_eq!(classify(&get, &h(&[]), false), RequestClass::Lookup);
        assert_eq!(
            classify(&Method::HEAD, &h(&[]), false),
            RequestClass::Lookup
        );
        for (name, value) in [
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "host=evil"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("range", "bytes=0-1"),
            ("if-match", "\"a\""),
            ("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("cache-control", "no-store"),
        ] {
            assert!(
                matches!(
                    classify(&get, &h(&[(name, value)]), false),
                    RequestClass::Bypass(_)
                ),
                "{name} must bypass"
            );
        }
        // A trusted proxy's forwarding headers are expected.
        assert_eq!(
            classify(&get, &h(&[("x-forwarded-for", "1.2.3.4")]), true),
            RequestClass::Lookup
        );
        // Unkeyed rewrites bypass even from a trusted proxy.
        assert!(matches!(
            classify(&get, &h(&[("x-original-url", "/x")]), true),
            RequestClass::Bypass(_)
        ));
        for cc in [
            ("cache-control", "no-cache"),
            ("pragma", "no-cache"),
            ("cache-control", "max-age=0"),
        ] {
            assert_eq!(classify(&get, &h(&[cc]), false), RequestClass::Refresh);
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(classify(&m, &h(&[]), false), RequestClass::Invalidate);
        }
        assert!(matches!(
            classify(&Method::OPTIONS, &h(&[]), false),
            RequestClass::Bypass(_)
        ));
    }

    #[test]
    fn ttl_caps_freshness_and_is_the_default_for_200_203_204_only() {
        let s = storable(StatusCode::OK, &h(&[]), TTL, false, now()).unwrap();
        assert_eq!(s.fresh_for, Duration::from_secs(30));
        let s = storable(StatusCode::NO_CONTENT, &h(&[]), TTL, false, now()).unwrap();
        assert_eq!(s.fresh_for, Duration::from_secs(30));
        let s = storable(
            StatusCode::OK,
            &h(&[("cache-control", "max-age=600")]),
            TTL,
            false,
            now(),
        )
        .unwrap();
        assert_eq!(s.fresh_for, Duration::from_secs(30), "ttl caps max-age");
        let s = storable(
            StatusCode::OK,
            &h(&[("cache-control", "max-age=5")]),
            TTL,
            false,
            now(),
        )
        .unwrap();
        assert_eq!(s.fresh_for, Duration::from_secs(5));
        let s = storable(
            StatusCode::OK,
            &h(&[("cache-control", "max-age=5, s-maxage=20")]),
            TTL,
            false,
            now(),
        )
        .unwrap();
        assert_eq!(
            s.fresh_for,
            Duration::from_secs(20),
            "s-maxage wins in a shared cache"
        );
        // Without a ttl, only explicit freshness.
        assert_eq!(
            storable(StatusCode::OK, &h(&[]), None, false, now()),
            Err(NotStored::NoFreshness)
        );
        for status in [404, 500, 503, 301, 302, 400] {
            assert_eq!(
                storable(
                    StatusCode::from_u16(status).unwrap(),
                    &h(&[]),
                    TTL,
                    false,
                    now()
                ),
                Err(NotStored::NoFreshness),
                "{status} without explicit freshness is not stored"
            );
        }
        let s = storable(
            StatusCode::NOT_FOUND,
            &h(&[("cache-control", "max-age=10")]),
            TTL,
            false,
            now(),
        )
        .unwrap();
        assert_eq!(
            s.fresh_for,
            Duration::from_secs(10),
            "an error with explicit freshness"
        );
    }

    #[test]
    fn private_no_store_cookies_vary_star_and_partial_content_are_never_shared() {
        let cases: &[(&[(&str, &str)], NotStored)] = &[
            (&[("cache-control", "no-store")], NotStored::NoStore),
            (&[("cache-control", "no-cache")], NotStored::NoStore),
            (
                &[("cache-control", "private, max-age=60")],
                NotStored::Private,
            ),
            (&[("set-cookie", "sid=1")], NotStored::SetCookie),
            (&[("vary", "Accept, *")], NotStored::VaryAll),
        ];
        for (headers, why) in cases {
            assert_eq!(
                storable(StatusCode::OK, &h(headers), TTL, false, now()),
                Err(*why)
            );
        }
        assert_eq!(
            storable(StatusCode::PARTIAL_CONTENT, &h(&[]), TTL, false, now()),
            Err(NotStored::Status)
        );
        // Keyed by subject, a private response may be kept for that subject.
        assert!(
            storable(
                StatusCode::OK,
                &h(&[("cache-control", "private")]),
                TTL,
                true,
                now()
            )
            .is_ok()
        );
        // ...but never one that sets a cookie.
        assert_eq!(
            storable(
                StatusCode::OK,
                &h(&[("set-cookie", "a=b")]),
                TTL,
                true,
                now()
            ),
            Err(NotStored::SetCookie)
        );
    }

    #[test]
    fn expires_and_age_count() {
        let s = storable(
            StatusCode::OK,
            &h(&[("date", &date(0)), ("expires", &date(20))]),
            None,
            false,
            now(),
        )
        .unwrap();
        assert_eq!(s.fresh_for, Duration::from_secs(20));
        assert_eq!(
            storable(StatusCode::OK, &h(&[("expires", "0")]), None, false, now()),
            Err(NotStored::Stale),
            "an invalid Expires is already expired"
        );
        // Ten seconds old on arrival: ten seconds less to live, and Age starts at 10.
        let s = storable(
            StatusCode::OK,
            &h(&[("cache-control", "max-age=30"), ("age", "10")]),
            None,
            false,
            now(),
        )
        .unwrap();
        assert_eq!((s.fresh_for, s.initial_age), (Duration::from_secs(20), 10));
        // A Date in the past counts as age too.
        let s = storable(
            StatusCode::OK,
            &h(&[("cache-control", "max-age=30"), ("date", &date(-12))]),
            None,
            false,
            now(),
        )
        .unwrap();
        assert_eq!(s.initial_age, 12);
        assert_eq!(
            storable(
                StatusCode::OK,
                &h(&[("cache-control", "max-age=30"), ("age", "31")]),
                None,
                false,
                now()
            ),
            Err(NotStored::Stale)
        );
        assert_eq!(current_age(10, now(), now() + Duration::from_secs(5)), 15);
    }

    #[test]
    fn stale_if_error_is_kept_and_capped() {
        let s = storable(
            StatusCode::OK,
            &h(&[("cache-control", "max-age=10, stale-if-error=60")]),
            None,
            false,
            now(),
        )
        .unwrap();
        assert_eq!(
            (s.fresh_for, s.stale_for),
            (Duration::from_secs(10), Duration::from_secs(60))
        );
        let s = storable(StatusCode::OK, &h(&[]), TTL, false, now()).unwrap();
        assert_eq!(s.stale_for, Duration::ZERO);
        let s = storable(
            StatusCode::OK,
            &h(&[("cache-control", "max-age=10, stale-if-error=99999999")]),
            None,
            false,
            now(),
        )
        .unwrap();
        assert_eq!(s.stale_for, STALE_IF_ERROR_CAP);
    }

    #[test]
    fn validators_decide_not_modified() {
        let stored = h(&[("etag", "W/\"v1\""), ("last-modified", &date(-100))]);
        for (inm, expect) in [
            ("\"v1\"", true),
            ("W/\"v1\"", true),
            ("\"v0\", \"v1\"", true),
            ("*", true),
            ("\"v2\"", false),
        ] {
            assert_eq!(
                not_modified(&h(&[("if-none-match", inm)]), &stored),
                expect,
                "{inm}"
            );
        }
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(
            &h(&[("if-none-match", "\"v2\""), ("if-modified-since", &date(0))]),
            &stored
        ));
        assert!(not_modified(
            &h(&[("if-modified-since", &date(0))]),
            &stored
        ));
        assert!(!not_modified(
            &h(&[("if-modified-since", &date(-200))]),
            &stored
        ));
        assert!(!not_modified(
            &h(&[("if-modified-since", "garbage")]),
            &stored
        ));
        assert!(!not_modified(&h(&[]), &stored));
        assert!(!not_modified(&h(&[("if-none-match", "\"v1\"")]), &h(&[])));
    }

    #[test]
    fn vary_names_and_selecting_values() {
        assert_eq!(
            vary_names(&h(&[
                ("vary", "Accept-Encoding, accept-language"),
                ("vary", "accept-encoding")
            ])),
            Some(vec![header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE])
        );
        assert_eq!(vary_names(&h(&[("vary", "*")])), None);
        let req = h(&[("accept", "a"), ("accept", "b")]);
        assert_eq!(
            selecting_value(&req, &header::ACCEPT),
            Some(HeaderValue::from_static("a, b"))
        );
        assert_eq!(selecting_value(&req, &header::ACCEPT_LANGUAGE), None);
    }
}
