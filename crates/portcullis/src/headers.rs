//! Security-header profiles: the headers every response leaves with.
//!
//! Three profiles (`[headers] profile`, or a route's `headers`):
//!
//! - `api` (the default), for JSON APIs, after the OWASP REST cheat sheet:
//!   `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`,
//!   `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
//!   `Referrer-Policy: no-referrer`, `Cross-Origin-Resource-Policy: same-origin`, and
//!   `Cache-Control: no-store` when the response has no `Cache-Control` of its own;
//! - `web`: helmet 8.3.0's defaults, byte for byte (see [`WEB_CSP`] and the list below);
//! - `off`: nothing at all, not even removals.
//!
//! Rules, for `api` and `web`:
//!
//! - a profile header replaces every upstream value of that name;
//! - `Strict-Transport-Security: max-age=31536000; includeSubDomains` is sent only when the
//!   request was secure (TLS on our listener, or a trusted proxy saying `https`) and `hsts`
//!   is on. On a plain-HTTP request an upstream `Strict-Transport-Security` is removed:
//!   browsers ignore it there, and it must not pass for ours. On a secure request with
//!   `hsts` off, an upstream value is left alone (the upstream chose it);
//! - on a plain-HTTP request the web CSP drops `upgrade-insecure-requests`, which would
//!   otherwise send the page's subresources to an `https` the deployment may not serve;
//! - the upstream's `Server`, `X-Powered-By`, `X-AspNet-Version` and `X-AspNetMvc-Version`
//!   are removed, so no response names a version.
//!
//! `[headers.set]` overrides apply last, with every profile `off` included: a value
//! replaces the header, `None` removes it.
//!
//! All values are built once, in [`SecurityHeaders::new`]; [`SecurityHeaders::apply`]
//! runs on every response and only clones prebuilt values (no allocation beyond the
//! header map's own).
//!
//! # Security
//!
//! HSTS is only as right as the `secure` flag the caller passes: trust a proxy's
//! `X-Forwarded-Proto` only from `trusted_proxies`. `includeSubDomains` covers every
//! subdomain of the host; turn `hsts` off if any of them still serves plain HTTP.
//!
//! ```
//! use http::{HeaderMap, HeaderValue};
//! use portcullis::headers::{Profile, SecurityHeaders};
//!
//! let headers = SecurityHeaders::new(Profile::Api, true, vec![]);
//! let mut res = HeaderMap::new();
//! res.insert("server", HeaderValue::from_static("nginx/1.25.3"));
//! headers.apply(&mut res, true);
//! assert_eq!(res["x-frame-options"], "DENY");
//! assert_eq!(res["cache-control"], "no-store");
//! assert_eq!(res["strict-transport-security"], "max-age=31536000; includeSubDomains");
//! assert!(!res.contains_key("server"));
//! ```

use std::fmt;
use std::str::FromStr;

use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, SERVER, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_DNS_PREFETCH_CONTROL, X_FRAME_OPTIONS, X_XSS_PROTECTION,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// helmet 8.3.0's default `Content-Security-Policy`, as it sends it on a secure request.
pub const WEB_CSP: &str = "default-src 'self';base-uri 'self';font-src 'self' https: data:;\
form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';\
script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';\
upgrade-insecure-requests";

/// The `api` profile's CSP: a JSON response loads nothing and is framed by nobody.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// One year, with subdomains: helmet 8's value (raised from 180 days in 8.0.0), long
/// enough for browsers' preload lists.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

const UPGRADE_INSECURE_REQUESTS: &str = ";upgrade-insecure-requests";

const CROSS_ORIGIN_OPENER_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-opener-policy");
const CROSS_ORIGIN_RESOURCE_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-resource-policy");
const ORIGIN_AGENT_CLUSTER: HeaderName = HeaderName::from_static("origin-agent-cluster");
const X_DOWNLOAD_OPTIONS: HeaderName = HeaderName::from_static("x-download-options");
const X_PERMITTED_CROSS_DOMAIN_POLICIES: HeaderName =
    HeaderName::from_static("x-permitted-cross-domain-policies");

/// Upstream headers that name software or versions, removed unless the profile is `off`.
const REVEALING: [HeaderName; 4] = [
    SERVER,
    HeaderName::from_static("x-powered-by"),
    HeaderName::from_static("x-aspnet-version"),
    HeaderName::from_static("x-aspnetmvc-version"),
];

/// A named set of security headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    /// For JSON APIs: a CSP that allows nothing, `DENY` framing, `no-store` by default.
    #[default]
    Api,
    /// helmet 8.3.0's defaults, for upstreams that serve pages.
    Web,
    /// No security headers, and upstream headers left as they are.
    Off,
}

impl Profile {
    /// The profile's name in configuration: `api`, `web` or `off`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Web => "web",
            Self::Off => "off",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A profile name that is not `api`, `web` or `off`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown header profile {value:?}: expected one of \"api\", \"web\", \"off\"")]
pub struct ParseProfileError {
    /// The refused name.
    pub value: String,
}

impl FromStr for Profile {
    type Err = ParseProfileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "api" => Ok(Self::Api),
            "web" => Ok(Self::Web),
            "off" => Ok(Self::Off),
            _ => Err(ParseProfileError {
                value: s.to_owned(),
            }),
        }
    }
}

/// A profile ready to apply, with its values built once.
#[derive(Clone, Debug)]
pub struct SecurityHeaders {
    profile: Profile,
    /// The profile's headers on a secure request, HSTS included when on.
    secure: Box<[(HeaderName, HeaderValue)]>,
    /// The profile's headers on a plain-HTTP request.
    plain: Box<[(HeaderName, HeaderValue)]>,
    /// `Cache-Control` for responses that have none.
    cache_control: Option<HeaderValue>,
    /// `[headers.set]`, applied last.
    set: Box<[(HeaderName, Option<HeaderValue>)]>,
}

impl SecurityHeaders {
    /// `hsts`: send Strict-Transport-Security (only ever on secure requests). `set`:
    /// `[headers.set]` overrides applied last, a `None` value removes the header.
    pub fn new(profile: Profile, hsts: bool, set: Vec<(HeaderName, Option<HeaderValue>)>) -> Self {
        let common: Vec<(HeaderName, HeaderValue)> = match profile {
            Profile::Api => vec![
                (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
                (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
                (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
                (
                    CROSS_ORIGIN_RESOURCE_POLICY,
                    HeaderValue::from_static("same-origin"),
                ),
            ],
            // helmet's middleware order, minus the CSP and HSTS added below
            Profile::Web => vec![
                (
                    CROSS_ORIGIN_OPENER_POLICY,
                    HeaderValue::from_static("same-origin"),
                ),
                (
                    CROSS_ORIGIN_RESOURCE_POLICY,
                    HeaderValue::from_static("same-origin"),
                ),
                (ORIGIN_AGENT_CLUSTER, HeaderValue::from_static("?1")),
                (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
                (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
                (X_DNS_PREFETCH_CONTROL, HeaderValue::from_static("off")),
                (X_DOWNLOAD_OPTIONS, HeaderValue::from_static("noopen")),
                (X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN")),
                (
                    X_PERMITTED_CROSS_DOMAIN_POLICIES,
                    HeaderValue::from_static("none"),
                ),
                (X_XSS_PROTECTION, HeaderValue::from_static("0")),
            ],
            Profile::Off => Vec::new(),
        };
        let (csp_secure, csp_plain) = match profile {
            Profile::Api => (API_CSP, API_CSP),
            Profile::Web => (
                WEB_CSP,
                WEB_CSP
                    .strip_suffix(UPGRADE_INSECURE_REQUESTS)
                    .expect("the web CSP ends with upgrade-insecure-requests"),
            ),
            Profile::Off => ("", ""),
        };
        let mut secure = Vec::new();
        let mut plain = Vec::new();
        if profile != Profile::Off {
            secure.push((
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp_secure),
            ));
            plain.push((CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp_plain)));
            secure.extend(common.iter().cloned());
            plain.extend(common);
            if hsts {
                secure.push((STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS)));
            }
        }
        Self {
            profile,
            secure: secure.into(),
            plain: plain.into(),
            cache_control: (profile == Profile::Api).then(|| HeaderValue::from_static("no-store")),
            set: set.into(),
        }
    }

    /// The profile applied.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Applies the profile to a response's headers. `secure`: the request came over TLS
    /// (or a trusted proxy said https).
    pub fn apply(&self, headers: &mut HeaderMap, secure: bool) {
        if self.profile != Profile::Off {
            for name in &REVEALING {
                headers.remove(name);
            }
            if !secure {
                headers.remove(STRICT_TRANSPORT_SECURITY);
            }
            let profile = if secure { &self.secure } else { &self.plain };
            for (name, value) in profile.iter() {
                headers.insert(name.clone(), value.clone());
            }
            if let Some(value) = &self.cache_control
                && !headers.contains_key(CACHE_CONTROL)
            {
                headers.insert(CACHE_CONTROL, value.clone());
            }
        }
        for (name, value) in self.set.iter() {
            match value {
                Some(value) => {
                    headers.insert(name.clone(), value.clone());
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    fn hn(s: &'static str) -> HeaderName {
        HeaderName::from_static(s)
    }

    /// Every (name, value) pair in `headers`, sorted, as text.
    fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
        let mut out: Vec<_> = headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        out.sort();
        out
    }

    fn sorted(list: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut out: Vec<_> = list
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
            .collect();
        out.sort();
        out
    }

    fn applied(h: &SecurityHeaders, mut headers: HeaderMap, secure: bool) -> HeaderMap {
        h.apply(&mut headers, secure);
        headers
    }

    /// helmet 8.3.0 with no options, on an HTTPS request (research/anchors-features.md §4.1).
    const HELMET: &[(&str, &str)] = &[
        (
            "Content-Security-Policy",
            "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
        ),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
        ("Origin-Agent-Cluster", "?1"),
        ("Referrer-Policy", "no-referrer"),
        (
            "Strict-Transport-Security",
            "max-age=31536000; includeSubDomains",
        ),
        ("X-Content-Type-Options", "nosniff"),
        ("X-DNS-Prefetch-Control", "off"),
        ("X-Download-Options", "noopen"),
        ("X-Frame-Options", "SAMEORIGIN"),
        ("X-Permitted-Cross-Domain-Policies", "none"),
        ("X-XSS-Protection", "0"),
    ];

    const API: &[(&str, &str)] = &[
        (
            "Content-Security-Policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
        ("Cache-Control", "no-store"),
        (
            "Strict-Transport-Security",
            "max-age=31536000; includeSubDomains",
        ),
    ];

    #[test]
    fn web_on_a_secure_request_is_helmet_byte_for_byte() {
        let h = SecurityHeaders::new(Profile::Web, true, vec![]);
        assert_eq!(pairs(&applied(&h, HeaderMap::new(), true)), sorted(HELMET));
        assert_eq!(WEB_CSP, HELMET[0].1);
    }

    #[test]
    fn web_on_plain_http_drops_hsts_and_upgrade_insecure_requests() {
        let h = SecurityHeaders::new(Profile::Web, true, vec![]);
        let want: Vec<(&str, &str)> = HELMET
            .iter()
            .filter(|(n, _)| *n != "Strict-Transport-Security")
            .map(|&(n, v)| {
                if n == "Content-Security-Policy" {
                    (
                        n,
                        "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline'",
                    )
                } else {
                    (n, v)
                }
            })
            .collect();
        assert_eq!(pairs(&applied(&h, HeaderMap::new(), false)), sorted(&want));
    }

    #[test]
    fn api_on_a_secure_request() {
        let h = SecurityHeaders::new(Profile::Api, true, vec![]);
        assert_eq!(pairs(&applied(&h, HeaderMap::new(), true)), sorted(API));
    }

    #[test]
    fn api_on_plain_http_has_no_hsts() {
        let h = SecurityHeaders::new(Profile::Api, true, vec![]);
        let want: Vec<_> = API
            .iter()
            .copied()
            .filter(|(n, _)| *n != "Strict-Transport-Security")
            .collect();
        assert_eq!(pairs(&applied(&h, HeaderMap::new(), false)), sorted(&want));
    }

    fn upstream() -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("server", hv("Apache/2.4.58 (Unix)"));
        m.insert("x-powered-by", hv("Express"));
        m.insert("x-aspnet-version", hv("4.0.30319"));
        m.insert("x-aspnetmvc-version", hv("5.2"));
        m.append("content-security-policy", hv("default-src *"));
        m.append("content-security-policy", hv("upgrade-insecure-requests"));
        m.insert("strict-transport-security", hv("max-age=60"));
        m.insert("x-frame-options", hv("ALLOWALL"));
        m.insert("content-type", hv("application/json"));
        m.insert("cache-control", hv("max-age=60"));
        m.append("x-custom", hv("a"));
        m.append("x-custom", hv("b"));
        m
    }

    #[test]
    fn off_leaves_everything_on_both_schemes() {
        let h = SecurityHeaders::new(Profile::Off, true, vec![]);
        for secure in [true, false] {
            assert_eq!(applied(&h, upstream(), secure), upstream(), "{secure}");
            assert!(applied(&h, HeaderMap::new(), secure).is_empty());
        }
    }

    #[test]
    fn profile_headers_replace_every_upstream_value() {
        for profile in [Profile::Api, Profile::Web] {
            let h = SecurityHeaders::new(profile, true, vec![]);
            for secure in [true, false] {
                let res = applied(&h, upstream(), secure);
                for name in ["content-security-policy", "x-frame-options"] {
                    assert_eq!(res.get_all(name).iter().count(), 1, "{profile} {name}");
                }
                let csp = res["content-security-policy"].to_str().unwrap();
                assert_ne!(csp, "default-src *");
                assert_eq!(
                    csp.contains("upgrade-insecure-requests"),
                    secure && profile == Profile::Web,
                    "{profile} {secure}: ours only, never the upstream's"
                );
                assert_ne!(res["x-frame-options"], "ALLOWALL");
            }
        }
    }

    #[test]
    fn unrelated_upstream_headers_are_kept() {
        for profile in [Profile::Api, Profile::Web] {
            let h = SecurityHeaders::new(profile, true, vec![]);
            let res = applied(&h, upstream(), true);
            assert_eq!(res["content-type"], "application/json");
            let custom: Vec<_> = res.get_all("x-custom").iter().collect();
            assert_eq!(custom, [&hv("a"), &hv("b")]);
        }
    }

    #[test]
    fn revealing_headers_are_removed_unless_off() {
        for (profile, removed) in [
            (Profile::Api, true),
            (Profile::Web, true),
            (Profile::Off, false),
        ] {
            let h = SecurityHeaders::new(profile, true, vec![]);
            for secure in [true, false] {
                let res = applied(&h, upstream(), secure);
                for name in [
                    "server",
                    "x-powered-by",
                    "x-aspnet-version",
                    "x-aspnetmvc-version",
                ] {
                    assert_eq!(!res.contains_key(name), removed, "{profile} {name}");
                }
            }
        }
    }

    #[test]
    fn hsts_table() {
        struct Case {
            name: &'static str,
            profile: Profile,
            hsts: bool,
            secure: bool,
            upstream: Option<&'static str>,
            want: Option<&'static str>,
        }
        let cases = [
            Case {
                name: "api, secure: ours",
                profile: Profile::Api,
                hsts: true,
                secure: true,
                upstream: None,
                want: Some(HSTS),
            },
            Case {
                name: "web, secure: ours",
                profile: Profile::Web,
                hsts: true,
                secure: true,
                upstream: None,
                want: Some(HSTS),
            },
            Case {
                name: "secure: ours replaces the upstream's",
                profile: Profile::Api,
                hsts: true,
                secure: true,
                upstream: Some("max-age=60"),
                want: Some(HSTS),
            },
            Case {
                name: "plain: none",
                profile: Profile::Api,
                hsts: true,
                secure: false,
                upstream: None,
                want: None,
            },
            Case {
                name: "plain: the upstream's is removed",
                profile: Profile::Web,
                hsts: true,
                secure: false,
                upstream: Some("max-age=60"),
                want: None,
            },
            Case {
                name: "plain, hsts off: the upstream's is removed",
                profile: Profile::Api,
                hsts: false,
                secure: false,
                upstream: Some("max-age=60"),
                want: None,
            },
            Case {
                name: "hsts off, secure: none of ours",
                profile: Profile::Api,
                hsts: false,
                secure: true,
                upstream: None,
                want: None,
            },
            Case {
                name: "hsts off, secure: the upstream's is its own choice",
                profile: Profile::Web,
                hsts: false,
                secure: true,
                upstream: Some("max-age=60"),
                want: Some("max-age=60"),
            },
            Case {
                name: "off, secure: nothing sent",
                profile: Profile::Off,
                hsts: true,
                secure: true,
                upstream: None,
                want: None,
            },
            Case {
                name: "off, plain: the upstream's untouched",
                profile: Profile::Off,
                hsts: true,
                secure: false,
                upstream: Some("max-age=60"),
                want: Some("max-age=60"),
            },
        ];
        for c in cases {
            let h = SecurityHeaders::new(c.profile, c.hsts, vec![]);
            let mut res = HeaderMap::new();
            if let Some(v) = c.upstream {
                res.insert(STRICT_TRANSPORT_SECURITY, hv(v));
            }
            h.apply(&mut res, c.secure);
            let got: Vec<_> = res
                .get_all(STRICT_TRANSPORT_SECURITY)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(got, c.want.into_iter().collect::<Vec<_>>(), "{}", c.name);
        }
    }

    #[test]
    fn upgrade_insecure_requests_only_on_secure_requests() {
        let h = SecurityHeaders::new(Profile::Web, true, vec![]);
        let secure = applied(&h, HeaderMap::new(), true);
        let plain = applied(&h, HeaderMap::new(), false);
        assert!(
            secure["content-security-policy"]
                .to_str()
                .unwrap()
                .ends_with(";style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests")
        );
        assert!(
            plain["content-security-policy"]
                .to_str()
                .unwrap()
                .ends_with(";style-src 'self' https: 'unsafe-inline'")
        );
    }

    #[test]
    fn cache_control_table() {
        struct Case {
            name: &'static str,
            profile: Profile,
            upstream: &'static [&'static str],
            want: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "api, none: no-store",
                profile: Profile::Api,
                upstream: &[],
                want: &["no-store"],
            },
            Case {
                name: "api, the upstream's kept",
                profile: Profile::Api,
                upstream: &["public, max-age=60"],
                want: &["public, max-age=60"],
            },
            Case {
                name: "api, several upstream values kept",
                profile: Profile::Api,
                upstream: &["public", "max-age=60"],
                want: &["public", "max-age=60"],
            },
            Case {
                name: "web adds none",
                profile: Profile::Web,
                upstream: &[],
                want: &[],
            },
            Case {
                name: "web keeps the upstream's",
                profile: Profile::Web,
                upstream: &["max-age=60"],
                want: &["max-age=60"],
            },
            Case {
                name: "off adds none",
                profile: Profile::Off,
                upstream: &[],
                want: &[],
            },
        ];
        for c in cases {
            let h = SecurityHeaders::new(c.profile, true, vec![]);
            for secure in [true, false] {
                let mut res = HeaderMap::new();
                for v in c.upstream {
                    res.append(CACHE_CONTROL, hv(v));
                }
                h.apply(&mut res, secure);
                let got: Vec<_> = res
                    .get_all(CACHE_CONTROL)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                assert_eq!(got, c.want, "{}", c.name);
            }
        }
    }

    #[test]
    fn set_overrides_apply_last() {
        let set = vec![
            (CONTENT_SECURITY_POLICY, Some(hv("default-src 'self'"))),
            (X_FRAME_OPTIONS, None),
            (hn("permissions-policy"), Some(hv("camera=()"))),
            (hn("x-custom"), None),
            (CACHE_CONTROL, Some(hv("private"))),
            (SERVER, Some(hv("portcullis"))),
        ];
        for profile in [Profile::Api, Profile::Web, Profile::Off] {
            let h = SecurityHeaders::new(profile, true, set.clone());
            for secure in [true, false] {
                let res = applied(&h, upstream(), secure);
                let csp: Vec<_> = res.get_all(CONTENT_SECURITY_POLICY).iter().collect();
                assert_eq!(csp, [&hv("default-src 'self'")], "{profile}");
                assert!(!res.contains_key(X_FRAME_OPTIONS), "{profile}");
                assert_eq!(res["permissions-policy"], "camera=()", "{profile}");
                assert!(!res.contains_key("x-custom"), "{profile}");
                assert_eq!(res[CACHE_CONTROL], "private", "{profile}");
                assert_eq!(res[SERVER], "portcullis", "{profile}");
            }
        }
    }

    #[test]
    fn set_can_remove_a_profile_header_and_later_entries_win() {
        let set = vec![
            (STRICT_TRANSPORT_SECURITY, None),
            (hn("x-a"), Some(hv("1"))),
            (hn("x-a"), Some(hv("2"))),
            (hn("x-b"), Some(hv("1"))),
            (hn("x-b"), None),
        ];
        let h = SecurityHeaders::new(Profile::Web, true, set);
        let res = applied(&h, HeaderMap::new(), true);
        assert!(!res.contains_key(STRICT_TRANSPORT_SECURITY));
        assert_eq!(res.get_all("x-a").iter().collect::<Vec<_>>(), [&hv("2")]);
        assert!(!res.contains_key("x-b"));
    }

    #[test]
    fn applying_twice_changes_nothing() {
        for profile in [Profile::Api, Profile::Web, Profile::Off] {
            let h = SecurityHeaders::new(profile, true, vec![(hn("x-a"), Some(hv("1")))]);
            for secure in [true, false] {
                let once = applied(&h, upstream(), secure);
                assert_eq!(applied(&h, once.clone(), secure), once, "{profile}");
            }
        }
    }

    #[test]
    fn profile_names() {
        for (text, profile) in [
            ("api", Profile::Api),
            ("web", Profile::Web),
            ("off", Profile::Off),
        ] {
            assert_eq!(text.parse::<Profile>(), Ok(profile));
            assert_eq!(profile.to_string(), text);
            assert_eq!(profile.as_str(), text);
            assert_eq!(
                SecurityHeaders::new(profile, true, vec![]).profile(),
                profile
            );
        }
        assert_eq!(Profile::default(), Profile::Api);
        for bad in ["", "API", " api", "helmet", "none"] {
            let err = bad.parse::<Profile>().unwrap_err();
            assert_eq!(err.value, bad);
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(
                msg.contains("\"api\", \"web\", \"off\""),
                "names the valid values: {msg}"
            );
        }
    }
}
