//! Sessions: refresh-token families with rotation and reuse detection, and the list of
//! revoked sessions.
//!
//! A login starts a **family** (its id is the access tokens' `sid`). Each refresh spends
//! the presented refresh token and hands out its successor; the family remembers only the
//! hashes of the current and the previous token.
//!
//! - The current token rotates: it becomes the previous one, a new current one is made.
//! - The **previous** token, presented again within `refresh_reuse_grace` (a retry after a
//!   lost answer, two tabs refreshing at once), gets back the very successor it already
//!   produced — never a second live successor. The successor is kept sealed under a key
//!   derived from the previous token, which only its holder has: the store never holds a
//!   usable refresh token.
//! - Any other presentation (the previous token after the grace window, or anything older)
//!   is **reuse**: the family is revoked, and with it every access token of the session.
//! - A family ends `refresh_ttl` after login (absolute) or `refresh_idle_ttl` after the
//!   last refresh (idle), whichever comes first.
//!
//! The rotation is one atomic store operation ([`rotate`] here, and the same steps in Lua
//! in `store/lua/refresh_rotate.lua`).
//!
//! # Fail mode
//!
//! Rotation needs the shared state to tell reuse from use, so it fails closed: while Redis
//! is unavailable refresh answers 503. Revocations already known are kept in each
//! instance's [`Revocations`], so an outage never undoes a logout.

mod revocations;
mod tokens;

pub use revocations::Revocations;
pub use tokens::{RefreshToken, TokenParseError, hash_secret, open_successor, seal_successor};

use serde::{Deserialize, Serialize};

/// A refresh family as stored (JSON). Times are milliseconds on the store's clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    /// The subject.
    pub sub: String,
    /// Its roles at login.
    #[serde(deserialize_with = "list_or_empty_object")]
    pub roles: Vec<String>,
    /// Hash of the current refresh token.
    pub cur: String,
    /// Hash of the previous one (empty before the first rotation).
    #[serde(default)]
    pub prev: String,
    /// When the previous one was spent.
    #[serde(default)]
    pub prev_at: u64,
    /// The current token's secret, sealed under the previous token's secret.
    #[serde(default)]
    pub succ: String,
    /// Rotations so far.
    #[serde(default)]
    pub generation: u64,
    /// Absolute end of the family.
    pub abs: u64,
    /// Revoked (logout or reuse).
    #[serde(default)]
    pub rev: bool,
}

/// Redis's Lua JSON encoder writes an empty list as `{}`; read that as an empty list.
fn list_or_empty_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrMap {
        List(Vec<String>),
        Map(serde_json::Map<String, serde_json::Value>),
    }
    match ListOrMap::deserialize(d)? {
        ListOrMap::List(v) => Ok(v),
        ListOrMap::Map(m) if m.is_empty() => Ok(Vec::new()),
        ListOrMap::Map(_) => Err(serde::de::Error::custom("roles: expected a list")),
    }
}

/// The outcome of presenting a refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The current token: spent; the family now expects the new one.
    Rotated(Family),
    /// The previous token within the grace window: here is the successor it already got.
    Replayed(Family),
    /// A spent token outside the grace window, or an older one: the family is now revoked.
    Reused(Family),
    /// No such family, revoked, or past its lifetime.
    Invalid,
}

/// What a rotation writes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationWrite {
    /// Nothing.
    Keep,
    /// The family, with a new time to live in ms.
    Set(Family, u64),
    /// The family, keeping its time to live.
    SetKeepTtl(Family),
}

/// Inputs of one rotation.
#[derive(Clone, Copy, Debug)]
pub struct RotateArgs<'a> {
    /// Hash of the presented token's secret.
    pub presented: &'a str,
    /// Hash of the successor's secret.
    pub next_hash: &'a str,
    /// The successor's secret sealed under the presented one.
    pub next_sealed: &'a str,
    /// `refresh_reuse_grace`, ms.
    pub grace_ms: u64,
    /// `refresh_idle_ttl`, ms.
    pub idle_ms: u64,
}

/// The rotation decision: the one definition both backends implement.
pub fn rotate(
    current: Option<Family>,
    now_ms: u64,
    a: RotateArgs<'_>,
) -> (Rotation, RotationWrite) {
    let Some(mut f) = current else {
        return (Rotation::Invalid, RotationWrite::Keep);
    };
    if f.rev || now_ms >= f.abs {
        return (Rotation::Invalid, RotationWrite::Keep);
    }
    if a.presented == f.cur {
        f.prev = std::mem::replace(&mut f.cur, a.next_hash.to_owned());
        f.prev_at = now_ms;
        f.succ = a.next_sealed.to_owned();
        f.generation += 1;
        let ttl = (f.abs - now_ms).min(a.idle_ms).max(1);
        return (Rotation::Rotated(f.clone()), RotationWrite::Set(f, ttl));
    }
    if !f.prev.is_empty() && a.presented == f.prev && now_ms.saturating_sub(f.prev_at) <= a.grace_ms
    {
        return (Rotation::Replayed(f), RotationWrite::Keep);
    }
    f.rev = true;
    (Rotation::Reused(f.clone()), RotationWrite::SetKeepTtl(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family() -> Family {
        Family {
            sub: "alice".into(),
            roles: vec!["user".into()],
            cur: "h0".into(),
            prev: String::new(),
            prev_at: 0,
            succ: String::new(),
            generation: 0,
            abs: 1_000_000,
            rev: false,
        }
    }

    fn args<'a>(presented: &'a str, next: &'a str) -> RotateArgs<'a> {
        RotateArgs {
            presented,
            next_hash: next,
            next_sealed: "sealed",
            grace_ms: 10_000,
            idle_ms: 86_400_000,
        }
    }

    fn apply(f: Option<Family>, w: RotationWrite) -> Option<Family> {
        match w {
            RotationWrite::Keep => f,
            RotationWrite::Set(f, _) | RotationWrite::SetKeepTtl(f) => Some(f),
        }
    }

    #[test]
    fn rotation_table() {
        // h0 -> h1 at t=1000
        let (r, w) = rotate(Some(family()), 1000, args("h0", "h1"));
        assert!(
            matches!(r, Rotation::Rotated(ref f) if f.cur == "h1" && f.prev == "h0" && f.generation == 1)
        );
        let f1 = apply(Some(family()), w);
        // h0 again within grace: the same successor, no change.
        let (r, w) = rotate(f1.clone(), 5000, args("h0", "other"));
        assert!(matches!(r, Rotation::Replayed(ref f) if f.cur == "h1"));
        assert_eq!(w, RotationWrite::Keep);
        // h0 after the grace window: reuse, revoked.
        let (r, w) = rotate(f1.clone(), 20_000, args("h0", "other"));
        assert!(matches!(r, Rotation::Reused(_)));
        let revoked = apply(f1.clone(), w);
        assert!(revoked.as_ref().unwrap().rev);
        // Then even the latest successor is dead.
        assert_eq!(
            rotate(revoked, 21_000, args("h1", "h2")).0,
            Rotation::Invalid
        );
        // An unknown hash is reuse too.
        assert!(matches!(
            rotate(f1.clone(), 2000, args("hX", "h2")).0,
            Rotation::Reused(_)
        ));
        // Past the absolute lifetime: invalid, and nothing written.
        assert_eq!(
            rotate(f1.clone(), 1_000_000, args("h1", "h2")),
            (Rotation::Invalid, RotationWrite::Keep)
        );
        // No family.
        assert_eq!(rotate(None, 0, args("h0", "h1")).0, Rotation::Invalid);
    }

    #[test]
    fn idle_and_absolute_lifetimes_bound_the_ttl() {
        let (_, w) = rotate(Some(family()), 999_000, args("h0", "h1"));
        assert!(
            matches!(w, RotationWrite::Set(_, ttl) if ttl == 1000),
            "absolute end is closer"
        );
        let mut a = args("h0", "h1");
        a.idle_ms = 500;
        let (_, w) = rotate(Some(family()), 0, a);
        assert!(matches!(w, RotationWrite::Set(_, 500)));
    }
}
