//! The gateway's Ed25519 signing keys, their `kid`s and the JWKS.

use std::fmt;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};

/// Why a key file was refused. Messages never contain key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No `PRIVATE KEY` block.
    #[error(
        "no \"-----BEGIN PRIVATE KEY-----\" block found; expected Ed25519 keys in PKCS#8 PEM (openssl genpkey -algorithm ed25519)"
    )]
    NoKey,
    /// A block that is not valid base64 or not an Ed25519 PKCS#8 key.
    #[error("key {0} is not an Ed25519 private key in PKCS#8 PEM")]
    NotEd25519(usize),
    /// Key generation failed.
    #[error("cannot generate a key")]
    Generate,
}

pub(crate) struct SigningKey {
    pub(crate) kid: String,
    encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    x: String,
}

/// Signing keys: the last one signs, all verify. Each `kid` is the key's RFC 7638 JWK
/// thumbprint, so it needs no configuration and changes only with the key.
pub struct KeySet {
    keys: Vec<SigningKey>,
    ephemeral: bool,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("KeySet")
            .field("kids", &kids)
            .field("ephemeral", &self.ephemeral)
            .finish()
    }
}

fn signing_key(pkcs8: &[u8], index: usize) -> Result<SigningKey, KeyError> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
        .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8))
        .map_err(|_| KeyError::NotEd25519(index))?;
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    // RFC 7638: the thumbprint of the required members, in lexical order, no spaces.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()).as_ref());
    let decoding = DecodingKey::from_ed_components(&x).map_err(|_| KeyError::NotEd25519(index))?;
    Ok(SigningKey {
        kid,
        encoding: EncodingKey::from_ed_der(pkcs8),
        decoding,
        x,
    })
}

impl KeySet {
    /// Keys from PEM text holding one or more `PRIVATE KEY` blocks (Ed25519, PKCS#8). The
    /// last block signs new tokens; all verify, so a new key can be added before the old
    /// one is removed.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----";
        let mut keys = Vec::new();
        let mut rest = pem;
        while let Some(start) = rest.find(BEGIN) {
            let after = &rest[start + BEGIN.len()..];
            let end = after
                .find(END)
                .ok_or(KeyError::NotEd25519(keys.len() + 1))?;
            let b64: String = after[..end]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let der = STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| KeyError::NotEd25519(keys.len() + 1))?;
            keys.push(signing_key(&der, keys.len() + 1)?);
            rest = &after[end + END.len()..];
        }
        if keys.is_empty() {
            return Err(KeyError::NoKey);
        }
        Ok(Self {
            keys,
            ephemeral: false,
        })
    }

    /// A fresh key that lives as long as the process: tokens die with a restart and other
    /// instances cannot verify them. For trying things out only.
    pub fn ephemeral() -> Result<Self, KeyError> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        Ok(Self {
            keys: vec![signing_key(pkcs8.as_ref(), 1)?],
            ephemeral: true,
        })
    }

    /// A new key as PKCS#8 PEM, for `portcullis keys generate` and tests.
    pub fn generate_pem() -> Result<String, KeyError> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        let b64 = STANDARD.encode(pkcs8.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// Whether these keys were generated at start-up.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The `kid` of the signing key.
    pub fn signing_kid(&self) -> &str {
        &self.keys[self.keys.len() - 1].kid
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Signs `claims` with the newest key: `alg: EdDSA`, `typ: at+jwt`, its `kid`.
    pub fn sign<T: serde::Serialize>(
        &self,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let key = &self.keys[self.keys.len() - 1];
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
    }

    /// The public keys as a JWK Set (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": k.x,
                    "kid": k.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_kids_and_rotation() {
        let a = KeySet::generate_pem().unwrap();
        let b = KeySet::generate_pem().unwrap();
        let one = KeySet::from_pem(&a).unwrap();
        let both = KeySet::from_pem(&format!("{a}\n{b}")).unwrap();
        assert_eq!(both.keys.len(), 2);
        assert_eq!(both.keys[0].kid, one.signing_kid(), "a key keeps its kid");
        assert_ne!(both.signing_kid(), one.signing_kid(), "the last key signs");
        let jwks = both.jwks();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert_eq!(jwks["keys"][1]["kid"], both.signing_kid());
        assert!(
            jwks.to_string().find("\"d\"").is_none(),
            "no private part in the JWKS"
        );
    }

    #[test]
    fn bad_pem_is_refused_without_echo() {
        assert_eq!(
            KeySet::from_pem("nothing here").unwrap_err(),
            KeyError::NoKey
        );
        let e =
            KeySet::from_pem("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
                .unwrap_err();
        assert_eq!(e, KeyError::NotEd25519(1));
        assert!(!e.to_string().contains("c2VjcmV0"));
    }
}
