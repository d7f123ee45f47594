//! CSRF synchronizer tokens against both backends: the memory store and a real
//! `redis-server` (testkit), on a fake clock for the tokens' own time. Redis's key TTLs run
//! on real time, far longer than any test.
//!
//! Each behaviour is one function run once per backend (`memory::…`, `redis::…`); the
//! outage and the two-instance race need Redis and run on it alone.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::breaker::BreakerConfig;
use portcullis_core::csrf::{
    Binding, CsrfKey, CsrfMode, CsrfTokens, Reason, StoreUnavailable, TOKEN_LEN, Verdict,
};
use portcullis_core::store::{MemoryStore, NoObserver, RedisConfig, RedisStore, SharedStore};
use portcullis_core::{Clock, ManualClock, Secret, SystemClock};
use portcullis_testkit::redis::RedisServer;

const TTL: Duration = Duration::from_secs(2 * 3600);
const SECRET: &[u8] = b"a secret of at least thirty-two random bytes, one";

fn key() -> CsrfKey {
    CsrfKey::derive(SECRET)
}

struct Fixture {
    store: SharedStore,
    clock: ManualClock,
}

impl Fixture {
    fn memory() -> Self {
        let clock = ManualClock::new();
        let store = SharedStore::memory(MemoryStore::new(10_000, Arc::new(clock.clone())), "t");
        Self { store, clock }
    }

    fn redis(server: &RedisServer) -> Self {
        Self {
            store: redis_store(server),
            clock: ManualClock::new(),
        }
    }

    fn tokens(&self, keys: Vec<CsrfKey>, mode: CsrfMode) -> CsrfTokens {
        CsrfTokens::new(
            self.store.clone(),
            keys,
            Arc::new(self.clock.clone()),
            TTL,
            mode,
        )
    }

    fn stateless(&self) -> CsrfTokens {
        self.tokens(vec![key()], CsrfMode::Stateless)
    }
}

/// One instance's store over `server`. The breaker never opens on its own here (a busy
/// two-core machine makes calls slow): the outage test kills the server instead.
fn redis_store(server: &RedisServer) -> SharedStore {
    let redis = RedisStore::new(
        RedisConfig {
            url: Secret::new(server.url()),
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            breaker: BreakerConfig {
                slow_call: Duration::from_millis(1900),
                min_calls: 1_000_000,
                ..BreakerConfig::default()
            },
        },
        Arc::new(SystemClock),
        Arc::new(NoObserver),
    )
    .unwrap();
    SharedStore::redis(redis, MemoryStore::new(1000, Arc::new(SystemClock)), "t")
}

/// `t` with the character at `i` replaced by another of the base64url alphabet.
fn flip(t: &str, i: usize) -> String {
    let mut b = t.as_bytes().to_vec();
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = portcullis_testkit::redis::RedisServer::start();
                    super::$name(super::Fixture::redis(&server)).await;
                    drop(server);
                }
            )*
        }
    };
}

on_both_backends!(
    issue_then_verify,
    tabs_share_one_token,
    another_session_is_a_bad_signature,
    tampered_and_garbage_tokens,
    expiry_on_the_fake_clock,
    rotation_keeps_the_previous_token,
    revoke_ends_every_token_of_the_session,
    key_rotation,
);

async fn issue_then_verify(f: Fixture) {
    let tokens = f.stateless();
    let s = Binding::session("family-1");
    let t = tokens.issue(&s).await.unwrap();
    assert_eq!(t.len(), TOKEN_LEN);
    assert!(t.starts_with("v1."), "{t}");
    assert_eq!(tokens.verify(&s, &t).await, Verdict::Valid);
    // Verifying does not use the token up.
    assert_eq!(tokens.verify(&s, &t).await, Verdict::Valid);
    // Cookie bindings work alike.
    let c = Binding::cookie("pre-login-cookie-value");
    let tc = tokens.issue(&c).await.unwrap();
    assert_eq!(tokens.verify(&c, &tc).await, Verdict::Valid);
}

async fn tabs_share_one_token(f: Fixture) {
    let tokens = f.stateless();
    let s = Binding::session("family-tabs");
    let tab1 = tokens.issue(&s).await.unwrap();
    f.clock.advance(Duration::from_secs(60));
    let tab2 = tokens.issue(&s).await.unwrap();
    assert_eq!(tab1, tab2, "a second tab gets the same token");
    assert_eq!(tokens.verify(&s, &tab1).await, Verdict::Valid);
    assert_eq!(tokens.verify(&s, &tab2).await, Verdict::Valid);

    // Many tabs opening at once on a fresh session agree too.
    let fresh = Binding::session("family-burst");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (tokens, fresh) = (tokens.clone(), fresh.clone());
            tokio::spawn(async move { tokens.issue(&fresh).await.unwrap() })
        })
        .collect();
    let mut seen = HashSet::new();
    for t in tasks {
        seen.insert(t.await.unwrap());
    }
    assert_eq!(seen.len(), 1, "one token for the session: {seen:?}");
}

async fn another_session_is_a_bad_signature(f: Fixture) {
    let tokens = f.stateless();
    let a = Binding::session("family-a");
    let t = tokens.issue(&a).await.unwrap();
    tokens.issue(&Binding::session("family-b")).await.unwrap();
    for (name, other) in [
        ("another session", Binding::session("family-b")),
        ("a session never issued", Binding::session("family-c")),
        ("a cookie of the same value", Binding::cookie("family-a")),
    ] {
        assert_eq!(
            tokens.verify(&other, &t).await,
            Verdict::Invalid(Reason::BadSignature),
            "{name}"
        );
    }
}

async fn tampered_and_garbage_tokens(f: Fixture) {
    let tokens = f.stateless();
    let s = Binding::session("family-t");
    let t = tokens.issue(&s).await.unwrap();
    let other_key = f.tokens(vec![CsrfKey::random()], CsrfMode::Stateless);
    let forged = other_key
        .issue(&Binding::session("family-t2"))
        .await
        .unwrap();
    let cases: Vec<(&str, String, Reason)> = vec![
        ("nonce changed", flip(&t, 5), Reason::BadSignature),
        ("issue time changed", flip(&t, 30), Reason::BadSignature),
        ("MAC changed", flip(&t, 50), Reason::BadSignature),
        (
            "payload of another token",
            format!("{}{}", &forged[..35], &t[35..]),
            Reason::BadSignature,
        ),
        ("empty", String::new(), Reason::Malformed),
        ("garbage", "garbage".into(), Reason::Malformed),
        ("one more character", format!("{t}A"), Reason::Malformed),
        (
            "one character less",
            t[..t.len() - 1].into(),
            Reason::Malformed,
        ),
        ("overlong", "A".repeat(64 * 1024), Reason::Malformed),
        (
            "other version",
            format!("v2.{}", &t[3..]),
            Reason::Malformed,
        ),
        ("separator", t.replacen('.', "-", 2), Reason::Malformed),
        (
            "standard base64",
            t.replacen(&t[10..11], "+", 1),
            Reason::Malformed,
        ),
        ("whitespace", format!(" {}", &t[1..]), Reason::Malformed),
        (
            "non-ASCII",
            format!("{}é", &t[..t.len() - 2]),
            Reason::Malformed,
        ),
    ];
    for (name, presented, reason) in cases {
        assert_eq!(
            tokens.verify(&s, &presented).await,
            Verdict::Invalid(reason),
            "{name}: {presented:.80}"
        );
    }
    // Signed with a key this instance does not hold.
    let theirs = other_key.issue(&s).await.unwrap();
    assert_eq!(
        tokens.verify(&s, &theirs).await,
        Verdict::Invalid(Reason::BadSignature),
        "another key"
    );
    assert_eq!(tokens.verify(&s, &t).await, Verdict::Valid, "the real one");
}

async fn expiry_on_the_fake_clock(f: Fixture) {
    let tokens = f.stateless();
    let s = Binding::session("family-e");
    let t = tokens.issue(&s).await.unwrap();
    f.clock.advance(TTL - Duration::from_secs(1));
    assert_eq!(tokens.verify(&s, &t).await, Verdict::Valid, "just inside");
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(
        tokens.verify(&s, &t).await,
        Verdict::Invalid(Reason::Expired),
        "at iat + ttl"
    );
    // A new token comes for the same session.
    let next = tokens.issue(&s).await.unwrap();
    assert_ne!(next, t);
    assert_eq!(tokens.verify(&s, &next).await, Verdict::Valid);

    // An instance whose clock runs ahead: within the leeway its tokens pass, beyond not.
    for (ahead, want) in [
        (Duration::from_secs(20), Verdict::Valid),
        (Duration::from_secs(120), Verdict::Invalid(Reason::Expired)),
    ] {
        let fast = ManualClock::new();
        fast.advance(
            f.clock
                .system_time()
                .duration_since(fast.system_time())
                .unwrap_or_default()
                + ahead,
        );
        let skewed = CsrfTokens::new(
            f.store.clone(),
            vec![key()],
            Arc::new(fast),
            TTL,
            CsrfMode::Stateless,
        );
        let b = Binding::session(&format!("family-ahead-{}", ahead.as_secs()));
        let t = skewed.issue(&b).await.unwrap();
        assert_eq!(tokens.verify(&b, &t).await, want, "{ahead:?} ahead");
    }
}

async fn rotation_keeps_the_previous_token(f: Fixture) {
    let tokens = f.stateless();
    let s = Binding::session("family-r");
    let half = TTL / 2;
    let t1 = tokens.issue(&s).await.unwrap();
    f.clock.advance(half - Duration::from_secs(1));
    assert_eq!(tokens.issue(&s).await.unwrap(), t1, "younger than ttl/2");
    f.clock.advance(Duration::from_secs(1));
    let t2 = tokens.issue(&s).await.unwrap();
    assert_ne!(t2, t1, "ttl/2 old: a new one");
    assert_eq!(tokens.issue(&s).await.unwrap(), t2, "then shared");
    assert_eq!(tokens.verify(&s, &t1).await, Verdict::Valid, "the old tab");
    assert_eq!(tokens.verify(&s, &t2).await, Verdict::Valid);

    f.clock.advance(half);
    assert_eq!(
        tokens.verify(&s, &t1).await,
        Verdict::Invalid(Reason::Expired),
        "the first ends at its own expiry"
    );
    assert_eq!(tokens.verify(&s, &t2).await, Verdict::Valid);
    let t3 = tokens.issue(&s).await.unwrap();
    assert!(t3 != t1 && t3 != t2);
    assert_eq!(tokens.verify(&s, &t2).await, Verdict::Valid);
    assert_eq!(tokens.verify(&s, &t3).await, Verdict::Valid);

    // Rotating many times keeps the ring small and every unexpired token valid.
    let mut live = vec![t3];
    for _ in 0..6 {
        f.clock.advance(half);
        live.push(tokens.issue(&s).await.unwrap());
    }
    let n = live.len();
    for t in &live[n - 2..] {
        assert_eq!(tokens.verify(&s, t).await, Verdict::Valid);
    }
    for t in &live[..n - 2] {
        assert_eq!(
            tokens.verify(&s, t).await,
            Verdict::Invalid(Reason::Expired)
        );
    }
}

async fn revoke_ends_every_token_of_the_session(f: Fixture) {
    let tokens = f.stateless();
    let a = Binding::session("family-out");
    let b = Binding::session("family-stays");
    let a1 = tokens.issue(&a).await.unwrap();
    f.clock.advance(TTL / 2);
    let a2 = tokens.issue(&a).await.unwrap();
    let b1 = tokens.issue(&b).await.unwrap();
    assert_ne!(a1, a2);

    tokens.revoke(&a).await;
    for t in [&a1, &a2] {
        assert_eq!(
            tokens.verify(&a, t).await,
            Verdict::Invalid(Reason::Revoked)
        );
    }
    assert_eq!(
        tokens.verify(&b, &b1).await,
        Verdict::Valid,
        "other sessions untouched"
    );
    // Revoking twice, or a session without tokens, is harmless.
    tokens.revoke(&a).await;
    tokens.revoke(&Binding::session("family-none")).await;

    // A token issued afterwards is a new one; the old stay dead.
    let a3 = tokens.issue(&a).await.unwrap();
    assert!(a3 != a1 && a3 != a2);
    assert_eq!(tokens.verify(&a, &a3).await, Verdict::Valid);
    assert_eq!(
        tokens.verify(&a, &a2).await,
        Verdict::Invalid(Reason::Revoked)
    );
}

async fn key_rotation(f: Fixture) {
    let s = Binding::session("family-k");
    let new_key = || CsrfKey::derive(b"a secret of at least thirty-two random bytes, two");
    let before = f.tokens(vec![key()], CsrfMode::Stateless);
    let old = before.issue(&s).await.unwrap();

    // Another instance with the same secret verifies it.
    let twin = f.tokens(vec![CsrfKey::derive(SECRET)], CsrfMode::Stateless);
    assert_eq!(twin.verify(&s, &old).await, Verdict::Valid);

    // The new key signs, the old one still verifies.
    let during = f.tokens(vec![new_key(), key()], CsrfMode::Stateless);
    assert_eq!(during.verify(&s, &old).await, Verdict::Valid);
    let new = during.issue(&s).await.unwrap();
    assert_ne!(new, old, "signed with the new key");
    assert_eq!(during.verify(&s, &new).await, Verdict::Valid);
    assert_eq!(
        before.verify(&s, &new).await,
        Verdict::Invalid(Reason::BadSignature),
        "an instance not yet given the new key"
    );

    // The old key retired.
    let after = f.tokens(vec![new_key()], CsrfMode::Stateless);
    assert_eq!(
        after.verify(&s, &old).await,
        Verdict::Invalid(Reason::BadSignature)
    );
    assert_eq!(after.verify(&s, &new).await, Verdict::Valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_stateless_and_deny() {
    let mut server = RedisServer::start();
    let f = Fixture::redis(&server);
    let stateless = f.stateless();
    let deny = f.tokens(vec![key()], CsrfMode::Deny);
    let a = Binding::session("family-a");
    let b = Binding::session("family-b");
    let gone = Binding::session("family-logged-out");
    let t = stateless.issue(&a).await.unwrap();
    stateless.issue(&b).await.unwrap();
    let revoked = stateless.issue(&gone).await.unwrap();
    stateless.revoke(&gone).await;
    assert_eq!(
        deny.verify(&a, &t).await,
        Verdict::Valid,
        "before the outage"
    );

    server.kill();

    // Stateless: what needs no state is still checked.
    assert_eq!(stateless.verify(&a, &t).await, Verdict::ValidStateless);
    assert!(stateless.verify(&a, &t).await.is_valid());
    for (name, binding, presented, reason) in [
        ("tampered", &a, flip(&t, 50), Reason::BadSignature),
        ("another session", &b, t.clone(), Reason::BadSignature),
        ("garbage", &a, "v1.x".to_owned(), Reason::Malformed),
    ] {
        assert_eq!(
            stateless.verify(binding, &presented).await,
            Verdict::Invalid(reason),
            "{name}"
        );
    }
    // The price of serving through the outage, as documented: a revoked token's ring
    // cannot be read.
    assert_eq!(
        stateless.verify(&gone, &revoked).await,
        Verdict::ValidStateless
    );

    // Deny: a good token cannot be confirmed; a bad one is still refused as such.
    assert_eq!(deny.verify(&a, &t).await, Verdict::Unavailable);
    assert_eq!(
        deny.verify(&b, &t).await,
        Verdict::Invalid(Reason::BadSignature)
    );
    assert_eq!(
        deny.verify(&a, "junk").await,
        Verdict::Invalid(Reason::Malformed)
    );

    // Nothing can be issued in either mode; revoking does not hang or panic.
    assert_eq!(
        stateless.issue(&Binding::session("new")).await,
        Err(StoreUnavailable)
    );
    assert_eq!(deny.issue(&a).await, Err(StoreUnavailable));
    stateless.revoke(&a).await;

    // Expiry still holds.
    f.clock.advance(TTL);
    assert_eq!(
        stateless.verify(&a, &t).await,
        Verdict::Invalid(Reason::Expired)
    );
    assert_eq!(deny.verify(&a, &t).await, Verdict::Invalid(Reason::Expired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_issue_the_same_token() {
    let server = RedisServer::start();
    let clock = ManualClock::new();
    let instance = |store: SharedStore| {
        CsrfTokens::new(
            store,
            vec![CsrfKey::derive(SECRET)],
            Arc::new(clock.clone()),
            TTL,
            CsrfMode::Stateless,
        )
    };
    let one = instance(redis_store(&server));
    let two = instance(redis_store(&server));
    for round in 0..20 {
        let s = Binding::session(&format!("family-race-{round}"));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let tokens = if i % 2 == 0 { one.clone() } else { two.clone() };
                let s = s.clone();
                tokio::spawn(async move { tokens.issue(&s).await.unwrap() })
            })
            .collect();
        let mut seen = HashSet::new();
        for t in tasks {
            seen.insert(t.await.unwrap());
        }
        assert_eq!(seen.len(), 1, "round {round}: {seen:?}");
        let t = seen.into_iter().next().unwrap();
        assert_eq!(one.verify(&s, &t).await, Verdict::Valid);
        assert_eq!(two.verify(&s, &t).await, Verdict::Valid);
    }
}
