//! Verifying access tokens, and the cache that makes a client's repeated requests cost one
//! signature check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::KeySet;
use crate::Clock;

/// Tolerated clock difference for `exp`, `nbf` and `iat` (RFC 7519 allows "a few minutes";
/// 30 s suffices between hosts kept in time by NTP).
pub const LEEWAY: Duration = Duration::from_secs(30);

/// Longest token considered; beyond, it is refused unread.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Verified tokens kept (each holds an [`Identity`]).
const CACHE_ENTRIES: usize = 16 * 1024;
const CACHE_SHARDS: usize = 16;

/// The claims of the gateway's access tokens (DESIGN §4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The subject.
    pub sub: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// The refresh family (session) the token belongs to.
    pub sid: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Unique id.
    pub jti: String,
}

impl AccessClaims {
    /// Claims for `sub` in session `sid`, valid from the clock's now for `ttl`.
    pub fn new(
        sub: &str,
        roles: &[String],
        sid: &str,
        issuer: &str,
        audience: &str,
        clock: &dyn Clock,
        ttl: Duration,
    ) -> Self {
        let now = clock
            .system_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut jti = [0u8; 16];
        let _ = SystemRandom::new().fill(&mut jti);
        Self {
            sub: sub.to_owned(),
            roles: roles.to_vec(),
            sid: sid.to_owned(),
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            exp: now + ttl.as_secs(),
            iat: now,
            nbf: now,
            jti: URL_SAFE_NO_PAD.encode(jti),
        }
    }
}

/// Who a verified token says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The subject.
    pub subject: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// The session (refresh family), for revocation.
    pub session: Option<String>,
    /// Expiry, seconds since the epoch.
    pub expires: u64,
    /// Who issued the token.
    pub issuer: String,
}

impl Identity {
    /// Whether the identity has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a token was refused. The [`reason`](TokenError::reason) goes into the
/// `invalid_token` event and the log, never into the client's answer in more detail than
/// "invalid token".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or too long.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not the key's pinned algorithm (`none`, `HS256`, …).
    #[error("algorithm not accepted")]
    Algorithm,
    /// No key with that `kid`.
    #[error("unknown key id")]
    UnknownKey,
    /// `typ` is not `at+jwt`.
    #[error("wrong token type")]
    Type,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// Past `exp`.
    #[error("expired")]
    Expired,
    /// Before `nbf` (or issued in the future).
    #[error("not yet valid")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("wrong issuer")]
    Issuer,
    /// Wrong `aud`.
    #[error("wrong audience")]
    Audience,
    /// A required claim is missing or of the wrong type.
    #[error("missing or malformed claim")]
    Claims,
    /// The session was revoked (logout, refresh reuse).
    #[error("session revoked")]
    Revoked,
}

impl TokenError {
    /// A stable word for logs, events and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_kid",
            Self::Type => "typ",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Claims => "claims",
            Self::Revoked => "revoked",
        }
    }
}

/// The few header members we read, untrusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawHeader {
    /// `alg`.
    pub alg: Option<String>,
    /// `typ`.
    pub typ: Option<String>,
    /// `kid`.
    pub kid: Option<String>,
}

/// Reads a token's header without trusting it.
pub fn read_header(token: &str) -> Result<RawHeader, TokenError> {
    let head = token.split('.').next().ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| TokenError::Malformed)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    let Value::Object(map) = v else {
        return Err(TokenError::Malformed);
    };
    let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(RawHeader {
        alg: text("alg"),
        typ: text("typ"),
        kid: text("kid"),
    })
}

/// What a token's untrusted header said, truncated for logs (DESIGN §9: 128 characters).
pub fn describe_header(token: &str) -> String {
    let trunc = |s: Option<String>| {
        s.map(|s| s.chars().take(128).collect::<String>())
            .unwrap_or_else(|| "-".into())
    };
    match read_header(token) {
        Ok(h) => format!(
            "alg={} typ={} kid={}",
            trunc(h.alg),
            trunc(h.typ),
            trunc(h.kid)
        ),
        Err(_) => "unreadable header".into(),
    }
}

struct Cached {
    identity: Arc<Identity>,
}

/// Verified tokens by the SHA-256 of their text, in shards.
type CacheShards = Box<[Mutex<HashMap<[u8; 32], Cached>>]>;

/// Verifies the gateway's own access tokens.
pub struct Verifier {
    keys: Arc<KeySet>,
    issuer: String,
    audience: String,
    clock: Arc<dyn Clock>,
    cache: CacheShards,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for tokens from `issuer` for `audience`, signed by `keys`.
    pub fn new(keys: Arc<KeySet>, issuer: &str, audience: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            clock,
            cache: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    /// The signing keys.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    fn now_secs(&self) -> u64 {
        self.clock
            .system_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Verifies `token`, from the cache when it was verified before and has not expired.
    pub fn verify(&self, token: &str) -> Result<Arc<Identity>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let d = digest(&SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(d.as_ref());
        let shard = &self.cache[usize::from(key[0]) % CACHE_SHARDS];
        let now = self.now_secs();
        {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = map.get(&key) {
                if now <= c.identity.expires + LEEWAY.as_secs() {
                    return Ok(c.identity.clone());
                }
                map.remove(&key);
            }
        }
        let identity = Arc::new(self.verify_uncached(token)?);
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_ENTRIES / CACHE_SHARDS {
            // Expired entries first; otherwise any one makes room.
            let victim = map
                .iter()
                .find(|(_, c)| now > c.identity.expires + LEEWAY.as_secs())
                .or_else(|| map.iter().next())
                .map(|(k, _)| *k);
            if let Some(v) = victim {
                map.remove(&v);
            }
        }
        map.insert(
            key,
            Cached {
                identity: identity.clone(),
            },
        );
        Ok(identity)
    }

    /// Whether `kid` is one of the gateway's own keys.
    pub fn is_own_kid(&self, kid: &str) -> bool {
        self.keys.get(kid).is_some()
    }

    /// Full verification, without the cache.
    pub fn verify_uncached(&self, token: &str) -> Result<Identity, TokenError> {
        if token.len() > MAX_TOKEN_BYTES || token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let header = read_header(token)?;
        // The algorithm is the key's, never the token's: only EdDSA keys exist here.
        if header.alg.as_deref() != Some("EdDSA") {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(TokenError::Type);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time, issuer and audience are checked below, on the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data =
            jsonwebtoken::decode::<Value>(token, &key.decoding, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::Signature,
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        TokenError::Algorithm
                    }
                    _ => TokenError::Malformed,
                }
            })?;
        let claims: AccessClaims =
            serde_json::from_value(data.claims.clone()).map_err(|_| TokenError::Claims)?;
        let now = self.now_secs();
        let leeway = LEEWAY.as_secs();
        if now > claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now.saturating_add(leeway) || claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::Audience);
        }
        if claims.sub.is_empty() || claims.sid.is_empty() || claims.jti.is_empty() {
            return Err(TokenError::Claims);
        }
        Ok(Identity {
            subject: claims.sub,
            roles: claims.roles,
            session: Some(claims.sid),
            expires: claims.exp,
            issuer: claims.iss,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    fn setup() -> (Arc<KeySet>, Verifier, ManualClock) {
        let keys = Arc::new(KeySet::ephemeral().unwrap());
        let clock = ManualClock::new();
        let v = Verifier::new(keys.clone(), "portcullis", "api", Arc::new(clock.clone()));
        (keys, v, clock)
    }

    fn claims(clock: &ManualClock) -> AccessClaims {
        AccessClaims::new(
            "alice",
            &["user".into()],
            "sess1",
            "portcullis",
            "api",
            clock,
            Duration::from_secs(600),
        )
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn a_good_token_verifies_and_is_cached() {
        let (keys, v, clock) = setup();
        let t = keys.sign(&claims(&clock)).unwrap();
        let id = v.verify(&t).unwrap();
        assert_eq!(id.subject, "alice");
        assert!(id.has_role("user"));
        assert_eq!(id.session.as_deref(), Some("sess1"));
        assert!(
            Arc::ptr_eq(&id, &v.verify(&t).unwrap()),
            "second verification from the cache"
        );
    }

    #[test]
    fn expiry_holds_even_for_cached_tokens() {
        let (keys, v, clock) = setup();
        let t = keys.sign(&claims(&clock)).unwrap();
        v.verify(&t).unwrap();
        clock.advance(Duration::from_secs(600) + LEEWAY + Duration::from_secs(1));
        assert_eq!(v.verify(&t).unwrap_err(), TokenError::Expired);
    }

    #[test]
    fn attack_table() {
        let (keys, v, clock) = setup();
        let good = claims(&clock);
        let kid = keys.signing_kid().to_owned();
        let other = KeySet::ephemeral().unwrap();
        let sign_with = |c: &AccessClaims| keys.sign(c).unwrap();
        let header = |h: Value, c: &AccessClaims| {
            let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap());
            format!("{}.{}.", b64(&h), body)
        };
        let hs256 = {
            // HS256 "signed" with the public key material as the secret.
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(kid.clone());
            h.typ = Some("at+jwt".into());
            let secret = keys.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
            jsonwebtoken::encode(
                &h,
                &good,
                &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
            )
            .unwrap()
        };
        let mut expired = good.clone();
        expired.exp = good.iat - 3600;
        let mut future = good.clone();
        future.nbf = good.iat + 3600;
        let mut wrong_iss = good.clone();
        wrong_iss.iss = "evil".into();
        let mut wrong_aud = good.clone();
        wrong_aud.aud = "other".into();
        let good_token = sign_with(&good);
        let truncated = good_token[..good_token.len() - 10].to_owned();
        let mut parts: Vec<&str> = good_token.split('.').collect();
        let tampered_body =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json!({"sub": "admin"})).unwrap());
        parts[1] = &tampered_body;
        let tampered = parts.join(".");
        let cases: Vec<(&str, String, TokenError)> = vec![
            (
                "alg none",
                header(json!({"alg": "none", "typ": "at+jwt", "kid": kid}), &good),
                TokenError::Algorithm,
            ),
            (
                "alg NONE",
                header(json!({"alg": "NONE", "typ": "at+jwt", "kid": kid}), &good),
                TokenError::Algorithm,
            ),
            ("HS256 with the public key", hs256, TokenError::Algorithm),
            ("expired", sign_with(&expired), TokenError::Expired),
            ("not yet valid", sign_with(&future), TokenError::NotYetValid),
            ("wrong iss", sign_with(&wrong_iss), TokenError::Issuer),
            ("wrong aud", sign_with(&wrong_aud), TokenError::Audience),
            (
                "other key",
                other.sign(&good).unwrap(),
                TokenError::UnknownKey,
            ),
            (
                "kid with path",
                header(
                    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "../../etc/passwd"}),
                    &good,
                ),
                TokenError::UnknownKey,
            ),
            (
                "kid with sql",
                header(
                    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "' OR 1=1 --"}),
                    &good,
                ),
                TokenError::UnknownKey,
            ),
            (
                "no kid",
                header(json!({"alg": "EdDSA", "typ": "at+jwt"}), &good),
                TokenError::UnknownKey,
            ),
            (
                "wrong typ",
                header(json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}), &good),
                TokenError::Type,
            ),
            (
                "no typ",
                header(json!({"alg": "EdDSA", "kid": kid}), &good),
                TokenError::Type,
            ),
            (
                "jku ignored, bad sig",
                header(
                    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jku": "http://127.0.0.1:1/jwks"}),
                    &good,
                ),
                TokenError::Signature,
            ),
            ("tampered claims", tampered, TokenError::Signature),
            ("truncated", truncated, TokenError::Signature),
            ("garbage", "not.a.token".into(), TokenError::Malformed),
            ("two parts", "abc.def".into(), TokenError::Malformed),
            ("empty", String::new(), TokenError::Malformed),
            (
                "huge",
                "a".repeat(MAX_TOKEN_BYTES + 1),
                TokenError::Malformed,
            ),
        ];
        for (name, token, want) in cases {
            assert_eq!(v.verify(&token).unwrap_err(), want, "{name}");
        }
        assert!(v.verify(&good_token).is_ok());
    }

    #[test]
    fn header_descriptions_are_truncated() {
        let long = "k".repeat(500);
        let t = format!("{}.e30.", b64(&json!({"alg": "x", "kid": long})));
        let d = describe_header(&t);
        assert!(d.len() < 200, "{d}");
    }
}
