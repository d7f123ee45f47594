//! Rate limiting: tiers by role, routes' own quotas, run-time overrides, the standard
//! headers, and the 429.
//!
//! # The rule
//!
//! A request is counted against one policy: the route's own `rate_limit` when it has one
//! (keyed by address, by subject-or-address, or by subject — then only identified callers
//! use it and the others get the anonymous tier), else the caller's tier — the tier
//! of its best role (the highest rate) when it has a verified identity, counted by
//! subject; `anonymous`, counted by address, when it has none. A request whose token was
//! refused has no identity: it is counted against its address's anonymous quota before
//! it is refused, so a flood of bad tokens is limited like any anonymous traffic. Tier
//! buckets are shared by every route without its own quota, `/auth/*` included.
//!
//! Addresses are keyed whole for IPv4 and by their `rate_limit.ipv6_prefix` network for
//! IPv6 (`ip:203.0.113.7`, `ip:2001:db8:1::/56`); subjects as `subject:alice`. The same
//! strings name overrides.
//!
//! # Fail mode
//!
//! While Redis is unavailable each policy does what its `on_redis_down` says: `local`
//! limits in this instance's memory with the quota divided by `instances`
//! (`fallback_allowed` / `fallback_limited` in the metrics), `allow` lets requests
//! through, `deny` answers 503 with `Retry-After`.
//!
//! # Speed
//!
//! A key found over its limit is remembered locally until the moment it could pass again,
//! so a flood from one client costs no store round trip; the GCRA answer is exact, so this
//! changes no decision. Overrides are kept locally and refreshed from the store every
//! 500 ms (changes reach every instance within a second); any change clears the local
//! over-limit memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use metrics::Counter;
use portcullis::{Problem, ProblemKind};
use portcullis_core::net::push_ip_key;
use portcullis_core::ratelimit::{Algorithm, Decision, Quota};
use portcullis_core::store::{FailMode, Routed, SharedStore};
use portcullis_core::token::Identity;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{Config, RateKey, RateLimitHeaders, RedisDown};
use crate::events::{EventKind, Events};

/// Decisions, by policy and outcome.
pub const DECISIONS: &str = "portcullis_ratelimit_decisions_total";
/// The store map holding overrides.
const OVERRIDES_MAP: &str = "rl-overrides";
/// The store map whose `last` field changes on every counter reset, so every instance
/// drops its memory of keys over their limit.
const RESETS_MAP: &str = "rl-resets";
/// How often overrides are pulled from the store.
pub const OVERRIDE_POLL: Duration = Duration::from_millis(500);
/// Keys remembered as over their limit, at most.
const OVER_CACHE_MAX: usize = 100_000;
/// A `rate_limited` event is raised at most this often per key.
const EVENT_DEDUP: Duration = Duration::from_secs(60);
/// `Retry-After` when the store is unavailable and the policy denies.
const UNAVAILABLE_RETRY: u64 = 5;

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// `"<name>";q=<limit>;w=<window seconds>`.
fn policy_header(name: &str, quota: &Quota) -> String {
    format!("\"{name}\";q={};w={}", quota.limit, ceil_secs(quota.per))
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// One policy: a tier or a route's own quota.
#[derive(Debug)]
pub struct Policy {
    /// The name in headers, metrics and the admin API (a tier's role or a route's name).
    pub name: Arc<str>,
    /// The quota.
    pub quota: Quota,
    /// Whom it counts (tiers: subject when identified, else address).
    pub key: RateKey,
    /// Only failed answers count.
    pub count_failures: bool,
    /// Fail mode.
    pub on_redis_down: RedisDown,
    /// Whether it is a tier.
    pub tier: bool,
    decisions: [Counter; 4],
    /// `RateLimit-Policy` for [`Policy::quota`], made once.
    header: Option<HeaderValue>,
    /// The store key of its counters, up to the client key.
    store_prefix: String,
}

impl Policy {
    fn new(
        name: &str,
        quota: Quota,
        key: RateKey,
        count_failures: bool,
        on_redis_down: RedisDown,
        tier: bool,
    ) -> Self {
        let c = |d: &'static str| metrics::counter!(DECISIONS, "policy" => name.to_owned(), "decision" => d);
        Self {
            header: HeaderValue::from_str(&policy_header(name, &quota)).ok(),
            store_prefix: String::new(),
            name: Arc::from(name),
            quota,
            key,
            count_failures,
            on_redis_down,
            tier,
            decisions: [
                c("allowed"),
                c("limited"),
                c("fallback_allowed"),
                c("fallback_limited"),
            ],
        }
    }

    /// Places its counters in `store`.
    fn in_store(mut self, store: &SharedStore) -> Self {
        self.store_prefix = store.key("rl", &format!("{}:", self.name));
        self
    }

    fn fail_mode(&self) -> FailMode {
        match self.on_redis_down {
            RedisDown::Local => FailMode::Local,
            RedisDown::Allow => FailMode::Allow,
            RedisDown::Deny => FailMode::Deny,
        }
    }
}

/// A run-time override of one key's quota.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Override {
    /// Exempt from limits.
    #[serde(default)]
    pub exempt: bool,
    /// The replacing limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Its window, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_ms: Option<u64>,
    /// Its burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Seconds since the epoch when it ends.
    pub expires: u64,
    /// Who set it.
    #[serde(default)]
    pub set_by: String,
}

impl Override {
    fn quota(&self) -> Option<Quota> {
        Quota::new(self.limit?, Duration::from_millis(self.per_ms?), self.burst)
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The result of the limiter for one request.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The policy applied.
    pub policy: Arc<Policy>,
    /// The client key (`ip:…`, `subject:…`).
    pub key: String,
    store_key: String,
    quota: Quota,
    decision: Option<Decision>,
    exempt: bool,
}

/// What the stack does next.
#[derive(Debug)]
pub enum Outcome {
    /// Go on; add the headers to the answer and call [`Limiter::finish`].
    Pass(Checked),
    /// Refuse with 429.
    Limited(Checked),
    /// Refuse with 503: the store is down and the policy denies.
    Unavailable(Checked),
}

impl Outcome {
    /// The decision in one word, for traces.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pass(_) => "allowed",
            Self::Limited(_) => "limited",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Overrides, kept locally and synchronised through the store.
#[derive(Debug, Default)]
pub struct Overrides {
    map: RwLock<HashMap<String, Override>>,
}

impl Overrides {
    /// The live override for `key`, or for an `ip:` network containing it.
    pub fn find(&self, key: &str, ip: Option<IpAddr>) -> Option<Override> {
        let now = now_secs();
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = map.get(key).filter(|o| o.expires > now) {
            return Some(o.clone());
        }
        let ip = ip?;
        map.iter()
            .filter(|(_, o)| o.expires > now)
            .find(|(k, _)| {
                k.strip_prefix("ip:")
                    .and_then(|n| n.parse::<ipnet::IpNet>().ok())
                    .is_some_and(|n| n.contains(&ip))
            })
            .map(|(_, o)| o.clone())
    }

    /// Every live override.
    pub fn list(&self) -> Vec<(String, Override)> {
        let now = now_secs();
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map
            .iter()
            .filter(|(_, o)| o.expires > now)
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn replace(&self, fresh: HashMap<String, Override>) -> bool {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let changed = *map != fresh;
        *map = fresh;
        changed
    }
}

/// The limiter.
#[derive(Debug)]
pub struct Limiter {
    algorithm: Algorithm,
    headers: RateLimitHeaders,
    ipv6_prefix: u8,
    instances: NonZeroU32,
    /// Tiers by role, best (highest rate) first; `anonymous` excluded.
    tiers: Vec<(String, Arc<Policy>)>,
    anonymous: Arc<Policy>,
    by_route: HashMap<Arc<str>, Arc<Policy>>,
    store: SharedStore,
    /// Overrides.
    pub overrides: Overrides,
    /// Keys over their limit: until when they stay refused, and when their quota is whole.
    over: Mutex<HashMap<String, (Instant, Instant)>>,
    events: Arc<Events>,
    dedup: Mutex<HashMap<String, Instant>>,
    /// The last counter reset seen in the store.
    last_reset: Mutex<Option<String>>,
}

impl Limiter {
    /// The limiter for a configuration; `None` when rate limiting is off.
    pub fn new(cfg: &Config, store: SharedStore, events: Arc<Events>) -> Option<Arc<Self>> {
        let rl = &cfg.rate_limit;
        if !rl.enabled {
            return None;
        }
        let mut tiers = Vec::new();
        let mut anonymous = None;
        for t in &rl.tiers {
            let p = Arc::new(
                Policy::new(
                    &t.role,
                    t.quota,
                    RateKey::SubjectOrIp,
                    false,
                    rl.on_redis_down,
                    true,
                )
                .in_store(&store),
            );
            if t.role == "anonymous" {
                anonymous = Some(p);
            } else {
                tiers.push((t.role.clone(), p));
            }
        }
        tiers.sort_by(|a, b| b.1.quota.rate().total_cmp(&a.1.quota.rate()));
        let anonymous = anonymous.expect("the config requires an anonymous tier");
        let by_route = cfg
            .routes
            .iter()
            .filter_map(|r| {
                let own = r.rate_limit.as_ref()?;
                let p = Policy::new(
                    &r.name,
                    own.quota,
                    own.key,
                    r.count_failures,
                    r.on_redis_down.unwrap_or(rl.on_redis_down),
                    false,
                )
                .in_store(&store);
                Some((r.name.clone(), Arc::new(p)))
            })
            .collect();
        metrics::describe_counter!(
            DECISIONS,
            "Rate-limit decisions by policy: allowed, limited, fallback_allowed, fallback_limited."
        );
        Some(Arc::new(Self {
            algorithm: rl.algorithm,
            headers: rl.headers,
            ipv6_prefix: rl.ipv6_prefix,
            instances: cfg.instances,
            tiers,
            anonymous,
            by_route,
            store,
            overrides: Overrides::default(),
            over: Mutex::new(HashMap::new()),
            events,
            dedup: Mutex::new(HashMap::new()),
            last_reset: Mutex::new(None),
        }))
    }

    /// Every policy: tiers (anonymous first) then routes.
    pub fn policies(&self) -> Vec<Arc<Policy>> {
        let mut v = vec![self.anonymous.clone()];
        v.extend(self.tiers.iter().map(|(_, p)| p.clone()));
        let mut routes: Vec<_> = self.by_route.values().cloned().collect();
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        v.extend(routes);
        v
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The client key of an address.
    pub fn ip_key(&self, ip: IpAddr) -> String {
        let mut key = String::with_capacity(24);
        key.push_str("ip:");
        push_ip_key(&mut key, ip, self.ipv6_prefix);
        key
    }

    /// A client key as an override names it: `subject:<name>`, `ip:<address>` (grouped
    /// like the limiter groups addresses) or `ip:<network>`.
    pub fn normalize_key(&self, raw: &str) -> Result<String, String> {
        if let Some(s) = raw.strip_prefix("subject:") {
            if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
                return Err("a subject key is subject:<name>".into());
            }
            return Ok(raw.to_owned());
        }
        if let Some(a) = raw.strip_prefix("ip:") {
            if let Ok(ip) = a.parse::<IpAddr>() {
                return Ok(self.ip_key(ip));
            }
            if let Ok(net) = a.parse::<ipnet::IpNet>() {
                return Ok(format!("ip:{}", net.trunc()));
            }
            return Err(format!("{a:?} is not an address or a network"));
        }
        Err("a key is subject:<name>, ip:<address> or ip:<network>".into())
    }

    fn select(
        &self,
        route: &str,
        identity: Option<&Identity>,
        ip: IpAddr,
    ) -> (Arc<Policy>, String) {
        let by_ip = || self.ip_key(ip);
        if let Some(p) = self.by_route.get(route) {
            match (p.key, identity) {
                (RateKey::Ip, _) | (RateKey::SubjectOrIp, None) => return (p.clone(), by_ip()),
                (RateKey::Subject | RateKey::SubjectOrIp, Some(who)) => {
                    return (p.clone(), format!("subject:{}", who.subject));
                }
                // `key = "subject"` limits identified callers; the others get their tier.
                (RateKey::Subject, None) => {}
            }
        }
        match identity {
            None => (self.anonymous.clone(), by_ip()),
            Some(who) => {
                let tier = self
                    .tiers
                    .iter()
                    .find(|(role, _)| who.has_role(role))
                    .map_or_else(|| self.anonymous.clone(), |(_, p)| p.clone());
                (tier, format!("subject:{}", who.subject))
            }
        }
    }

    fn over_until(&self, store_key: &str, now: Instant) -> Option<(Instant, Instant)> {
        let map = self.over.lock().unwrap_or_else(|p| p.into_inner());
        map.get(store_key)
            .copied()
            .filter(|(until, _)| *until > now)
    }

    fn remember_over(&self, store_key: &str, until: Instant, whole: Instant) {
        let mut map = self.over.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= OVER_CACHE_MAX {
            let now = Instant::now();
            map.retain(|_, (u, _)| *u > now);
            if map.len() >= OVER_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(store_key.to_owned(), (until, whole));
    }

    fn forget_over(&self) {
        self.over.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn limited_event(&self, c: &Checked, request_id: &str) {
        let tag = format!("{}|{}", c.policy.name, c.key);
        let now = Instant::now();
        {
            let mut d = self.dedup.lock().unwrap_or_else(|p| p.into_inner());
            if d.get(&tag)
                .is_some_and(|t| now.duration_since(*t) < EVENT_DEDUP)
            {
                return;
            }
            if d.len() >= OVER_CACHE_MAX {
                d.retain(|_, t| now.duration_since(*t) < EVENT_DEDUP);
                if d.len() >= OVER_CACHE_MAX {
                    d.clear();
                }
            }
            d.insert(tag, now);
        }
        self.events.emit(
            EventKind::RateLimited,
            &c.key,
            &format!(
                "policy {} ({} per {}s)",
                c.policy.name,
                c.quota.limit,
                c.quota.per.as_secs()
            ),
            Some(request_id),
        );
    }

    /// Decides one request.
    pub async fn check(
        &self,
        route: &str,
        identity: Option<&Identity>,
        ip: IpAddr,
        request_id: &str,
    ) -> Outcome {
        let (policy, key) = self.select(route, identity, ip);
        let ov = self.overrides.find(&key, Some(ip));
        let quota = ov
            .as_ref()
            .and_then(Override::quota)
            .unwrap_or(policy.quota);
        let mut store_key = String::with_capacity(policy.store_prefix.len() + key.len());
        store_key.push_str(&policy.store_prefix);
        store_key.push_str(&key);
        let mut c = Checked {
            policy: policy.clone(),
            key,
            store_key,
            quota,
            decision: None,
            exempt: false,
        };
        if ov.as_ref().is_some_and(|o| o.exempt) {
            c.exempt = true;
            return Outcome::Pass(c);
        }
        let now = Instant::now();
        if let Some((until, whole)) = self.over_until(&c.store_key, now) {
            policy.decisions[1].increment(1);
            c.decision = Some(Decision {
                allowed: false,
                limit: quota.limit.get(),
                remaining: 0,
                reset_after: whole.saturating_duration_since(now),
                retry_after: until - now,
            });
            self.limited_event(&c, request_id);
            return Outcome::Limited(c);
        }
        let cost = u32::from(!policy.count_failures);
        let local = quota.divided(self.instances);
        let routed = self
            .store
            .rate_limit(
                &c.store_key,
                self.algorithm,
                &quota,
                &local,
                cost,
                policy.fail_mode(),
            )
            .await;
        let (decision, fallback) = match routed {
            Routed::Shared(d) => (d, false),
            Routed::Local(d) => (d, true),
            Routed::Allow | Routed::Stateless => {
                policy.decisions[2].increment(1);
                return Outcome::Pass(c);
            }
            Routed::Unavailable => return Outcome::Unavailable(c),
        };
        c.decision = Some(decision);
        let slot = usize::from(!decision.allowed) + if fallback { 2 } else { 0 };
        policy.decisions[slot].increment(1);
        if decision.allowed {
            Outcome::Pass(c)
        } else {
            if !fallback && !decision.retry_after.is_zero() {
                self.remember_over(
                    &c.store_key,
                    now + decision.retry_after,
                    now + decision.reset_after,
                );
            }
            self.limited_event(&c, request_id);
            Outcome::Limited(c)
        }
    }

    /// After the answer: on a `count = "failures"` route, an answer of 400 or above uses
    /// up one request of the quota.
    pub async fn finish(&self, c: &Checked, status: http::StatusCode) {
        if c.exempt || !c.policy.count_failures || status.as_u16() < 400 {
            return;
        }
        let local = c.quota.divided(self.instances);
        let _ = self
            .store
            .rate_limit(
                &c.store_key,
                self.algorithm,
                &c.quota,
                &local,
                1,
                c.policy.fail_mode(),
            )
            .await;
    }

    /// Adds the rate-limit headers of `c` to an answer.
    pub fn headers(&self, c: &Checked, h: &mut HeaderMap) {
        let Some(d) = c.decision else {
            return;
        };
        let name = &c.policy.name;
        let reset = ceil_secs(d.reset_after);
        if matches!(
            self.headers,
            RateLimitHeaders::Draft | RateLimitHeaders::Both
        ) {
            // On every answer: no formatting machinery, one allocation for the state.
            let policy = if c.quota == c.policy.quota {
                c.policy.header.clone()
            } else {
                HeaderValue::from_str(&policy_header(name, &c.quota)).ok()
            };
            let mut num = itoa::Buffer::new();
            let mut state = Vec::with_capacity(name.len() + 32);
            state.push(b'"');
            state.extend_from_slice(name.as_bytes());
            state.extend_from_slice(b"\";r=");
            state.extend_from_slice(num.format(d.remaining).as_bytes());
            state.extend_from_slice(b";t=");
            state.extend_from_slice(num.format(reset).as_bytes());
            if let (Some(p), Ok(s)) = (
                policy,
                HeaderValue::from_maybe_shared(bytes::Bytes::from(state)),
            ) {
                h.insert(RATELIMIT_POLICY.clone(), p);
                h.insert(RATELIMIT.clone(), s);
            }
        }
        if matches!(
            self.headers,
            RateLimitHeaders::Legacy | RateLimitHeaders::Both
        ) {
            h.insert(X_LIMIT.clone(), HeaderValue::from(c.quota.limit.get()));
            h.insert(X_REMAINING.clone(), HeaderValue::from(d.remaining));
            // As express-rate-limit and GitHub send it: the Unix time, in seconds.
            h.insert(X_RESET.clone(), HeaderValue::from(now_secs() + reset));
        }
    }

    /// The 429 for `c`.
    pub fn refusal(&self, c: &Checked) -> (Problem, u64) {
        let wait = c.decision.map_or(1, |d| ceil_secs(d.retry_after).max(1));
        let p = Problem::new(ProblemKind::QuotaExceeded)
            .detail(format!(
                "the rate limit of this client is reached; retry in {wait} s"
            ))
            .extension("violated-policies", serde_json::json!([&*c.policy.name]));
        (p, wait)
    }

    /// The 503 when the store is unavailable and the policy denies.
    pub fn unavailable(&self) -> (Problem, u64) {
        (
            Problem::new(ProblemKind::StoreUnavailable)
                .detail("rate limiting is temporarily unavailable; retry shortly"),
            UNAVAILABLE_RETRY,
        )
    }

    /// Sets an override (stored, and applied here at once).
    pub async fn set_override(&self, key: &str, ov: Override) -> Result<Option<Override>, ()> {
        let old = self.overrides.find(key, None);
        let json = serde_json::to_string(&ov).map_err(|_| ())?;
        match self
            .store
            .map_set(OVERRIDES_MAP, key, &json, FailMode::Deny)
            .await
        {
            Routed::Shared(()) => {}
            _ => return Err(()),
        }
        self.overrides
            .map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), ov);
        self.forget_over();
        Ok(old)
    }

    /// Removes an override; the removed one, if it was live.
    pub async fn remove_override(&self, key: &str) -> Result<Option<Override>, ()> {
        let old = self.overrides.find(key, None);
        match self
            .store
            .map_remove(OVERRIDES_MAP, key, FailMode::Deny)
            .await
        {
            Routed::Shared(_) => {}
            _ => return Err(()),
        }
        self.overrides
            .map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.forget_over();
        Ok(old)
    }

    /// Removes every override.
    pub async fn clear_overrides(&self) -> Result<usize, ()> {
        let keys: Vec<String> = self.overrides.list().into_iter().map(|(k, _)| k).collect();
        for k in &keys {
            self.remove_override(k).await?;
        }
        Ok(keys.len())
    }

    /// Resets a key's counters under every policy.
    pub async fn reset_counters(&self, key: &str) -> Result<(), ()> {
        for p in self.policies() {
            let store_key = self.store.key("rl", &format!("{}:{key}", p.name));
            if let Routed::Unavailable = self.store.delete(&store_key, FailMode::Deny).await {
                return Err(());
            }
        }
        let mark = format!("{}-{}", std::process::id(), now_nanos());
        if let Routed::Unavailable = self
            .store
            .map_set(RESETS_MAP, "last", &mark, FailMode::Deny)
            .await
        {
            return Err(());
        }
        *self.last_reset.lock().unwrap_or_else(|p| p.into_inner()) = Some(mark);
        self.forget_over();
        Ok(())
    }

    /// Pulls overrides (and counter resets) from the store now, then every
    /// [`OVERRIDE_POLL`].
    pub fn spawn_override_sync(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let limiter = self.clone();
        tokio::spawn(async move {
            loop {
                limiter.sync().await;
                tokio::time::sleep(OVERRIDE_POLL).await;
            }
        })
    }

    async fn sync(&self) {
        if let Routed::Shared(all) = self.store.map_all(OVERRIDES_MAP, FailMode::Deny).await {
            let now = now_secs();
            let mut fresh = HashMap::new();
            for (k, v) in all {
                match serde_json::from_str::<Override>(&v) {
                    Ok(o) if o.expires > now => {
                        fresh.insert(k, o);
                    }
                    // Expired (or unreadable): it no longer exists.
                    _ => {
                        let _ = self
                            .store
                            .map_remove(OVERRIDES_MAP, &k, FailMode::Deny)
                            .await;
                    }
                }
            }
            if self.overrides.replace(fresh) {
                self.forget_over();
            }
        }
        if let Routed::Shared(all) = self.store.map_all(RESETS_MAP, FailMode::Deny).await {
            let mark = all.get("last").cloned();
            let mut last = self.last_reset.lock().unwrap_or_else(|p| p.into_inner());
            if *last != mark {
                *last = mark;
                drop(last);
                self.forget_over();
            }
        }
    }
}
