//! Login lockout in the store: each step one atomic operation, in Redis and in memory.
//!
//! The rules are [`crate::auth::lockout`]'s (per pair, per account, per source); this
//! module keeps their state and applies them atomically, through [`SharedStore`]:
//!
//! | call | does |
//! | --- | --- |
//! | [`lockout_check`](SharedStore::lockout_check) | may (account, source) try a password now? Changes nothing. |
//! | [`lockout_failure`](SharedStore::lockout_failure) | records a wrong password: the pair, the account's hourly ceiling, the source's ceiling; the decision afterwards, with `just_locked` for the `lockout` event |
//! | [`lockout_success`](SharedStore::lockout_success) | resets the pair's failures and lock level |
//! | [`lockout_source_failure`](SharedStore::lockout_source_failure) | a refused username: counts toward the source's ceiling only |
//! | [`lockout_source_check`](SharedStore::lockout_source_check) | is the source over its ceiling? |
//! | [`lockout_unlock`](SharedStore::lockout_unlock) | admin unlock: clears the account's ceiling and every pair of the account |
//!
//! # Keys
//!
//! ```text
//! {prefix}:lk:{ACCOUNT}:a          the account: generation, hourly ceiling
//! {prefix}:lk:{ACCOUNT}:p:SOURCE   one (account, source) pair
//! {prefix}:lks:SOURCE              the source's ceiling
//! ```
//!
//! `ACCOUNT` is the canonical username with `%`, `{` and `}` percent-encoded, so the
//! braces are exactly a Redis Cluster hash tag: every key of one account is in one slot and
//! one script updates the account and the pair together. The source's counter is another
//! key (another slot), updated by a second call.
//!
//! Unlocking needs no scan of the account's pairs: the account record holds a generation
//! number that every pair record carries; unlock bumps it, and a pair record of another
//! generation counts as absent. The account record's time to live is raised to cover
//! every pair record written, so the generation outlives them.
//!
//! The Redis side is two Lua scripts (`lua/lockout.lua`, `lua/lockout_source.lua`) on the
//! server's clock (`TIME`); the memory side runs the same policy functions on the store's
//! clock, the account and pair under one lock per account (login failures are rare).
//!
//! # Fail mode
//!
//! `FailMode::Local`, the login fail mode (DESIGN §6): when Redis is unavailable every call
//! runs on this instance's memory store and answers `Routed::Local`, so sign-in keeps
//! working and attackers stay throttled per instance. A check or failure whose two calls
//! were answered by different stores is `Local`. An unlock is also applied to the local
//! store, so counters an outage left there do not come back at the next one.
//!
//! # Security
//!
//! See [`crate::auth::lockout`]: key by the canonical username whether or not the user
//! exists, and pass the real client address as the source.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use portcullis_core::auth::{canonicalize, LockDecision, LockScope, LockoutPolicy};
//! use portcullis_core::store::{MemoryStore, Routed, SharedStore};
//! use portcullis_core::ManualClock;
//! use std::{sync::Arc, time::Duration};
//!
//! let store = SharedStore::memory(MemoryStore::new(1000, Arc::new(ManualClock::new())), "p");
//! let policy = LockoutPolicy::default();
//! let alice = canonicalize("alice").unwrap();
//! for _ in 0..4 {
//!     let d = store.lockout_failure(&alice, "203.0.113.7", &policy).await;
//!     assert_eq!(d, Routed::Shared(LockDecision::Allowed));
//! }
//! let d = store.lockout_failure(&alice, "203.0.113.7", &policy).await.value().unwrap();
//! assert!(d.just_locked());
//! // The attacker's source is locked out of alice; alice, elsewhere, is not.
//! let d = store.lockout_check(&alice, "203.0.113.7", &policy).await.value().unwrap();
//! assert_eq!(d.retry_after(), Some(Duration::from_secs(60)));
//! let d = store.lockout_check(&alice, "198.51.100.1", &policy).await.value().unwrap();
//! assert_eq!(d, LockDecision::Allowed);
//! # });
//! ```

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use super::memory::Write;
use super::shared::Backends;
use super::{MemoryStore, Routed, SharedStore, StoreError, StoreResult};
use crate::auth::Username;
use crate::auth::lockout::{CeilingState, LockDecision, LockoutPolicy, PairState, after_failure};

pub use crate::auth::lockout::ACCOUNT_WINDOW;

/// What one account-side step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Check,
    Fail,
    Success,
    Unlock,
}

impl Op {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn as_str(self) -> &'static str {
        match self {
            Op::Check => "check",
            Op::Fail => "fail",
            Op::Success => "success",
            Op::Unlock => "unlock",
        }
    }
}

/// The answer of one account-side step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AccountAnswer {
    decision: LockDecision,
    /// For `Unlock`: whether the account had any lockout state.
    existed: bool,
}

/// `%`, `{` and `}` percent-encoded: the account inside `{…}` is then exactly the hash tag,
/// and no two accounts share a key.
fn escape_account(account: &str) -> String {
    let mut out = String::with_capacity(account.len());
    for c in account.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

/// Either both parts from the shared store, or the combination is a fallback.
fn both<A, B, T>(a: Routed<A>, b: Routed<B>, f: impl FnOnce(A, B) -> T) -> Routed<T> {
    match (a, b) {
        (Routed::Shared(x), Routed::Shared(y)) => Routed::Shared(f(x, y)),
        (Routed::Shared(x) | Routed::Local(x), Routed::Shared(y) | Routed::Local(y)) => {
            Routed::Local(f(x, y))
        }
        _ => Routed::Unavailable,
    }
}

fn map<A, T>(a: Routed<A>, f: impl FnOnce(A) -> T) -> Routed<T> {
    match a {
        Routed::Shared(x) => Routed::Shared(f(x)),
        Routed::Local(x) => Routed::Local(f(x)),
        Routed::Allow => Routed::Allow,
        Routed::Stateless => Routed::Stateless,
        Routed::Unavailable => Routed::Unavailable,
    }
}

impl SharedStore {
    fn lockout_account_key(&self, account: &Username) -> String {
        self.key("lk", &format!("{{{}}}:a", escape_account(account.as_str())))
    }

    fn lockout_pair_key(&self, account: &Username, source: &str) -> String {
        self.key(
            "lk",
            &format!("{{{}}}:p:{source}", escape_account(account.as_str())),
        )
    }

    fn lockout_source_key(&self, source: &str) -> String {
        self.key("lks", source)
    }

    /// May `account` try a password from `source` now? Changes nothing.
    ///
    /// `Locked` comes with the longest wait in force: the pair's lock, the account's hourly
    /// ceiling or the source's ceiling. Refuse such an attempt without checking the password.
    pub async fn lockout_check(
        &self,
        account: &Username,
        source: &str,
        policy: &LockoutPolicy,
    ) -> Routed<LockDecision> {
        self.traced("lockout_check", async {
            let akey = self.lockout_account_key(account);
            let pkey = self.lockout_pair_key(account, source);
            let a = self
                .lockout_account(&akey, Some(&pkey), Op::Check, policy)
                .await;
            let s = self.lockout_source(source, false, policy).await;
            both(a, s, |a, s| a.decision.and(s))
        })
        .await
    }

    /// Records a failed login of `account` from `source`: a failure of the pair, of the
    /// account's hourly ceiling and of the source's ceiling. Returns the decision for the
    /// next attempt; its `just_locked` says this failure locked the pair or reached a
    /// ceiling (the `lockout` event).
    pub async fn lockout_failure(
        &self,
        account: &Username,
        source: &str,
        policy: &LockoutPolicy,
    ) -> Routed<LockDecision> {
        self.traced("lockout_failure", async {
            let akey = self.lockout_account_key(account);
            let pkey = self.lockout_pair_key(account, source);
            let a = self
                .lockout_account(&akey, Some(&pkey), Op::Fail, policy)
                .await;
            let s = self.lockout_source(source, true, policy).await;
            both(a, s, |a, s| a.decision.and(s))
        })
        .await
    }

    /// Records a successful login: the pair's failures and lock level are forgotten. The
    /// account's and the source's ceilings are not lowered.
    pub async fn lockout_success(
        &self,
        account: &Username,
        source: &str,
        policy: &LockoutPolicy,
    ) -> Routed<()> {
        self.traced("lockout_success", async {
            let akey = self.lockout_account_key(account);
            let pkey = self.lockout_pair_key(account, source);
            let a = self
                .lockout_account(&akey, Some(&pkey), Op::Success, policy)
                .await;
            map(a, |_| ())
        })
        .await
    }

    /// Records a login with a refused username from `source`: it counts toward the source's
    /// ceiling only. The decision for the source's next attempt.
    pub async fn lockout_source_failure(
        &self,
        source: &str,
        policy: &LockoutPolicy,
    ) -> Routed<LockDecision> {
        self.traced("lockout_source_failure", async {
            self.lockout_source(source, true, policy).await
        })
        .await
    }

    /// Whether `source` is over its ceiling. Changes nothing.
    pub async fn lockout_source_check(
        &self,
        source: &str,
        policy: &LockoutPolicy,
    ) -> Routed<LockDecision> {
        self.traced("lockout_source_check", async {
            self.lockout_source(source, false, policy).await
        })
        .await
    }

    /// Admin unlock: clears the account's hourly ceiling and forgets every (account,
    /// source) pair of it, locked or not; whether there was anything to clear. Sources'
    /// ceilings are not the account's and stay.
    pub async fn lockout_unlock(&self, account: &Username) -> Routed<bool> {
        self.traced("lockout_unlock", async {
            let akey = self.lockout_account_key(account);
            let policy = LockoutPolicy::default();
            let shared = self.lockout_account(&akey, None, Op::Unlock, &policy).await;
            #[cfg(feature = "redis")]
            if matches!(self.inner.shared, Backends::Redis(_)) && !shared.is_fallback() {
                // Counters an earlier outage left in memory must not come back at the next.
                let _ = memory_account(&self.inner.local, &akey, None, Op::Unlock, &policy);
            }
            map(shared, |a| a.existed)
        })
        .await
    }

    async fn lockout_account(
        &self,
        akey: &str,
        pkey: Option<&str>,
        op: Op,
        policy: &LockoutPolicy,
    ) -> Routed<AccountAnswer> {
        let local = || memory_account(&self.inner.local, akey, pkey, op, policy);
        match &self.inner.shared {
            Backends::Memory => local().map_or(Routed::Unavailable, Routed::Shared),
            #[cfg(feature = "redis")]
            Backends::Redis(r) => match redis_ops::account(r, akey, pkey, op, policy).await {
                Ok(v) => Routed::Shared(v),
                Err(_) => {
                    self.fallback(super::FailMode::Local, async { local() })
                        .await
                }
            },
        }
    }

    async fn lockout_source(
        &self,
        source: &str,
        fail: bool,
        policy: &LockoutPolicy,
    ) -> Routed<LockDecision> {
        let key = self.lockout_source_key(source);
        let local = || memory_source(&self.inner.local, &key, fail, policy);
        match &self.inner.shared {
            Backends::Memory => local().map_or(Routed::Unavailable, Routed::Shared),
            #[cfg(feature = "redis")]
            Backends::Redis(r) => match redis_ops::source(r, &key, fail, policy).await {
                Ok(v) => Routed::Shared(v),
                Err(_) => {
                    self.fallback(super::FailMode::Local, async { local() })
                        .await
                }
            },
        }
    }
}

// ---- memory ----

/// Serialises the multi-key steps of one account in memory (two `update`s of different
/// shards); striped so that unrelated accounts rarely wait on each other.
static STRIPES: [Mutex<()>; 16] = [const { Mutex::new(()) }; 16];

fn stripe(akey: &str) -> MutexGuard<'static, ()> {
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(akey) as usize;
    // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
    STRIPES[h % STRIPES.len()]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn parse_fields<const N: usize>(key: &str, value: &Bytes) -> StoreResult<[u64; N]> {
    let corrupt = || StoreError::Corrupt(format!("{key} does not hold a lockout record"));
    let text = std::str::from_utf8(value).map_err(|_| corrupt())?;
    let mut out = [0u64; N];
    let mut parts = text.split(' ');
    for slot in &mut out {
        *slot = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(corrupt)?;
    }
    if parts.next().is_some() {
        return Err(corrupt());
    }
    Ok(out)
}

fn join(fields: &[u64]) -> Bytes {
    let text: Vec<String> = fields.iter().map(u64::to_string).collect();
    Bytes::from(text.join(" "))
}

fn ttl_from(now: u64, until: u64) -> Duration {
    Duration::from_micros(until.saturating_sub(now).max(1))
}

/// The account's record in memory: `gen failures ends keep` (keep: the latest expiry of a
/// pair record, which the record must outlive).
#[derive(Clone, Copy, Debug, Default)]
struct AccountRecord {
    generation: u64,
    ceiling: CeilingState,
    keep_us: u64,
}

impl AccountRecord {
    fn decode(key: &str, v: &Bytes) -> StoreResult<Self> {
        let [generation, failures, ends_us, keep_us] = parse_fields::<4>(key, v)?;
        Ok(Self {
            generation,
            ceiling: CeilingState {
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
                ends_us,
            },
            keep_us,
        })
    }

    fn encode(&self) -> Bytes {
        join(&[
            self.generation,
            u64::from(self.ceiling.failures),
            self.ceiling.ends_us,
            self.keep_us,
        ])
    }
}

/// A pair's record in memory: `gen failures last level until`.
fn decode_pair(key: &str, v: &Bytes) -> StoreResult<(u64, PairState)> {
    let [generation, failures, last, level, until] = parse_fields::<5>(key, v)?;
    Ok((
        generation,
        PairState {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            last_failure_us: last,
            level: u32::try_from(level).unwrap_or(u32::MAX),
            locked_until_us: until,
        },
    ))
}

fn encode_pair(generation: u64, s: &PairState) -> Bytes {
    join(&[
        generation,
        u64::from(s.failures),
        s.last_failure_us,
        u64::from(s.level),
        s.locked_until_us,
    ])
}

fn memory_account(
    mem: &MemoryStore,
    akey: &str,
    pkey: Option<&str>,
    op: Op,
    policy: &LockoutPolicy,
) -> StoreResult<AccountAnswer> {
    let _one_account_at_a_time = stripe(akey);
    let (now, record) = mem.update(akey, |now, cur| {
        let rec = cur.map(|v| AccountRecord::decode(akey, v)).transpose();
        ((now, rec), Write::Keep)
    })?;
    let record = record?;
    let existed = record.is_some();
    let record = record.unwrap_or_default();
    let ceiling = Some(record.ceiling).filter(|c| c.ends_us > now);
    let answer = |decision| AccountAnswer { decision, existed };

    let Some(pkey) = pkey else {
        // Unlock: a new generation, no ceiling; the record lives on for its pairs.
        if existed {
            let next = AccountRecord {
                generation: record.generation + 1,
                ceiling: CeilingState::default(),
                keep_us: record.keep_us,
            };
            mem.update(akey, |now, _| {
                let w = if next.keep_us > now {
                    Write::Set(next.encode(), ttl_from(now, next.keep_us))
                } else {
                    Write::Delete
                };
                ((), w)
            })?;
        }
        return Ok(answer(LockDecision::Allowed));
    };

    match op {
        Op::Success => {
            mem.update(pkey, |_, _| ((), Write::Delete))?;
            Ok(answer(LockDecision::Allowed))
        }
        Op::Check | Op::Unlock => {
            let pair = mem.update(pkey, |_, cur| {
                (cur.map(|v| decode_pair(pkey, v)).transpose(), Write::Keep)
            })??;
            let pair = pair.filter(|(g, _)| *g == record.generation);
            let d = pair.map_or(LockDecision::Allowed, |(_, s)| policy.pair_check(now, &s));
            let c = ceiling.map_or(LockDecision::Allowed, |c| policy.account_check(now, &c));
            Ok(answer(d.and(c)))
        }
        Op::Fail => {
            let (pair_decision, pair_expires) = mem.update(pkey, |_, cur| {
                let prev = match cur.map(|v| decode_pair(pkey, v)).transpose() {
                    Ok(p) => p.filter(|(g, _)| *g == record.generation).map(|(_, s)| s),
                    Err(e) => return (Err(e), Write::Keep),
                };
                let (s, just) = policy.pair_on_failure(now, prev);
                let expires = policy.pair_expires_us(&s);
                let d = after_failure(policy.pair_check(now, &s), just);
                let w = Write::Set(encode_pair(record.generation, &s), ttl_from(now, expires));
                (Ok((d, expires)), w)
            })??;
            let (c, just) = policy.account_on_failure(now, ceiling);
            let next = AccountRecord {
                generation: record.generation,
                ceiling: c,
                keep_us: record.keep_us.max(pair_expires),
            };
            let until = next.keep_us.max(c.ends_us);
            mem.update(akey, |_, _| {
                ((), Write::Set(next.encode(), ttl_from(now, until)))
            })?;
            let account_decision = after_failure(policy.account_check(now, &c), just);
            Ok(answer(pair_decision.and(account_decision)))
        }
    }
}

fn memory_source(
    mem: &MemoryStore,
    key: &str,
    fail: bool,
    policy: &LockoutPolicy,
) -> StoreResult<LockDecision> {
    mem.update(key, |now, cur| {
        let prev = match cur.map(|v| parse_fields::<2>(key, v)).transpose() {
            Ok(p) => p.map(|[failures, ends_us]| CeilingState {
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
                ends_us,
            }),
            Err(e) => return (Err(e), Write::Keep),
        };
        let prev = prev.filter(|c| c.ends_us > now);
        if !fail {
            let d = prev.map_or(LockDecision::Allowed, |c| policy.source_check(now, &c));
            return (Ok(d), Write::Keep);
        }
        let (c, just) = policy.source_on_failure(now, prev);
        let d = after_failure(policy.source_check(now, &c), just);
        let w = Write::Set(
            join(&[u64::from(c.failures), c.ends_us]),
            ttl_from(now, c.ends_us),
        );
        (Ok(d), w)
    })?
}

// ---- redis ----

#[cfg(feature = "redis")]
mod redis_ops {
    use std::sync::LazyLock;

    use redis::Script;

    use super::{AccountAnswer, LockDecision, LockoutPolicy, Op};
    use crate::auth::lockout::LockScope;
    use crate::auth::lockout::{ACCOUNT_WINDOW, MAX_LEVEL, us};
    use crate::store::{RedisStore, StoreError, StoreResult};
    use std::time::Duration;

    static ACCOUNT: LazyLock<Script> =
        LazyLock::new(|| Script::new(include_str!("lua/lockout.lua")));
    static SOURCE: LazyLock<Script> =
        LazyLock::new(|| Script::new(include_str!("lua/lockout_source.lua")));

    fn decision(retry_us: u64, just: bool, scope: LockScope) -> LockDecision {
        if retry_us == 0 {
            return LockDecision::Allowed;
        }
        LockDecision::Locked {
            retry_after: Duration::from_micros(retry_us),
            scope,
            just_locked: just,
        }
    }

    fn positive(v: i64) -> u64 {
        u64::try_from(v).unwrap_or(0)
    }

    pub(super) async fn account(
        r: &RedisStore,
        akey: &str,
        pkey: Option<&str>,
        op: Op,
        p: &LockoutPolicy,
    ) -> StoreResult<AccountAnswer> {
        let script = &*ACCOUNT;
        let v: Vec<i64> = r
            .call(|mut c| async move {
                let mut inv = script.key(akey);
                if let Some(pkey) = pkey {
                    inv.key(pkey);
                }
                inv.arg(op.as_str())
                    .arg(p.pair_limit())
                    .arg(us(p.window))
                    .arg(us(p.lock_for))
                    .arg(us(p.max_lock))
                    .arg(p.account_limit())
                    .arg(us(ACCOUNT_WINDOW))
                    .arg(MAX_LEVEL)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let [pair_us, pair_just, acct_us, acct_just] = v[..] else {
            return Err(StoreError::Corrupt(format!(
                "the lockout script returned {} values",
                v.len()
            )));
        };
        if op == Op::Unlock {
            return Ok(AccountAnswer {
                decision: LockDecision::Allowed,
                existed: pair_us == 1,
            });
        }
        let pair = decision(positive(pair_us), pair_just == 1, LockScope::Pair);
        let acct = decision(positive(acct_us), acct_just == 1, LockScope::Account);
        Ok(AccountAnswer {
            decision: pair.and(acct),
            existed: true,
        })
    }

    pub(super) async fn source(
        r: &RedisStore,
        key: &str,
        fail: bool,
        p: &LockoutPolicy,
    ) -> StoreResult<LockDecision> {
        let script = &*SOURCE;
        let v: Vec<i64> = r
            .call(|mut c| async move {
                script
                    .key(key)
                    .arg(if fail { "fail" } else { "check" })
                    .arg(p.source_limit())
                    .arg(us(p.window))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let [retry_us, just] = v[..] else {
            return Err(StoreError::Corrupt(format!(
                "the lockout source script returned {} values",
                v.len()
            )));
        };
        Ok(decision(positive(retry_us), just == 1, LockScope::Source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::canonicalize;
    use crate::auth::lockout::LockScope;
    use crate::store::FailMode;
    use crate::{ManualClock, auth::lockout::ACCOUNT_WINDOW};
    use std::sync::Arc;

    const S: Duration = Duration::from_secs(1);
    const M: Duration = Duration::from_secs(60);

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn setup() -> (SharedStore, ManualClock) {
        let clock = ManualClock::new();
        let mem = MemoryStore::new(10_000, Arc::new(clock.clone()));
        (SharedStore::memory(mem, "t"), clock)
    }

    fn user(s: &str) -> Username {
        canonicalize(s).unwrap()
    }

    fn locked(retry_after: Duration, scope: LockScope, just_locked: bool) -> LockDecision {
        LockDecision::Locked {
            retry_after,
            scope,
            just_locked,
        }
    }

    #[test]
    fn key_layout_keeps_one_account_in_one_slot() {
        let (s, _) = setup();
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "plain",
                "alice",
                "t:lk:{alice}:a",
                "t:lk:{alice}:p:203.0.113.7",
            ),
            (
                "braces",
                "a}b{c",
                "t:lk:{a%7Db%7Bc}:a",
                "t:lk:{a%7Db%7Bc}:p:203.0.113.7",
            ),
            (
                "percent",
                "a%7db",
                "t:lk:{a%257db}:a",
                "t:lk:{a%257db}:p:203.0.113.7",
            ),
        ];
        for (name, account, a, p) in cases {
            let u = user(account);
            assert_eq!(s.lockout_account_key(&u), *a, "{name}");
            assert_eq!(s.lockout_pair_key(&u, "203.0.113.7"), *p, "{name}");
        }
        assert_eq!(s.lockout_source_key("2001:db8::/64"), "t:lks:2001:db8::/64");
    }

    #[test]
    fn the_default_policy_end_to_end_on_a_fake_clock() {
        let (s, clock) = setup();
        let p = LockoutPolicy::default();
        let alice = user("alice");
        block(async {
            let fail = |src: &'static str| {
                let s = s.clone();
                let alice = alice.clone();
                async move { s.lockout_failure(&alice, src, &p).await.value().unwrap() }
            };
            for _ in 0..4 {
                assert_eq!(fail("x").await, LockDecision::Allowed);
            }
            assert_eq!(fail("x").await, locked(M, LockScope::Pair, true));
            clock.advance(M);
            assert_eq!(fail("x").await, locked(2 * M, LockScope::Pair, true));
            clock.advance(2 * M);
            assert_eq!(fail("x").await, locked(4 * M, LockScope::Pair, true));
            clock.advance(4 * M);
            // Success resets failures and level.
            assert_eq!(s.lockout_success(&alice, "x", &p).await, Routed::Shared(()));
            for _ in 0..4 {
                assert_eq!(fail("x").await, LockDecision::Allowed);
            }
            assert_eq!(fail("x").await, locked(M, LockScope::Pair, true));
            // The source "x" has 15 failures of its 20.
            assert_eq!(
                s.lockout_check(&user("bob"), "x", &p).await,
                Routed::Shared(LockDecision::Allowed)
            );
        });
    }

    #[test]
    fn the_account_ceiling_lasts_an_hour_from_its_first_failure() {
        let (s, clock) = setup();
        let p = LockoutPolicy {
            account_max_failures: 10,
            ..LockoutPolicy::default()
        };
        let carol = user("carol");
        block(async {
            for i in 0..9 {
                let d = s.lockout_failure(&carol, &format!("10.0.0.{i}"), &p).await;
                assert_eq!(d, Routed::Shared(LockDecision::Allowed), "failure {i}");
                clock.advance(S);
            }
            let d = s.lockout_failure(&carol, "10.0.0.9", &p).await;
            assert_eq!(
                d,
                Routed::Shared(locked(ACCOUNT_WINDOW - 9 * S, LockScope::Account, true))
            );
            let fresh = s.lockout_check(&carol, "192.0.2.1", &p).await;
            assert_eq!(
                fresh,
                Routed::Shared(locked(ACCOUNT_WINDOW - 9 * S, LockScope::Account, false))
            );
            clock.advance(ACCOUNT_WINDOW - 9 * S);
            let later = s.lockout_check(&carol, "192.0.2.1", &p).await;
            assert_eq!(later, Routed::Shared(LockDecision::Allowed));
        });
    }

    #[test]
    fn unlock_survives_the_records_it_hides() {
        let (s, clock) = setup();
        let p = LockoutPolicy {
            window: M,
            lock_for: 10 * M,
            max_lock: 10 * M,
            ..LockoutPolicy::default()
        };
        let dave = user("dave");
        block(async {
            for _ in 0..5 {
                s.lockout_failure(&dave, "x", &p).await;
            }
            assert!(
                s.lockout_check(&dave, "x", &p)
                    .await
                    .value()
                    .unwrap()
                    .is_locked()
            );
            assert_eq!(s.lockout_unlock(&dave).await, Routed::Shared(true));
            // The hidden pair record lives 10 minutes; the generation must outlive it.
            for step in 0..11 {
                let d = s.lockout_check(&dave, "x", &p).await.value().unwrap();
                assert_eq!(d, LockDecision::Allowed, "minute {step}");
                clock.advance(M);
            }
            assert_eq!(
                s.lockout_unlock(&user("nobody")).await,
                Routed::Shared(false)
            );
        });
    }

    #[test]
    fn a_corrupt_record_is_unavailable_not_allowed() {
        let (s, _) = setup();
        let p = LockoutPolicy::default();
        let eve = user("eve");
        block(async {
            let k = s.lockout_account_key(&eve);
            s.set(&k, Bytes::from_static(b"garbage"), M, FailMode::Local)
                .await;
            assert_eq!(s.lockout_check(&eve, "x", &p).await, Routed::Unavailable);
            assert_eq!(s.lockout_failure(&eve, "x", &p).await, Routed::Unavailable);
        });
    }

    #[test]
    fn combining_routed_answers() {
        let a = LockDecision::Allowed;
        let l = locked(S, LockScope::Pair, false);
        let f = |x: LockDecision, y: LockDecision| x.and(y);
        type R = Routed<LockDecision>;
        let cases: Vec<(&str, R, R, R)> = vec![
            (
                "shared and shared",
                Routed::Shared(a),
                Routed::Shared(l),
                Routed::Shared(l),
            ),
            (
                "shared and local",
                Routed::Shared(l),
                Routed::Local(a),
                Routed::Local(l),
            ),
            (
                "local and local",
                Routed::Local(a),
                Routed::Local(a),
                Routed::Local(a),
            ),
            (
                "unavailable",
                Routed::Shared(a),
                Routed::Unavailable,
                Routed::Unavailable,
            ),
        ];
        for (name, x, y, want) in cases {
            assert_eq!(both(x, y, f), want, "{name}");
        }
    }
}
