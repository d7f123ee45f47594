//! Tokens from external issuers (`[[auth.issuers]]`), verified with their published JWKS.
//!
//! - The issuer is chosen by the token's `iss`, among the configured ones only; the key by
//!   `kid`, among that issuer's published keys only; the algorithm must be both in the
//!   issuer's configured list and the key's own (a JWK's `alg`, or its key type). HMAC
//!   algorithms are never accepted from an external issuer: a published key is public.
//! - The JWKS is fetched from the configured URL only, never from a token's `jku`, `x5u`
//!   or `jwk`. It is cached and fetched again every [`JWKS_MAX_AGE`], and when a token
//!   names an unknown `kid` — at most once per [`REFETCH_MIN_INTERVAL`], so tokens with
//!   made-up `kid`s cannot make the gateway hammer the issuer.
//! - `exp`, `nbf`, `iss` and `aud` are checked as for the gateway's own tokens; `typ` may
//!   be anything (external issuers label their tokens differently); roles come from the
//!   claim named by `roles_claim` (a list, or a space-separated string).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::verify::{Identity, LEEWAY, TokenError};
use crate::Clock;

/// How long a fetched JWKS is used before it is fetched again.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// The least time between two fetches caused by unknown `kid`s.
pub const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(30);

/// One external issuer's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Where its JWKS is published.
    pub jwks_url: String,
    /// The `aud` its tokens must carry.
    pub audience: String,
    /// Algorithms accepted (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// The claim holding the roles.
    pub roles_claim: String,
}

/// Whether an algorithm may be accepted from an external issuer.
pub fn is_asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

struct Keys {
    by_kid: HashMap<String, (DecodingKey, Vec<Algorithm>)>,
    fetched: Option<Instant>,
}

/// One issuer: settings and its cached keys.
pub struct Issuer {
    cfg: IssuerConfig,
    keys: RwLock<Keys>,
    last_refetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.cfg.issuer)
            .finish_non_exhaustive()
    }
}

fn algorithms_of(jwk: &jsonwebtoken::jwk::Jwk) -> Vec<Algorithm> {
    if let Some(a) = jwk.common.key_algorithm {
        let alg = match a {
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::EdDSA => Algorithm::EdDSA,
            _ => return Vec::new(),
        };
        return vec![alg];
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match format!("{:?}", p.curve).as_str() {
            "P256" => vec![Algorithm::ES256],
            "P384" => vec![Algorithm::ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // Symmetric keys are never usable from a published set.
        _ => Vec::new(),
    }
}

impl Issuer {
    /// An issuer with no keys yet.
    pub fn new(cfg: IssuerConfig) -> Self {
        Self {
            cfg,
            keys: RwLock::new(Keys {
                by_kid: HashMap::new(),
                fetched: None,
            }),
            last_refetch: Mutex::new(None),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &IssuerConfig {
        &self.cfg
    }

    /// Replaces the keys with those of a fetched JWKS; how many are usable.
    pub fn load_jwks(&self, body: &[u8], now: Instant) -> Result<usize, String> {
        let set: JwkSet =
            serde_json::from_slice(body).map_err(|e| format!("not a JWK Set: {e}"))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let algs: Vec<Algorithm> = algorithms_of(jwk)
                .into_iter()
                .filter(|a| self.cfg.algorithms.contains(a) && is_asymmetric(*a))
                .collect();
            if algs.is_empty() {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                by_kid.insert(kid, (key, algs));
            }
        }
        let n = by_kid.len();
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.by_kid = by_kid;
        keys.fetched = Some(now);
        Ok(n)
    }

    /// Whether the keys should be fetched: never fetched, older than [`JWKS_MAX_AGE`], or
    /// (when `unknown_kid`) a kid is missing and no refetch happened in the last
    /// [`REFETCH_MIN_INTERVAL`]. Claims the refetch slot when it answers yes.
    pub fn wants_fetch(&self, now: Instant, unknown_kid: bool) -> bool {
        let stale = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            keys.fetched
                .is_none_or(|t| now.duration_since(t) >= JWKS_MAX_AGE)
        };
        if !(stale || unknown_kid) {
            return false;
        }
        let mut last = self.last_refetch.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < REFETCH_MIN_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_kid
            .contains_key(kid)
    }
}

/// What a token claims before it is verified: only used to choose a configured issuer.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let body = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?
        .as_str()
        .map(|s| s.chars().take(256).collect())
}

/// The outcome of verifying an external token.
#[derive(Debug)]
pub enum External {
    /// Verified.
    Verified(Identity),
    /// Refused.
    Refused(TokenError),
    /// Refused because its `kid` is unknown; the issuer's keys should be fetched again.
    UnknownKid(Arc<Issuer>),
}

/// The configured external issuers.
#[derive(Debug, Default)]
pub struct ExternalIssuers {
    issuers: Vec<Arc<Issuer>>,
}

impl ExternalIssuers {
    /// From settings.
    pub fn new(cfgs: Vec<IssuerConfig>) -> Self {
        Self {
            issuers: cfgs.into_iter().map(|c| Arc::new(Issuer::new(c))).collect(),
        }
    }

    /// Every issuer.
    pub fn all(&self) -> &[Arc<Issuer>] {
        &self.issuers
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The configured issuer whose `iss` is `iss`.
    pub fn find(&self, iss: &str) -> Option<&Arc<Issuer>> {
        self.issuers.iter().find(|i| i.cfg.issuer == iss)
    }

    /// Verifies a token claiming to come from one of the issuers; `None` when its `iss`
    /// is none of theirs.
    pub fn verify(
        &self,
        token: &str,
        alg: &str,
        kid: Option<&str>,
        clock: &dyn Clock,
    ) -> Option<External> {
        let iss = unverified_issuer(token)?;
        let issuer = self.find(&iss)?.clone();
        Some(verify_with(&issuer, token, alg, kid, clock))
    }
}

fn verify_with(
    issuer: &Arc<Issuer>,
    token: &str,
    alg: &str,
    kid: Option<&str>,
    clock: &dyn Clock,
) -> External {
    let Ok(alg) = alg.parse::<Algorithm>() else {
        return External::Refused(TokenError::Algorithm);
    };
    if !is_asymmetric(alg) || !issuer.cfg.algorithms.contains(&alg) {
        return External::Refused(TokenError::Algorithm);
    }
    let Some(kid) = kid else {
        return External::Refused(TokenError::UnknownKey);
    };
    if !issuer.has_kid(kid) {
        return External::UnknownKid(issuer.clone());
    }
    let keys = issuer.keys.read().unwrap_or_else(|p| p.into_inner());
    let Some((key, algs)) = keys.by_kid.get(kid) else {
        return External::UnknownKid(issuer.clone());
    };
    if !algs.contains(&alg) {
        return External::Refused(TokenError::Algorithm);
    }
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<Value>(token, key, &validation) {
        Ok(d) => d.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind;
            return External::Refused(match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Algorithm
                }
                _ => TokenError::Malformed,
            });
        }
    };
    drop(keys);
    match check_claims(&issuer.cfg, &claims, clock) {
        Ok(id) => External::Verified(id),
        Err(e) => External::Refused(e),
    }
}

fn check_claims(cfg: &IssuerConfig, c: &Value, clock: &dyn Clock) -> Result<Identity, TokenError> {
    let now = clock
        .system_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let leeway = LEEWAY.as_secs();
    let exp = c
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(TokenError::Claims)?;
    if now > exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = c.get("nbf").and_then(Value::as_u64)
        && nbf > now.saturating_add(leeway)
    {
        return Err(TokenError::NotYetValid);
    }
    if c.get("iss").and_then(Value::as_str) != Some(cfg.issuer.as_str()) {
        return Err(TokenError::Issuer);
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => *a == cfg.audience,
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str() == Some(cfg.audience.as_str())),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::Audience);
    }
    let sub = c
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(TokenError::Claims)?;
    let roles = match c.get(&cfg.roles_claim) {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    Ok(Identity {
        subject: sub.to_owned(),
        roles,
        session: None,
        expires: exp,
        issuer: cfg.issuer.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn issuer() -> Issuer {
        Issuer::new(IssuerConfig {
            issuer: "https://idp.example".into(),
            jwks_url: "https://idp.example/jwks".into(),
            audience: "api".into(),
            algorithms: vec![Algorithm::EdDSA],
            roles_claim: "roles".into(),
        })
    }

    #[test]
    fn refetches_are_bounded() {
        let i = issuer();
        let t0 = Instant::now();
        assert!(i.wants_fetch(t0, false), "never fetched");
        i.load_jwks(br#"{"keys":[]}"#, t0).unwrap();
        assert!(!i.wants_fetch(t0 + Duration::from_secs(1), false));
        assert!(
            !i.wants_fetch(t0 + Duration::from_secs(1), true),
            "within the minimum interval"
        );
        assert!(i.wants_fetch(t0 + REFETCH_MIN_INTERVAL, true));
        assert!(
            !i.wants_fetch(t0 + REFETCH_MIN_INTERVAL, true),
            "the slot was claimed"
        );
        assert!(
            i.wants_fetch(t0 + JWKS_MAX_AGE + REFETCH_MIN_INTERVAL, false),
            "stale"
        );
    }

    #[test]
    fn symmetric_and_unlisted_keys_are_ignored() {
        let i = issuer();
        let jwks = br#"{"keys":[
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"OKP","crv":"Ed25519","kid":"e","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        assert_eq!(i.load_jwks(jwks, Instant::now()).unwrap(), 1);
        assert!(i.has_kid("e") && !i.has_kid("h"));
    }

    #[test]
    fn claims_rules() {
        let cfg = issuer().cfg;
        let clock = ManualClock::new();
        let now = clock
            .system_time()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let ok = serde_json::json!({"iss": cfg.issuer, "aud": ["x", "api"], "sub": "u1", "exp": now + 60, "scope_roles": "a b", "roles": ["admin"]});
        let id = check_claims(&cfg, &ok, &clock).unwrap();
        assert_eq!(id.roles, vec!["admin"]);
        assert_eq!(id.session, None);
        let mut bad = ok.clone();
        bad["aud"] = "other".into();
        assert_eq!(
            check_claims(&cfg, &bad, &clock).unwrap_err(),
            TokenError::Audience
        );
        let mut bad = ok.clone();
        bad["exp"] = (now - 3600).into();
        assert_eq!(
            check_claims(&cfg, &bad, &clock).unwrap_err(),
            TokenError::Expired
        );
        let mut spaced = cfg.clone();
        spaced.roles_claim = "scope_roles".into();
        assert_eq!(
            check_claims(&spaced, &ok, &clock).unwrap().roles,
            vec!["a", "b"]
        );
    }
}
