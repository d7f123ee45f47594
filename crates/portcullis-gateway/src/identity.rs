//! Who is calling: the bearer token (or the access cookie), verified; and the
//! revocations every instance keeps.
//!
//! The verdict is noted, not acted on, here: the stack decides later what a missing or
//! refused identity means for the route (401, 403, or nothing).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HeaderValue};
use portcullis_core::session::Revocations;
use portcullis_core::store::SharedStore;
use portcullis_core::token::external::{External, ExternalIssuers};
use portcullis_core::token::{Identity, KeySet, LEEWAY, TokenError, Verifier, read_header};
use portcullis_core::{Clock, SystemClock};

use crate::config::{AuthConfig, ConfigError};

/// The access-token cookie in cookie mode.
pub const ACCESS_COOKIE: &str = "__Host-access";
/// The refresh-token cookie in cookie mode.
pub const REFRESH_COOKIE: &str = "__Host-refresh";

/// What the request presented.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// No credentials.
    Anonymous,
    /// A verified identity.
    Verified(Arc<Identity>),
    /// A token that was refused, and why.
    Refused(TokenError),
    /// More than one `Authorization` header: refused without looking further.
    Ambiguous,
}

impl Verdict {
    /// The verdict in one word, for traces.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::Verified(_) => "verified",
            Self::Refused(_) => "refused",
            Self::Ambiguous => "ambiguous",
        }
    }
}

/// Identity settings and state shared by the stack, the auth routes and the admin API.
#[derive(Debug)]
pub struct Auth {
    /// The `[auth]` settings.
    pub cfg: AuthConfig,
    /// Verifies access tokens (and holds the keys that sign them).
    pub verifier: Verifier,
    /// Sessions revoked, known locally.
    pub revocations: Arc<Revocations>,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// External issuers, verified with their published keys.
    pub issuers: ExternalIssuers,
    /// TLS settings for fetching their keys.
    pub fetch_tls: Arc<rustls::ClientConfig>,
}

impl Auth {
    /// Loads the signing keys (or makes an ephemeral one) and builds the verifier.
    pub fn new(
        cfg: &AuthConfig,
        fetch_tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, ConfigError> {
        let keys = match &cfg.signing_key_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    key: "auth.signing_key_file".into(),
                    origin: None,
                    message: format!("cannot read {}: {e}", path.display()),
                })?;
                KeySet::from_pem(&text).map_err(|e| ConfigError {
                    key: "auth.signing_key_file".into(),
                    origin: None,
                    message: format!("{}: {e}", path.display()),
                })?
            }
            None => KeySet::ephemeral().map_err(|e| ConfigError {
                key: "auth.signing_key_file".into(),
                origin: None,
                message: e.to_string(),
            })?,
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Ok(Self {
            verifier: Verifier::new(Arc::new(keys), &cfg.issuer, &cfg.audience, clock.clone()),
            cfg: cfg.clone(),
            revocations: Arc::new(Revocations::new()),
            clock,
            issuers: ExternalIssuers::new(cfg.issuers.clone()),
            fetch_tls,
        })
    }

    /// The signing keys.
    pub fn keys(&self) -> &KeySet {
        self.verifier.keys()
    }

    /// Seconds since the epoch.
    pub fn now_secs(&self) -> u64 {
        self.clock
            .system_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Verifies what `headers` present: a `Bearer` token in `Authorization` (the scheme in
    /// any case), or in cookie mode the access cookie.
    pub fn identify(&self, headers: &HeaderMap) -> Verdict {
        let token = match bearer(headers) {
            Bearer::Ambiguous => return Verdict::Ambiguous,
            Bearer::Token(t) => Some(t),
            Bearer::None if self.cfg.cookies => cookie(headers, ACCESS_COOKIE),
            Bearer::None => None,
        };
        let Some(token) = token else {
            return Verdict::Anonymous;
        };
        self.verify(token)
    }

    /// Verifies one access token, the revocation list included: the gateway's own, or
    /// one from a configured external issuer.
    pub fn verify(&self, token: &str) -> Verdict {
        if !self.issuers.is_empty()
            && let Ok(header) = read_header(token)
            && !header
                .kid
                .as_deref()
                .is_some_and(|k| self.verifier.is_own_kid(k))
            && let Some(alg) = header.alg.as_deref()
            && let Some(outcome) =
                self.issuers
                    .verify(token, alg, header.kid.as_deref(), self.clock.as_ref())
        {
            return match outcome {
                External::Verified(id) => Verdict::Verified(Arc::new(id)),
                External::Refused(e) => Verdict::Refused(e),
                External::UnknownKid(issuer) => {
                    // Perhaps the issuer rotated its keys: fetch them again (at a bounded
                    // rate), and refuse this token meanwhile.
                    if issuer.wants_fetch(std::time::Instant::now(), true) {
                        let tls = self.fetch_tls.clone();
                        tokio::spawn(async move { crate::jwks::refresh(&issuer, &tls).await });
                    }
                    Verdict::Refused(TokenError::UnknownKey)
                }
            };
        }
        match self.verifier.verify(token) {
            Ok(id) => {
                if id
                    .session
                    .as_deref()
                    .is_some_and(|s| self.revocations.contains(s))
                {
                    Verdict::Refused(TokenError::Revoked)
                } else {
                    Verdict::Verified(id)
                }
            }
            Err(e) => Verdict::Refused(e),
        }
    }

    /// Revokes session `sid` here at once and, through the store, on every instance.
    pub async fn revoke(&self, store: &SharedStore, sid: &str) {
        let until = self.now_secs() + self.cfg.access_ttl.as_secs() + LEEWAY.as_secs();
        self.revocations.insert(sid, until);
        if let Err(e) = store.revocation_publish(sid, until).await {
            tracing::warn!(error = %e, "a revocation could not be shared; other instances learn it when the store returns or the tokens expire");
        }
    }

    /// Pulls revocations made on other instances every `every`, and forgets those whose
    /// tokens have expired, until the task is aborted.
    pub fn spawn_revocation_sync(
        self: &Arc<Self>,
        store: SharedStore,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let auth = self.clone();
        tokio::spawn(async move {
            let keep = auth.cfg.access_ttl + LEEWAY + Duration::from_secs(60);
            let mut cursor = 0u64;
            let mut ticks: u64 = 0;
            loop {
                tokio::time::sleep(every).await;
                ticks += 1;
                if let Ok((rows, next)) = store.revocations_since(cursor, keep).await {
                    cursor = next;
                    for r in rows {
                        auth.revocations.insert(&r.sid, r.until);
                    }
                }
                if ticks.is_multiple_of(240) {
                    auth.revocations.purge(auth.now_secs());
                }
            }
        })
    }
}

enum Bearer<'a> {
    None,
    Token(&'a str),
    Ambiguous,
}

/// The bearer token of `Authorization: Bearer <token>`, the scheme matched in any case.
/// Other schemes are left to the upstream.
fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(first) = values.next() else {
        return Bearer::None;
    };
    if values.next().is_some() {
        return Bearer::Ambiguous;
    }
    let Ok(v) = first.to_str() else {
        return Bearer::None;
    };
    let v = v.trim();
    let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        // An empty credential is still a presented one, and it is not valid.
        Bearer::Token(token.trim())
    } else {
        Bearer::None
    }
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// `Set-Cookie` for a token cookie: `__Host-` name, `Secure; HttpOnly; SameSite=Strict;
/// Path=/`, no `Domain`.
pub fn token_cookie(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Max-Age={}; Path=/; Secure; HttpOnly; SameSite=Strict",
        max_age.as_secs()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn bearer_scheme_in_any_case_and_two_headers_refused() {
        assert!(matches!(
            bearer(&h(&[("authorization", "Bearer abc")])),
            Bearer::Token("abc")
        ));
        assert!(matches!(
            bearer(&h(&[("authorization", "bEaReR abc")])),
            Bearer::Token("abc")
        ));
        assert!(matches!(
            bearer(&h(&[("authorization", "Basic abc")])),
            Bearer::None
        ));
        assert!(matches!(
            bearer(&h(&[("authorization", "Bearer")])),
            Bearer::Token("")
        ));
        assert!(matches!(
            bearer(&h(&[("authorization", "Bearer   ")])),
            Bearer::Token("")
        ));
        assert!(matches!(bearer(&h(&[])), Bearer::None));
        assert!(matches!(
            bearer(&h(&[
                ("authorization", "Bearer a"),
                ("authorization", "Bearer b")
            ])),
            Bearer::Ambiguous
        ));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let m = h(&[("cookie", "a=1; __Host-access=tok; b=2")]);
        assert_eq!(cookie(&m, "__Host-access"), Some("tok"));
        assert_eq!(cookie(&m, "__Host-acces"), None);
    }
}
