//! CSRF synchronizer tokens: HMAC-signed, bound to a session, kept in the shared store.
//!
//! A token is
//!
//! ```text
//! v1.<base64url(nonce 16 B ‖ issued-at 8 B, seconds, big-endian)>.<base64url(HMAC-SHA256)>
//! ```
//!
//! where the MAC covers `binding-id ‖ nonce ‖ issued-at`, and the binding id is a SHA-256
//! of what the token is bound to ([`Binding`]: the refresh family `sid`, or a cookie's
//! value), so neither the store nor a log ever holds a session id or a cookie value.
//!
//! Each session keeps a **ring** of its last [`RING`] tokens in the store, under
//! `{prefix}:csrf:{binding-id}` as `nonce:iat` entries (never the MAC: reading the store
//! does not give a usable token), with a time to live of `ttl`, so a session's ring
//! disappears with its newest token.
//!
//! - [`CsrfTokens::issue`] hands out the newest token of the ring while it is younger than
//!   `ttl / 2`, so every tab of a session shares one token; an older one is replaced by a
//!   new entry pushed onto the ring, and the previous tokens stay valid until their own
//!   expiry (a tab that fetched its token an hour ago keeps working).
//! - [`CsrfTokens::verify`] checks, in order: the shape (exact length, canonical base64,
//!   nothing read beyond); the signature with every key (constant-time compare), which
//!   also checks the binding; the expiry (`iat + ttl` on the injected [`Clock`], and no
//!   more than [`FUTURE_LEEWAY`] in the future); the membership in the session's ring.
//! - [`CsrfTokens::revoke`] (logout) deletes the ring: every token of the session is
//!   [`Reason::Revoked`] from then on.
//!
//! Keys rotate: the first key signs, all verify ([`CsrfKey::derive`] from a configured
//! secret, so every instance signs alike).
//!
//! # Concurrency
//!
//! Two instances issuing for a fresh session at once agree on one token: the first entry
//! is written with set-if-absent, and the loser reads back the winner's entry. Replacing a
//! stale token is a read followed by a write and a read back: two instances rotating the
//! same ring at the same moment may each write, and the later write wins. Each re-reads the
//! ring and hands out what it holds, so they usually converge; when the reads interleave
//! exactly, one entry is lost and the token carrying it verifies as
//! [`Reason::Revoked`]: the page fetches a new one (once every `ttl / 2`, at worst). For
//! the same reason a `revoke` racing an `issue` of the same session can be overwritten by
//! the ring that `issue` read just before: the gateway revokes a logged-out session's `sid`
//! itself, so a token bound to it has no session left to ride on.
//!
//! # Fail mode
//!
//! While the store is unavailable (the breaker is open, Redis is down or slow):
//!
//! - [`CsrfMode::Stateless`] (the default): the shape, the signature (so the binding) and
//!   the expiry are still checked and a token that passes is
//!   [`Verdict::ValidStateless`]: tokens issued before the outage keep working. A token
//!   revoked or pushed out of its ring passes too until the store is back: the price of
//!   serving through the outage.
//! - [`CsrfMode::Deny`]: a well-formed, well-signed, unexpired token gets
//!   [`Verdict::Unavailable`] (the caller answers 503); a bad one is still refused as such.
//!
//! Issuing needs the store in both modes ([`StoreUnavailable`]): a token that is in no
//! ring would be refused as soon as the store is back.
//!
//! # Security
//!
//! - The binding id is an unkeyed hash, so it hides a high-entropy value (a session id,
//!   a random session cookie) but not a guessable one: bind to a random session value.
//! - The secret given to [`CsrfKey::derive`] must hold at least 256 bits of entropy and be
//!   the same on every instance (tokens issued by one are verified by the others).
//! - A token is as secret as a session cookie: send it in a header or a form field, never
//!   in a URL.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use portcullis_core::ManualClock;
//! use portcullis_core::csrf::{Binding, CsrfKey, CsrfMode, CsrfTokens, Reason, Verdict};
//! use portcullis_core::store::{MemoryStore, SharedStore};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let clock = Arc::new(ManualClock::new());
//! let store = SharedStore::memory(MemoryStore::new(1000, clock.clone()), "portcullis");
//! let key = CsrfKey::derive(b"32 random bytes from the secret file.");
//! let ttl = Duration::from_secs(7200);
//! let tokens = CsrfTokens::new(store, vec![key], clock.clone(), ttl, CsrfMode::Stateless);
//!
//! let session = Binding::session("family-1");
//! let token = tokens.issue(&session).await.unwrap();
//! assert_eq!(tokens.issue(&session).await.unwrap(), token, "tabs share the token");
//! assert_eq!(tokens.verify(&session, &token).await, Verdict::Valid);
//!
//! let other = Binding::session("family-2");
//! assert_eq!(tokens.verify(&other, &token).await, Verdict::Invalid(Reason::BadSignature));
//!
//! clock.advance(ttl);
//! assert_eq!(tokens.verify(&session, &token).await, Verdict::Invalid(Reason::Expired));
//! # });
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::hmac::{self, HMAC_SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;

use crate::Clock;
use crate::store::{FailMode, Routed, SharedStore};

/// Tokens a session's ring keeps: the newest and three before it. Rotation every
/// `ttl / 2` leaves at most three unexpired at once; the fourth slot absorbs clock skew
/// between instances.
pub const RING: usize = 4;

/// How far in the future a token's issue time may be: clock differences between instances
/// (the same tolerance as access tokens' `iat`). A token further ahead was not made by an
/// instance whose clock is right.
pub const FUTURE_LEEWAY: Duration = Duration::from_secs(30);

/// The HKDF label of CSRF keys: a key derived from a secret used elsewhere too is
/// unrelated to it.
const KEY_LABEL: &[u8] = b"portcullis csrf v1";
/// The domain of binding ids.
const BINDING_LABEL: &[u8] = b"portcullis csrf binding v1\0";
const PREFIX: &str = "v1.";
const NONCE: usize = 16;
const PAYLOAD: usize = NONCE + 8;
/// base64url of the 24-byte payload.
const PAYLOAD_B64: usize = 32;
/// base64url of the 32-byte MAC.
const MAC_B64: usize = 43;
/// Every token has exactly this length.
pub const TOKEN_LEN: usize = PREFIX.len() + PAYLOAD_B64 + 1 + MAC_B64;
/// Store key kind.
const KIND: &str = "csrf";
/// Attempts of `issue` against concurrent writers before answering 503.
const ISSUE_ATTEMPTS: usize = 4;

/// A key that signs and verifies CSRF tokens. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct CsrfKey(hmac::Key);

impl CsrfKey {
    /// The key derived from `secret` (HKDF-SHA256, label `portcullis csrf v1`): every
    /// instance given the same secret signs alike. The secret must hold at least 256 bits
    /// of entropy.
    pub fn derive(secret: &[u8]) -> Self {
        let prk = Salt::new(HKDF_SHA256, &[]).extract(secret);
        let okm = prk
            .expand(&[KEY_LABEL], HMAC_SHA256)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self(hmac::Key::from(okm))
    }

    /// A random key, for one instance whose tokens need not survive it.
    pub fn random() -> Self {
        Self(
            hmac::Key::generate(HMAC_SHA256, &SystemRandom::new())
                .expect("the system's random number generator works"),
        )
    }
}

impl fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfKey([redacted])")
    }
}

/// What a token is bound to. Only a hash of it is kept, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Binding([u8; 32]);

impl Binding {
    /// A session of the gateway: its refresh family, the access tokens' `sid`.
    pub fn session(sid: &str) -> Self {
        Self::new(b"session", sid)
    }

    /// A session known by a cookie's value (before login, or the upstream's own session).
    pub fn cookie(value: &str) -> Self {
        Self::new(b"cookie", value)
    }

    fn new(kind: &[u8], value: &str) -> Self {
        let mut input = Vec::with_capacity(BINDING_LABEL.len() + kind.len() + 1 + value.len());
        input.extend_from_slice(BINDING_LABEL);
        input.extend_from_slice(kind);
        input.push(0);
        input.extend_from_slice(value.as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(digest(&SHA256, &input).as_ref());
        Self(id)
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Binding([hashed])")
    }
}

/// What [`CsrfTokens::verify`] answers while the store is unavailable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CsrfMode {
    /// Check the signature, binding and expiry; [`Verdict::ValidStateless`].
    #[default]
    Stateless,
    /// [`Verdict::Unavailable`]: the caller refuses with 503.
    Deny,
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not a token: wrong length, prefix or encoding.
    Malformed,
    /// A token, but not signed for this binding by any current key: bound to another
    /// session, signed with a retired key, or tampered with.
    BadSignature,
    /// Past `iat + ttl`, or issued further in the future than [`FUTURE_LEEWAY`].
    Expired,
    /// Not (or no longer) in the session's ring: the session logged out, or newer tokens
    /// pushed it out.
    Revoked,
}

impl Reason {
    /// A stable label: `malformed`, `bad_signature`, `expired`, `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// A short description, for logs and security events.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Malformed => "not a CSRF token",
            Self::BadSignature => "not signed for this session",
            Self::Expired => "expired, or issued in the future",
            Self::Revoked => "revoked or replaced",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The answer of [`CsrfTokens::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Well signed, unexpired, in the session's ring.
    Valid,
    /// Well signed and unexpired; the store could not say whether it is still in the ring
    /// ([`CsrfMode::Stateless`]).
    ValidStateless,
    /// Refused.
    Invalid(Reason),
    /// Well signed and unexpired, but the store could not answer ([`CsrfMode::Deny`]).
    Unavailable,
}

impl Verdict {
    /// Whether the request may go on.
    pub fn is_valid(self) -> bool {
        matches!(self, Self::Valid | Self::ValidStateless)
    }
}

/// The store could not answer: no token can be issued (the caller answers 503).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the shared store is unavailable")]
pub struct StoreUnavailable;

/// One token of a ring: what the store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    nonce: [u8; NONCE],
    /// Seconds since the Unix epoch.
    iat: u64,
}

impl Entry {
    fn encode(&self, out: &mut String) {
        URL_SAFE_NO_PAD.encode_string(self.nonce, out);
        out.push(':');
        out.push_str(&self.iat.to_string());
    }

    fn decode(s: &str) -> Option<Self> {
        let (nonce, iat) = s.split_once(':')?;
        let mut n = [0u8; NONCE];
        if URL_SAFE_NO_PAD.decode_slice(nonce, &mut n).ok()? != NONCE {
            return None;
        }
        Some(Self {
            nonce: n,
            iat: iat.parse().ok()?,
        })
    }

    /// When it expires, in ms since the epoch.
    fn expires_ms(&self, ttl_ms: u64) -> u64 {
        self.iat.saturating_mul(1000).saturating_add(ttl_ms)
    }
}

/// A session's ring, oldest first. Unreadable entries are dropped: at worst their tokens
/// are refused as revoked.
fn parse_ring(raw: &[u8]) -> Vec<Entry> {
    std::str::from_utf8(raw)
        .map(|s| s.split(',').filter_map(Entry::decode).collect())
        .unwrap_or_default()
}

fn encode_ring(ring: &[Entry]) -> Bytes {
    let mut s = String::with_capacity(ring.len() * 34);
    for (i, e) in ring.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        e.encode(&mut s);
    }
    Bytes::from(s)
}

/// The ring after pushing `entry` at `now_ms`: expired entries dropped, the newest
/// [`RING`] kept.
fn push(mut ring: Vec<Entry>, entry: Entry, now_ms: u64, ttl_ms: u64) -> Vec<Entry> {
    ring.retain(|e| e.expires_ms(ttl_ms) > now_ms);
    ring.push(entry);
    let excess = ring.len().saturating_sub(RING);
    ring.drain(..excess);
    ring
}

/// The newest entry of `ring` if it is younger than `ttl / 2` at `now_ms`, and not from
/// further in the future than [`FUTURE_LEEWAY`] (an instance whose clock runs ahead): a
/// token this instance would refuse is never handed out.
fn fresh(ring: &[Entry], now_ms: u64, ttl_ms: u64) -> Option<Entry> {
    let newest = ring.last()?;
    let issued_ms = newest.iat.saturating_mul(1000);
    let age = now_ms.saturating_sub(issued_ms);
    (age < ttl_ms / 2 && issued_ms <= now_ms.saturating_add(leeway_ms())).then_some(*newest)
}

fn leeway_ms() -> u64 {
    u64::try_from(FUTURE_LEEWAY.as_millis()).unwrap_or(u64::MAX)
}

struct Inner {
    store: SharedStore,
    keys: Vec<CsrfKey>,
    clock: Arc<dyn Clock>,
    ttl_ms: u64,
    mode: CsrfMode,
}

/// Issues and verifies the CSRF tokens of every session. Clones share everything.
#[derive(Clone)]
pub struct CsrfTokens {
    inner: Arc<Inner>,
}

impl fmt::Debug for CsrfTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfTokens")
            .field("keys", &self.inner.keys.len())
            .field("ttl", &Duration::from_millis(self.inner.ttl_ms))
            .field("mode", &self.inner.mode)
            .field("store", &self.inner.store)
            .finish()
    }
}

impl CsrfTokens {
    /// Tokens valid for `ttl` (at least one second), kept in `store`, answering by `mode`
    /// while the store is unavailable.
    ///
    /// `keys`: the first signs, all verify (rotation).
    ///
    /// # Panics
    ///
    /// When `keys` is empty: nothing could sign.
    pub fn new(
        store: SharedStore,
        keys: Vec<CsrfKey>,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        mode: CsrfMode,
    ) -> Self {
        assert!(!keys.is_empty(), "CSRF tokens need at least one key");
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1000);
        Self {
            inner: Arc::new(Inner {
                store,
                keys,
                clock,
                ttl_ms,
                mode,
            }),
        }
    }

    /// The session's current token, shared by its tabs: the newest in the session's ring
    /// if it is younger than `ttl / 2`, else a new one pushed onto the ring (the ring keeps
    /// the last [`RING`], each valid until its own expiry). Err only when the store is
    /// unavailable (the caller answers 503).
    pub async fn issue(&self, binding: &Binding) -> Result<String, StoreUnavailable> {
        let store = &self.inner.store;
        let key = self.ring_key(binding);
        let ttl = Duration::from_millis(self.inner.ttl_ms);
        for _ in 0..ISSUE_ATTEMPTS {
            let now = self.now_ms();
            let Routed::Shared(raw) = store.get(&key, FailMode::Deny).await else {
                return Err(StoreUnavailable);
            };
            let ring = raw.as_deref().map(parse_ring).unwrap_or_default();
            if let Some(e) = fresh(&ring, now, self.inner.ttl_ms) {
                return Ok(self.token(binding, &e));
            }
            let entry = Entry {
                nonce: random_nonce(),
                iat: now / 1000,
            };
            if raw.is_none() {
                // A fresh session: the first writer wins, the others read its entry back.
                match store
                    .set_nx(&key, encode_ring(&[entry]), ttl, FailMode::Deny)
                    .await
                {
                    Routed::Shared(true) => return Ok(self.token(binding, &entry)),
                    Routed::Shared(false) => continue,
                    _ => return Err(StoreUnavailable),
                }
            }
            let next = push(ring, entry, now, self.inner.ttl_ms);
            if store
                .set(&key, encode_ring(&next), ttl, FailMode::Deny)
                .await
                .value()
                .is_none()
            {
                return Err(StoreUnavailable);
            }
            // Read back: a concurrent rotation may have written after us; hand out what
            // the ring holds, so the instances agree on one token.
            match store.get(&key, FailMode::Deny).await {
                Routed::Shared(Some(raw)) => {
                    let ring = parse_ring(&raw);
                    if ring.last() == Some(&entry) {
                        return Ok(self.token(binding, &entry));
                    }
                    if let Some(e) = fresh(&ring, now, self.inner.ttl_ms) {
                        return Ok(self.token(binding, &e));
                    }
                    // Revoked meanwhile: start over.
                }
                Routed::Shared(None) => {}
                _ => return Err(StoreUnavailable),
            }
        }
        Err(StoreUnavailable)
    }

    /// Whether `presented` is a valid token of `binding`'s session.
    pub async fn verify(&self, binding: &Binding, presented: &str) -> Verdict {
        let Some((entry, mac)) = parse_token(presented) else {
            return Verdict::Invalid(Reason::Malformed);
        };
        let msg = signed_bytes(binding, &entry);
        if !self
            .inner
            .keys
            .iter()
            .any(|k| hmac::verify(&k.0, &msg, &mac).is_ok())
        {
            return Verdict::Invalid(Reason::BadSignature);
        }
        let now = self.now_ms();
        if entry.expires_ms(self.inner.ttl_ms) <= now
            || entry.iat.saturating_mul(1000) > now.saturating_add(leeway_ms())
        {
            return Verdict::Invalid(Reason::Expired);
        }
        let mode = match self.inner.mode {
            CsrfMode::Stateless => FailMode::Stateless,
            CsrfMode::Deny => FailMode::Deny,
        };
        match self.inner.store.get(&self.ring_key(binding), mode).await {
            Routed::Shared(Some(raw)) if parse_ring(&raw).contains(&entry) => Verdict::Valid,
            Routed::Shared(_) => Verdict::Invalid(Reason::Revoked),
            _ => match self.inner.mode {
                CsrfMode::Stateless => Verdict::ValidStateless,
                CsrfMode::Deny => Verdict::Unavailable,
            },
        }
    }

    /// Logout: every token of the session stops working. While the store is unavailable
    /// nothing is deleted (see the module's `# Fail mode`).
    pub async fn revoke(&self, binding: &Binding) {
        let _ = self
            .inner
            .store
            .delete(&self.ring_key(binding), FailMode::Deny)
            .await;
    }

    fn ring_key(&self, binding: &Binding) -> String {
        self.inner
            .store
            .key(KIND, &URL_SAFE_NO_PAD.encode(binding.0))
    }

    fn now_ms(&self) -> u64 {
        self.inner
            .clock
            .system_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn token(&self, binding: &Binding, entry: &Entry) -> String {
        let tag = hmac::sign(&self.inner.keys[0].0, &signed_bytes(binding, entry));
        let mut t = String::with_capacity(TOKEN_LEN);
        t.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(payload(entry), &mut t);
        t.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut t);
        t
    }
}

fn random_nonce() -> [u8; NONCE] {
    let mut n = [0u8; NONCE];
    SystemRandom::new()
        .fill(&mut n)
        .expect("the system's random number generator works");
    n
}

fn payload(entry: &Entry) -> [u8; PAYLOAD] {
    let mut p = [0u8; PAYLOAD];
    p[..NONCE].copy_from_slice(&entry.nonce);
    p[NONCE..].copy_from_slice(&entry.iat.to_be_bytes());
    p
}

/// What the MAC covers: fixed-length fields, so no two inputs read alike.
fn signed_bytes(binding: &Binding, entry: &Entry) -> [u8; 32 + PAYLOAD] {
    let mut m = [0u8; 32 + PAYLOAD];
    m[..32].copy_from_slice(&binding.0);
    m[32..].copy_from_slice(&payload(entry));
    m
}

/// The entry and MAC of a token of the right shape; `None` for anything else, read no
/// further than [`TOKEN_LEN`] bytes.
fn parse_token(t: &str) -> Option<(Entry, [u8; 32])> {
    if t.len() != TOKEN_LEN {
        return None;
    }
    let rest = t.strip_prefix(PREFIX)?;
    let (payload_b64, mac_b64) = rest.split_at_checked(PAYLOAD_B64)?;
    let mac_b64 = mac_b64.strip_prefix('.')?;
    let mut p = [0u8; PAYLOAD];
    let mut mac = [0u8; 32];
    // Canonical base64 only (no stray trailing bits): one spelling per token.
    if URL_SAFE_NO_PAD.decode_slice(payload_b64, &mut p).ok()? != PAYLOAD
        || URL_SAFE_NO_PAD.decode_slice(mac_b64, &mut mac).ok()? != 32
    {
        return None;
    }
    let mut nonce = [0u8; NONCE];
    nonce.copy_from_slice(&p[..NONCE]);
    let mut iat = [0u8; 8];
    iat.copy_from_slice(&p[NONCE..]);
    Some((
        Entry {
            nonce,
            iat: u64::from_be_bytes(iat),
        },
        mac,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(n: u8, iat: u64) -> Entry {
        Entry {
            nonce: [n; NONCE],
            iat,
        }
    }

    #[test]
    fn ring_push_table() {
        let ttl = 100_000; // 100 s
        struct Case {
            name: &'static str,
            ring: Vec<Entry>,
            now_ms: u64,
            want: Vec<u8>,
        }
        let cases = [
            Case {
                name: "empty ring",
                ring: vec![],
                now_ms: 1_000_000,
                want: vec![9],
            },
            Case {
                name: "live entries kept, oldest first",
                ring: vec![e(1, 950), e(2, 990)],
                now_ms: 1_000_000,
                want: vec![1, 2, 9],
            },
            Case {
                name: "expired entries dropped",
                ring: vec![e(1, 900), e(2, 950)],
                now_ms: 1_000_000,
                want: vec![2, 9],
            },
            Case {
                name: "bounded at RING, oldest pushed out",
                ring: vec![e(1, 960), e(2, 970), e(3, 980), e(4, 990)],
                now_ms: 1_000_000,
                want: vec![2, 3, 4, 9],
            },
            Case {
                name: "an overfull ring from elsewhere is cut to RING",
                ring: (1..=7).map(|n| e(n, 990)).collect(),
                now_ms: 1_000_000,
                want: vec![5, 6, 7, 9],
            },
        ];
        for c in cases {
            let got = push(c.ring, e(9, 1000), c.now_ms, ttl);
            let got: Vec<u8> = got.iter().map(|e| e.nonce[0]).collect();
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn freshness_is_half_the_ttl() {
        let ttl = 100_000;
        let ring = [e(1, 1000)];
        assert!(fresh(&ring, 1_000_000, ttl).is_some(), "just issued");
        assert!(fresh(&ring, 1_049_999, ttl).is_some(), "just under ttl/2");
        assert!(fresh(&ring, 1_050_000, ttl).is_none(), "ttl/2 old");
        assert!(fresh(&[], 1_000_000, ttl).is_none(), "empty ring");
        assert!(
            fresh(&[e(1, 1020)], 1_000_000, ttl).is_some(),
            "20 s ahead: within the leeway"
        );
        assert!(
            fresh(&[e(1, 1120)], 1_000_000, ttl).is_none(),
            "two minutes ahead: not handed out"
        );
    }

    #[test]
    fn ring_encoding_round_trips_and_skips_junk() {
        let ring = vec![e(1, 10), e(2, u64::MAX)];
        assert_eq!(parse_ring(&encode_ring(&ring)), ring);
        let mut raw = encode_ring(&ring).to_vec();
        raw.extend_from_slice(b",junk,:1,AAAA:2");
        assert_eq!(parse_ring(&raw), ring);
        assert!(parse_ring(b"\xff\xfe").is_empty());
    }

    #[test]
    fn token_shape() {
        let store = SharedStore::memory(
            crate::store::MemoryStore::new(10, Arc::new(crate::SystemClock)),
            "t",
        );
        let tokens = CsrfTokens::new(
            store,
            vec![CsrfKey::random()],
            Arc::new(crate::SystemClock),
            Duration::from_secs(60),
            CsrfMode::Stateless,
        );
        let b = Binding::session("s");
        let t = tokens.token(&b, &e(7, 1_700_000_000));
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(t.starts_with("v1."));
        let (entry, _) = parse_token(&t).unwrap();
        assert_eq!(entry, e(7, 1_700_000_000));
        // The MAC's last character carries two stray bits: setting one is not the same
        // token spelt otherwise, it is no token.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut odd = t.clone().into_bytes();
        let last = odd.pop().unwrap();
        let i = ALPHABET.iter().position(|&c| c == last).unwrap();
        odd.push(ALPHABET[i ^ 1]);
        assert!(parse_token(std::str::from_utf8(&odd).unwrap()).is_none());
    }

    #[test]
    fn debug_shows_no_secret() {
        let k = CsrfKey::derive(b"hunter2hunter2hunter2hunter2hunter2");
        assert_eq!(format!("{k:?}"), "CsrfKey([redacted])");
        let b = Binding::session("sid-value");
        assert!(!format!("{b:?}").contains("sid-value"));
        assert_ne!(Binding::session("x"), Binding::cookie("x"));
    }
}
