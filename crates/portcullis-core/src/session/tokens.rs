//! Refresh tokens: `rt1.<family id>.<secret>`, 128-bit family id and 256-bit secret from
//! the system's CSPRNG, base64url. Only `hash_secret(secret)` is ever stored.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PREFIX: &str = "rt1.";

/// A refresh token, split into its family id and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// The family (session) id, base64url of 16 bytes.
    pub family: String,
    secret: [u8; 32],
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshToken")
            .field("family", &self.family)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A string that is not a refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a refresh token")]
pub struct TokenParseError;

impl RefreshToken {
    /// A token for a new family.
    pub fn new_family() -> Self {
        let mut id = [0u8; 16];
        let _ = SystemRandom::new().fill(&mut id);
        Self::next_in(&URL_SAFE_NO_PAD.encode(id))
    }

    /// A new token of `family`.
    pub fn next_in(family: &str) -> Self {
        let mut secret = [0u8; 32];
        let _ = SystemRandom::new().fill(&mut secret);
        Self {
            family: family.to_owned(),
            secret,
        }
    }

    /// Parses `rt1.<family>.<secret>`.
    pub fn parse(s: &str) -> Result<Self, TokenParseError> {
        let rest = s.strip_prefix(PREFIX).ok_or(TokenParseError)?;
        let (family, secret) = rest.split_once('.').ok_or(TokenParseError)?;
        let fam = URL_SAFE_NO_PAD
            .decode(family)
            .map_err(|_| TokenParseError)?;
        let sec = URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| TokenParseError)?;
        if fam.len() != 16 || sec.len() != 32 {
            return Err(TokenParseError);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(&sec);
        Ok(Self {
            family: family.to_owned(),
            secret: out,
        })
    }

    /// The token as the client holds it.
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}{}.{}",
            self.family,
            URL_SAFE_NO_PAD.encode(self.secret)
        )
    }

    /// What the store keeps: the hash of the secret.
    pub fn hash(&self) -> String {
        hash_secret(&self.secret)
    }

    /// Rebuilds a token of this family from a successor secret opened with
    /// [`open_successor`].
    pub fn with_secret(&self, secret: [u8; 32]) -> Self {
        Self {
            family: self.family.clone(),
            secret,
        }
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// SHA-256 of a secret, base64url.
pub fn hash_secret(secret: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, secret).as_ref())
}

fn pad(prev: &RefreshToken) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, prev.secret());
    let tag = hmac::sign(&key, b"portcullis refresh successor v1");
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// `next`'s secret, sealed so that only the holder of `prev` can open it: XOR with
/// HMAC-SHA256(prev's secret, a fixed label). Each `prev` seals exactly one successor, so
/// the pad is never reused.
pub fn seal_successor(prev: &RefreshToken, next: &RefreshToken) -> String {
    let p = pad(prev);
    let sealed: Vec<u8> = next.secret().iter().zip(p).map(|(a, b)| a ^ b).collect();
    URL_SAFE_NO_PAD.encode(sealed)
}

/// Opens what [`seal_successor`] sealed, with the previous token.
pub fn open_successor(prev: &RefreshToken, sealed: &str) -> Option<RefreshToken> {
    let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if bytes.len() != 32 {
        return None;
    }
    let p = pad(prev);
    let mut secret = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        secret[i] = b ^ p[i];
    }
    Some(prev.with_secret(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let t = RefreshToken::new_family();
        let s = t.encode();
        assert!(s.starts_with("rt1."));
        assert_eq!(RefreshToken::parse(&s).unwrap(), t);
        for bad in [
            "",
            "rt1.",
            "rt1.abc",
            "rt2.x.y",
            &s[..s.len() - 2],
            &format!("{s}AA"),
        ] {
            assert!(RefreshToken::parse(bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{t:?}").contains(&s[s.rfind('.').unwrap() + 1..]));
    }

    #[test]
    fn successors_open_only_with_the_previous_token() {
        let prev = RefreshToken::new_family();
        let next = RefreshToken::next_in(&prev.family);
        let sealed = seal_successor(&prev, &next);
        assert_eq!(open_successor(&prev, &sealed).unwrap(), next);
        let other = RefreshToken::next_in(&prev.family);
        assert_ne!(open_successor(&other, &sealed).unwrap(), next);
        assert_ne!(prev.hash(), next.hash());
        assert!(!sealed.contains(&next.encode()[4..]));
    }
}
