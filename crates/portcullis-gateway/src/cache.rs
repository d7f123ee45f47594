//! The response cache: a bounded in-memory tier per instance in front of a shared Redis
//! tier, with purges that reach every instance.
//!
//! What may be stored and for how long is decided by [`portcullis::cache`]; this module
//! keeps the entries:
//!
//! - **keys**: an entry's key is `METHOD path?query` (what `POST /admin/cache/purge`
//!   names, `HEAD` sharing `GET`'s entries), plus the `Host`, the subject on routes with
//!   `per_subject = true`, and the forwarded scheme and host from a trusted proxy; the
//!   request headers named by the response's `Vary` select the variant (one per key: a
//!   request for another variant fetches and replaces it);
//! - **tiers**: the in-memory tier (moka, bounded by `cache.max_entries` and
//!   `cache.max_memory`) answers first; with Redis configured, a miss there reads the
//!   shared tier (within `redis.command_timeout`, through the breaker), and what is
//!   stored goes to both. While Redis is unavailable only the in-memory tier is used;
//! - **purges** (by key, path prefix, tag, and after a successful unsafe request, by
//!   path) apply to this instance at once and are appended to a shared log
//!   ([`portcullis_core::store::purges`]) that every instance polls every
//!   [`POLL_INTERVAL`]. Every entry remembers the last purge its instance had applied
//!   when it fetched the response; an entry read from Redis is served only if no purge
//!   this instance knows of since then matches it, so the shared tier needs no index to
//!   purge by prefix or tag, and a response fetched while a purge was on its way is never
//!   stored past it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use metrics::{Counter, counter, describe_counter};
use pin_project_lite::pin_project;
use portcullis::BoxError;
use portcullis::RejectionBody;
use portcullis::cache::{
    NOT_MODIFIED_FIELDS, RequestClass, classify, not_modified, selecting_value, storable,
    vary_names,
};
use portcullis_core::Clock;
use portcullis_core::store::purges::{PURGE_LOG_LEN, PURGE_PAGE};
use portcullis_core::store::{FailMode, Routed, SharedStore};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::body::Body;

/// `X-Cache`: whether the cache answered (`HIT`), was asked and fetched (`MISS`), or
/// stayed out of the way (`BYPASS`).
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// How often each instance reads the shared purge log.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The longest an entry lives in the shared tier.
const SHARED_TTL_CAP: Duration = Duration::from_secs(24 * 3600);

const HIT: HeaderValue = HeaderValue::from_static("HIT");
const MISS: HeaderValue = HeaderValue::from_static("MISS");
const BYPASS: HeaderValue = HeaderValue::from_static("BYPASS");

/// `[cache]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Cache every route's responses the upstream marks fresh, not only routes with
    /// `cache = {…}`.
    pub enabled: bool,
    /// Entries kept in memory.
    pub max_entries: u64,
    /// Largest body stored.
    pub max_body: u64,
    /// Memory the in-memory tier may use.
    pub max_memory: u64,
}

/// A route's `cache = {…}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteCache {
    /// Caps freshness; the default for 200, 203 and 204 without any.
    pub ttl: Option<Duration>,
    /// Tags its entries carry, for `POST /admin/cache/purge {"tag"}`.
    pub tags: Arc<[String]>,
    /// Store responses to authenticated requests, keyed by subject.
    pub per_subject: bool,
}

/// What a purge removes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Purge {
    /// The entries of one key, `METHOD path?query`.
    Key(String),
    /// Every entry whose path starts with this.
    Prefix(String),
    /// Every entry of routes with this tag.
    Tag(String),
    /// Every entry of this path, whatever its query (after an unsafe request to it).
    Path(String),
}

impl Purge {
    /// Checks and normalises a purge from the admin API: a key is `GET` or `HEAD` and a
    /// normalised absolute path (with its query), a prefix starts with `/`, a tag is not
    /// empty.
    pub fn normalized(self) -> Result<Self, String> {
        match self {
            Purge::Key(k) => {
                let (method, target) = k
                    .split_once(' ')
                    .ok_or("a key is \"METHOD /path?query\", e.g. \"GET /products?page=2\"")?;
                if !method.eq_ignore_ascii_case("GET") && !method.eq_ignore_ascii_case("HEAD") {
                    return Err(format!(
                        "only GET and HEAD responses are cached; got method {method:?}"
                    ));
                }
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (target, None),
                };
                let path = normal_path(path)?;
                Ok(Purge::Key(primary(&path, query)))
            }
            Purge::Prefix(p) => Ok(Purge::Prefix(normal_path(&p)?)),
            Purge::Path(p) => Ok(Purge::Path(normal_path(&p)?)),
            Purge::Tag(t) if t.trim().is_empty() => Err("the tag is empty".into()),
            Purge::Tag(t) => Ok(Purge::Tag(t)),
        }
    }

    fn matches(&self, e: &Entry) -> bool {
        match self {
            Purge::Key(k) => *e.primary == **k,
            Purge::Prefix(p) => e.path().starts_with(p.as_str()),
            Purge::Tag(t) => e.tags.iter().any(|x| x == t),
            Purge::Path(p) => e.path() == p,
        }
    }

    /// What it purges by: `key`, `prefix`, `tag` or `path`.
    pub fn kind(&self) -> &'static str {
        match self {
            Purge::Key(_) => "key",
            Purge::Prefix(_) => "prefix",
            Purge::Tag(_) => "tag",
            Purge::Path(_) => "path",
        }
    }

    /// Its JSON form, as the admin API takes it and the shared log holds it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn normal_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("expected a path starting with '/'; got {p:?}"));
    }
    portcullis::path::normalize(p)
        .map(|n| n.as_str().to_owned())
        .map_err(|e| e.to_string())
}

/// `GET path?query`: the key purges name.
fn primary(path: &str, query: Option<&str>) -> String {
    let mut k = String::with_capacity(4 + path.len() + query.map_or(0, |q| q.len() + 1));
    k.push_str("GET ");
    k.push_str(path);
    if let Some(q) = query {
        k.push('?');
        k.push_str(q);
    }
    k
}

/// A stored response.
#[derive(Debug)]
struct Entry {
    /// `GET path?query`.
    primary: Box<str>,
    tags: Arc<[String]>,
    /// The request headers the response varies on, and the values it was stored for.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored_at: SystemTime,
    initial_age: u64,
    fresh_for: Duration,
    /// How long after going stale it may stand in for a failed upstream.
    stale_for: Duration,
    /// The last purge its instance had applied when the response was fetched.
    seq: u64,
}

impl Entry {
    fn path(&self) -> &str {
        let target = &self.primary[4..];
        target.split_once('?').map_or(target, |(p, _)| p)
    }

    fn fresh_at(&self, now: SystemTime) -> bool {
        self.younger_than(self.fresh_for, now)
    }

    /// Whether it may still stand in for a failed upstream (`stale-if-error`).
    fn usable_on_error_at(&self, now: SystemTime) -> bool {
        self.younger_than(self.fresh_for + self.stale_for, now)
    }

    /// Whether less than `span` has passed since it was stored (a clock that went back
    /// counts as none).
    fn younger_than(&self, span: Duration, now: SystemTime) -> bool {
        now.duration_since(self.stored_at)
            .map_or(true, |d| d < span)
    }

    /// Bytes it holds, roughly.
    fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        256 + self.primary.len() + self.body.len() + headers
    }

    fn selects(&self, req: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| selecting_value(req, name).as_ref() == value.as_ref())
    }

    // The shared tier's format: a version byte, the fixed fields, then length-prefixed
    // strings and headers, then the body.
    fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.size() + 64);
        b.put_u8(2);
        b.put_u16(self.status.as_u16());
        b.put_u64(millis(self.stored_at));
        b.put_u64(self.initial_age);
        b.put_u64(u64::try_from(self.fresh_for.as_millis()).unwrap_or(u64::MAX));
        b.put_u64(u64::try_from(self.stale_for.as_millis()).unwrap_or(u64::MAX));
        b.put_u64(self.seq);
        put_str(&mut b, &self.primary);
        b.put_u16(self.tags.len() as u16);
        for t in self.tags.iter() {
            put_str(&mut b, t);
        }
        b.put_u16(self.vary.len() as u16);
        for (n, v) in &self.vary {
            put_str(&mut b, n.as_str());
            match v {
                Some(v) => {
                    b.put_u8(1);
                    put_bytes(&mut b, v.as_bytes());
                }
                None => b.put_u8(0),
            }
        }
        b.put_u16(self.headers.len() as u16);
        for (n, v) in &self.headers {
            put_str(&mut b, n.as_str());
            put_bytes(&mut b, v.as_bytes());
        }
        b.put_slice(&self.body);
        b.freeze()
    }

    fn decode(mut b: Bytes) -> Option<Self> {
        fn need(b: &Bytes, n: usize) -> Option<()> {
            (b.remaining() >= n).then_some(())
        }
        fn bytes(b: &mut Bytes) -> Option<Bytes> {
            need(b, 4)?;
            let n = b.get_u32() as usize;
            need(b, n)?;
            Some(b.split_to(n))
        }
        fn string(b: &mut Bytes) -> Option<String> {
            String::from_utf8(bytes(b)?.to_vec()).ok()
        }
        need(&b, 1 + 2 + 8 * 5)?;
        if b.get_u8() != 2 {
            return None;
        }
        let status = StatusCode::from_u16(b.get_u16()).ok()?;
        let stored_at = SystemTime::UNIX_EPOCH + Duration::from_millis(b.get_u64());
        let initial_age = b.get_u64();
        let fresh_for = Duration::from_millis(b.get_u64());
        let stale_for = Duration::from_millis(b.get_u64());
        let seq = b.get_u64();
        let primary = string(&mut b)?.into_boxed_str();
        if !primary.starts_with("GET /") {
            return None;
        }
        need(&b, 2)?;
        let tags: Vec<String> = (0..b.get_u16())
            .map(|_| string(&mut b))
            .collect::<Option<_>>()?;
        need(&b, 2)?;
        let mut vary = Vec::new();
        for _ in 0..b.get_u16() {
            let name = HeaderName::from_bytes(string(&mut b)?.as_bytes()).ok()?;
            need(&b, 1)?;
            let value = match b.get_u8() {
                0 => None,
                _ => Some(HeaderValue::from_maybe_shared(bytes(&mut b)?).ok()?),
            };
            vary.push((name, value));
        }
        need(&b, 2)?;
        let mut headers = HeaderMap::new();
        for _ in 0..b.get_u16() {
            let name = HeaderName::from_bytes(string(&mut b)?.as_bytes()).ok()?;
            let value = HeaderValue::from_maybe_shared(bytes(&mut b)?).ok()?;
            headers.append(name, value);
        }
        Some(Self {
            primary,
            tags: tags.into(),
            vary,
            status,
            headers,
            body: b,
            stored_at,
            initial_age,
            fresh_for,
            stale_for,
            seq,
        })
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    put_bytes(b, s.as_bytes());
}

fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(s.len() as u32);
    b.put_slice(s);
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The purges this instance knows of, to check entries read from the shared tier.
#[derive(Debug, Default)]
struct PurgeLog {
    /// The last purge of the shared log applied here (the poll cursor); without Redis, a
    /// local count.
    applied: u64,
    /// Entries fetched before this purge cannot be checked (the log was cut): not served.
    floor: u64,
    /// The newest purges, oldest first.
    recent: VecDeque<(u64, Purge)>,
    /// The log has been read once: until then, nothing is read from the shared tier.
    synced: bool,
}

impl PurgeLog {
    fn remember(&mut self, seq: u64, p: Purge) {
        self.recent.push_back((seq, p));
        while self.recent.len() as u64 > PURGE_LOG_LEN {
            if let Some((s, _)) = self.recent.pop_front() {
                self.floor = self.floor.max(s);
            }
        }
    }

    /// Whether an entry fetched after purge `e.seq` is still good: no purge since matches.
    fn allows(&self, e: &Entry) -> bool {
        e.seq >= self.floor
            && !self
                .recent
                .iter()
                .rev()
                .take_while(|(s, _)| *s > e.seq)
                .any(|(_, p)| p.matches(e))
    }
}

/// Counters of `portcullis_cache_requests_total{result}`.
#[derive(Debug)]
struct CacheMetrics {
    hit: Counter,
    miss: Counter,
    bypass: Counter,
}

/// The cache.
pub struct ResponseCache {
    memory: moka::sync::Cache<Arc<str>, Arc<Entry>>,
    store: SharedStore,
    clock: Arc<dyn Clock>,
    max_body: u64,
    /// The rule of routes without `cache = {…}` when `cache.enabled`.
    all_routes: Option<RouteCache>,
    log: Mutex<PurgeLog>,
    /// Misses being fetched: later requests for the same key wait for them.
    fetching: InFlight,
    metrics: CacheMetrics,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.memory.entry_count())
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// The metric of cache decisions.
pub const CACHE_REQUESTS_TOTAL: &str = "portcullis_cache_requests_total";

/// What the cache did with a request.
#[derive(Debug)]
pub enum Lookup {
    /// Answered from the cache.
    Hit(Response<Body>),
    /// To be fetched; hand the response to [`ResponseCache::fill`].
    Miss(Pending),
    /// Not for the cache: forward, then mark the answer `X-Cache: BYPASS`.
    Bypass,
    /// An unsafe request: forward, then [`ResponseCache::invalidate`] with the answer.
    Invalidate,
}

impl Lookup {
    /// What the cache did, for traces: `hit`, `miss`, `bypass` or `invalidate`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Lookup::Hit(_) => "hit",
            Lookup::Miss(_) => "miss",
            Lookup::Bypass => "bypass",
            Lookup::Invalidate => "invalidate",
        }
    }
}

/// A miss on its way to the upstream.
#[derive(Debug)]
pub struct Pending {
    key: Arc<str>,
    primary: Box<str>,
    rule: RouteCache,
    request_headers: HeaderMap,
    seq: u64,
    /// `false` for `HEAD`: its answer has no body to store.
    store: bool,
    /// A stale entry that may stand in if the upstream fails (`stale-if-error`).
    stale: Option<Arc<Entry>>,
    /// Held while this request is the one fetching its key: dropped when its answer is
    /// stored (or turns out not to be), waking the requests waiting for it.
    _fetching: Option<Fetching>,
}

/// The misses being fetched, by key.
type InFlight = Arc<Mutex<HashMap<Arc<str>, Arc<Notify>>>>;

/// The longest a request waits for another request's answer to the same key before
/// fetching its own (nginx's `proxy_cache_lock_timeout` default).
pub const COLLAPSE_WAIT: Duration = Duration::from_secs(5);

/// This request is fetching its key; the others wait until this is dropped.
#[derive(Debug)]
struct Fetching {
    map: InFlight,
    key: Arc<str>,
    notify: Arc<Notify>,
}

impl Drop for Fetching {
    fn drop(&mut self) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map
            .get(&self.key)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            map.remove(&self.key);
        }
        drop(map);
        self.notify.notify_waiters();
    }
}

impl ResponseCache {
    /// A cache with the settings of `[cache]`, sharing entries and purges through
    /// `store` when it is Redis.
    pub fn new(cfg: &CacheConfig, store: SharedStore, clock: Arc<dyn Clock>) -> Arc<Self> {
        describe_counter!(
            CACHE_REQUESTS_TOTAL,
            "Requests on cached routes: hit, miss (fetched) or bypass."
        );
        // Each entry weighs at least an equal share of the memory, so that neither
        // `max_entries` nor `max_memory` is exceeded.
        let slot = (cfg.max_memory / cfg.max_entries.max(1)).max(1);
        let memory = moka::sync::Cache::builder()
            .max_capacity(cfg.max_memory)
            .weigher(move |_k: &Arc<str>, e: &Arc<Entry>| {
                u32::try_from((e.size() as u64).max(slot)).unwrap_or(u32::MAX)
            })
            .expire_after(Expiry)
            .build();
        Arc::new(Self {
            memory,
            store,
            clock,
            max_body: cfg.max_body,
            all_routes: cfg.enabled.then(RouteCache::default),
            log: Mutex::new(PurgeLog::default()),
            fetching: InFlight::default(),
            metrics: CacheMetrics {
                hit: counter!(CACHE_REQUESTS_TOTAL, "result" => "hit"),
                miss: counter!(CACHE_REQUESTS_TOTAL, "result" => "miss"),
                bypass: counter!(CACHE_REQUESTS_TOTAL, "result" => "bypass"),
            },
        })
    }

    /// The caching rule of a route: its own, else the default when `cache.enabled`.
    pub fn rule<'r>(&'r self, route: Option<&'r RouteCache>) -> Option<&'r RouteCache> {
        route.or(self.all_routes.as_ref())
    }

    /// Looks a request up. `subject`: the verified caller; `authorization`: the request
    /// carries credentials of any kind.
    #[allow(clippy::too_many_arguments)] // the request's parts, passed once
    pub async fn lookup(
        &self,
        rule: &RouteCache,
        method: &Method,
        headers: &HeaderMap,
        path: &str,
        query: Option<&str>,
        subject: Option<&str>,
        peer_trusted: bool,
    ) -> Lookup {
        let refresh = match classify(method, headers, peer_trusted) {
            RequestClass::Lookup => false,
            RequestClass::Refresh => true,
            RequestClass::Invalidate => {
                self.metrics.bypass.increment(1);
                return Lookup::Invalidate;
            }
            RequestClass::Bypass(_) => return self.bypass(),
        };
        // Credentials: shared entries only for anonymous requests; per subject, keyed by it.
        let subject = match (subject, rule.per_subject) {
            (Some(s), true) => s,
            (Some(_), false) => return self.bypass(),
            (None, _) if headers.contains_key(header::AUTHORIZATION) => return self.bypass(),
            (None, _) => "",
        };
        let primary = primary(path, query);
        let key = variant_key(&primary, headers, subject, peer_trusted);
        let head = method == Method::HEAD;
        if !refresh {
            let now = self.clock.system_time();
            if let Some(e) = self.find(&key, now).await.filter(|e| e.selects(headers)) {
                return self.hit(&e, headers, head, now);
            }
        }
        // A miss: the first request for the key fetches it; the others wait (a while) for
        // its answer instead of all going to the upstream at once.
        // (A request asking for a fresh answer fetches its own.)
        let fetching = match if refresh {
            Err(())
        } else {
            self.lead_or_wait(&key).await
        } {
            Ok(lead) => Some(lead),
            Err(()) if refresh => None,
            Err(()) => {
                let now = self.clock.system_time();
                let stored = self.memory.get(&key);
                if let Some(e) = stored.filter(|e| e.fresh_at(now) && e.selects(headers)) {
                    return self.hit(&e, headers, head, now);
                }
                None
            }
        };
        self.metrics.miss.increment(1);
        let now = self.clock.system_time();
        let stale = self
            .memory
            .get(&key)
            .filter(|e| !e.stale_for.is_zero() && e.usable_on_error_at(now) && e.selects(headers));
        Lookup::Miss(Pending {
            stale,
            key,
            primary: primary.into_boxed_str(),
            rule: rule.clone(),
            request_headers: headers.clone(),
            seq: self.log.lock().expect("purge log").applied,
            store: !head,
            _fetching: fetching,
        })
    }

    /// The fresh entry of `key`, from memory, else from the shared tier. A stale one is
    /// kept while it may still stand in for a failed upstream.
    async fn find(&self, key: &Arc<str>, now: SystemTime) -> Option<Arc<Entry>> {
        match self.memory.get(key) {
            Some(e) if e.fresh_at(now) => Some(e),
            Some(e) => {
                if !e.usable_on_error_at(now) {
                    self.memory.invalidate(key);
                }
                None
            }
            None => self.shared_get(key, now).await,
        }
    }

    /// The answer to send instead of a failed upstream's (its 5xx, or the gateway's 502 or
    /// 504): the stale entry the miss found, while `stale-if-error` allows it.
    pub fn fall_back(&self, pending: &Pending) -> Option<Response<Body>> {
        let e = pending.stale.as_ref()?;
        let now = self.clock.system_time();
        if !e.usable_on_error_at(now) {
            return None;
        }
        tracing::warn!(
            key = %e.primary,
            "the upstream failed; answered with a stale cached answer (stale-if-error)"
        );
        Some(self.respond(e, &pending.request_headers, !pending.store, now))
    }

    /// `Ok`: nobody was fetching `key`, and this request now is (until the guard drops).
    /// `Err`: another request was; this one waited for it to finish (at most
    /// [`COLLAPSE_WAIT`]).
    async fn lead_or_wait(&self, key: &Arc<str>) -> Result<Fetching, ()> {
        let notify = {
            let mut map = self.fetching.lock().expect("in-flight misses");
            match map.get(key) {
                Some(n) => n.clone(),
                None => {
                    let n = Arc::new(Notify::new());
                    map.insert(key.clone(), n.clone());
                    return Ok(Fetching {
                        map: self.fetching.clone(),
                        key: key.clone(),
                        notify: n,
                    });
                }
            }
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before looking again: the leader removes its entry under the lock
        // and then wakes whoever registered, so the wake-up cannot be missed.
        notified.as_mut().enable();
        let still = self
            .fetching
            .lock()
            .expect("in-flight misses")
            .get(key)
            .is_some_and(|n| Arc::ptr_eq(n, &notify));
        if still {
            let _ = tokio::time::timeout(COLLAPSE_WAIT, notified).await;
        }
        Err(())
    }

    fn hit(&self, e: &Entry, headers: &HeaderMap, head: bool, now: SystemTime) -> Lookup {
        self.metrics.hit.increment(1);
        Lookup::Hit(self.respond(e, headers, head, now))
    }

    fn bypass(&self) -> Lookup {
        self.metrics.bypass.increment(1);
        Lookup::Bypass
    }

    /// The shared tier's entry for `key`, if it is fresh and no purge since it was
    /// fetched matches it; kept in memory too.
    async fn shared_get(&self, key: &Arc<str>, now: SystemTime) -> Option<Arc<Entry>> {
        if !self.store.shares_purges() || !self.log.lock().expect("purge log").synced {
            return None;
        }
        let raw = match self
            .store
            .get(&self.store.key("cache", key), FailMode::Allow)
            .await
        {
            Routed::Shared(Some(raw)) => raw,
            _ => return None,
        };
        let e = Arc::new(Entry::decode(raw)?);
        if !e.fresh_at(now) || !self.log.lock().expect("purge log").allows(&e) {
            return None;
        }
        self.memory.insert(key.clone(), e.clone());
        Some(e)
    }

    fn respond(&self, e: &Entry, req: &HeaderMap, head: bool, now: SystemTime) -> Response<Body> {
        let mut res = if e.status == StatusCode::OK && not_modified(req, &e.headers) {
            let mut res = Response::new(Body::from_bytes(Bytes::new()));
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            for name in NOT_MODIFIED_FIELDS {
                for v in e.headers.get_all(name) {
                    res.headers_mut().append(name, v.clone());
                }
            }
            res
        } else {
            let body = if head { Bytes::new() } else { e.body.clone() };
            let mut res = Response::new(Body::from_bytes(body));
            *res.status_mut() = e.status;
            *res.headers_mut() = e.headers.clone();
            res
        };
        let age = portcullis::cache::current_age(e.initial_age, e.stored_at, now);
        res.headers_mut()
            .insert(header::AGE, HeaderValue::from(age));
        res.headers_mut().insert(X_CACHE, HIT);
        res
    }

    /// Marks a response `X-Cache: BYPASS`.
    pub fn mark_bypass(res: &mut Response<Body>) {
        res.headers_mut().insert(X_CACHE, BYPASS);
    }

    /// The upstream's answer to a miss: marked `MISS`, and stored as its body passes
    /// through when it may be (whole, not larger than `cache.max_body`).
    pub fn fill(self: &Arc<Self>, pending: Pending, mut res: Response<Body>) -> Response<Body> {
        res.headers_mut().insert(X_CACHE, MISS);
        if !pending.store {
            return res;
        }
        let now = self.clock.system_time();
        let Ok(fresh) = storable(
            res.status(),
            res.headers(),
            pending.rule.ttl,
            pending.rule.per_subject,
            now,
        ) else {
            return res;
        };
        let Some(names) = vary_names(res.headers()) else {
            return res;
        };
        let declared = res
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return res;
        }
        let vary = names
            .into_iter()
            .map(|n| {
                let v = selecting_value(&pending.request_headers, &n);
                (n, v)
            })
            .collect();
        let mut headers = res.headers().clone();
        for h in [header::AGE, X_CACHE, portcullis::request_id::X_REQUEST_ID] {
            headers.remove(h);
        }
        let fetching = pending._fetching;
        let (parts, body) = res.into_parts();
        let cache = self.clone();
        let template = Entry {
            primary: pending.primary,
            tags: pending.rule.tags.clone(),
            vary,
            status: parts.status,
            headers,
            body: Bytes::new(),
            stored_at: now,
            initial_age: fresh.initial_age,
            fresh_for: fresh.fresh_for,
            stale_for: fresh.stale_for,
            seq: pending.seq,
        };
        let key = pending.key;
        let capture = Capture {
            inner: body,
            chunks: Some(Vec::new()),
            size: 0,
            limit: self.max_body,
            done: Some(Box::new(move |body| {
                cache.insert(key, Entry { body, ..template });
                // Stored: the requests waiting for this answer find it now.
                drop(fetching);
            })),
        };
        Response::from_parts(parts, Body::new(capture))
    }

    fn insert(&self, key: Arc<str>, mut entry: Entry) {
        if !self.log.lock().expect("purge log").allows(&entry) {
            return; // purged while it was being fetched
        }
        // Framed by its length when served (a `HEAD` hit included), whatever the
        // upstream's framing was.
        entry.headers.remove(header::TRANSFER_ENCODING);
        entry
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
        let entry = Arc::new(entry);
        self.memory.insert(key.clone(), entry.clone());
        if self.store.shares_purges() {
            let store = self.store.clone();
            tokio::spawn(async move {
                let ttl = (entry.fresh_for + entry.stale_for).min(SHARED_TTL_CAP);
                let _ = store
                    .set(
                        &store.key("cache", &key),
                        entry.encode(),
                        ttl,
                        FailMode::Allow,
                    )
                    .await;
            });
        }
    }

    /// After an unsafe request: a success drops the entries of its path, and of the
    /// paths it names in `Location` and `Content-Location` (RFC 9111 §4.4).
    pub fn invalidate(self: &Arc<Self>, path: &str, res: &mut Response<Body>) {
        Self::mark_bypass(res);
        if !(res.status().is_success() || res.status().is_redirection()) {
            return;
        }
        let mut paths = vec![path.to_owned()];
        for h in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(p) = res
                .headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.starts_with('/') && !v.starts_with("//"))
                .map(|v| v.split(['?', '#']).next().unwrap_or(v))
                .and_then(|v| normal_path(v).ok())
                && !paths.contains(&p)
            {
                paths.push(p);
            }
        }
        let cache = self.clone();
        tokio::spawn(async move {
            for p in paths {
                let _ = cache.purge(Purge::Path(p)).await;
            }
        });
    }

    /// Applies a purge here and sends it to every instance; the number of entries it
    /// removed here. `Err` when it could not be shared (Redis unavailable): it applied
    /// here only.
    pub async fn purge(&self, p: Purge) -> Result<u64, u64> {
        let removed = self.purge_here(&p);
        if !self.store.shares_purges() {
            let mut log = self.log.lock().expect("purge log");
            let seq = log.applied + 1;
            log.applied = seq;
            log.remember(seq, p);
            return Ok(removed);
        }
        match self.store.cache_purge_publish(&p.to_json()).await {
            Ok(_) => Ok(removed),
            Err(e) => {
                // Only the kind: a key is a URL whose query may hold a secret, and the
                // admin API's own (redacted) audit line names the purge in full.
                tracing::warn!(error = %e, purge = p.kind(), "cache purge applied on this instance only: the shared store is unavailable");
                Err(removed)
            }
        }
    }

    fn purge_here(&self, p: &Purge) -> u64 {
        let mut removed = 0;
        for (k, e) in self.memory.iter() {
            if p.matches(&e) {
                self.memory.invalidate(&**k);
                removed += 1;
            }
        }
        removed
    }

    /// Reads the shared purge log until caught up, applying what it finds; `Err` when
    /// the store is unavailable.
    pub async fn sync(&self) -> Result<(), ()> {
        loop {
            let cursor = self.log.lock().expect("purge log").applied;
            let page = self
                .store
                .cache_purges_since(cursor)
                .await
                .map_err(|_| ())?;
            let mut log = self.log.lock().expect("purge log");
            if page.gap {
                // Purges were missed: nothing cached before can be trusted.
                if log.synced {
                    tracing::warn!(
                        "cache purges were missed (the shared log moved past this instance); dropping the in-memory tier"
                    );
                }
                self.memory.invalidate_all();
                log.recent.clear();
                log.applied = page.latest;
                log.floor = page.latest;
                log.synced = true;
                return Ok(());
            }
            let full = page.purges.len() >= PURGE_PAGE;
            for (seq, raw) in page.purges {
                if let Ok(p) = serde_json::from_str::<Purge>(&raw) {
                    self.purge_here(&p);
                    log.remember(seq, p);
                }
                log.applied = seq;
            }
            if !full {
                log.synced = true;
                return Ok(());
            }
        }
    }

    /// Polls the shared purge log every [`POLL_INTERVAL`] (nothing to do without Redis).
    pub fn spawn_sync(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.store.shares_purges() {
            return None;
        }
        let cache = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let _ = cache.sync().await;
            }
        }))
    }

    /// Entries in the in-memory tier (after pending evictions).
    pub fn len(&self) -> u64 {
        self.memory.run_pending_tasks();
        self.memory.entry_count()
    }

    /// Whether the in-memory tier is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key of one variant set: the primary key, the `Host`, the subject, and a trusted
/// proxy's forwarded scheme and host (which the upstream sees).
fn variant_key(primary: &str, headers: &HeaderMap, subject: &str, trusted: bool) -> Arc<str> {
    let host = headers.get(header::HOST).map_or(&b""[..], |v| v.as_bytes());
    let mut k = String::with_capacity(primary.len() + host.len() + subject.len() + 8);
    k.push_str(primary);
    k.push('\0');
    k.push_str(&String::from_utf8_lossy(host));
    k.push('\0');
    k.push_str(subject);
    if trusted {
        for h in ["x-forwarded-proto", "x-forwarded-host"] {
            k.push('\0');
            if let Some(v) = headers.get(h) {
                k.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
        }
    }
    Arc::from(k)
}

/// Entries leave the in-memory tier when they go stale.
struct Expiry;

impl moka::Expiry<Arc<str>, Arc<Entry>> for Expiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        e: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(e.fresh_for + e.stale_for)
    }
}

type Done = Box<dyn FnOnce(Bytes) + Send>;

pin_project! {
    /// A response body on its way to the client, copied for the cache as it passes; the
    /// copy is stored when the body ends whole, within the size limit and without
    /// trailers. A client that goes away, an upstream error or a body over the limit
    /// leaves nothing stored.
    struct Capture {
        #[pin]
        inner: Body,
        chunks: Option<Vec<Bytes>>,
        size: u64,
        limit: u64,
        done: Option<Done>,
    }
}

impl HttpBody for Capture {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        let ended = match &polled {
            Some(Ok(frame)) => {
                match frame.data_ref() {
                    Some(data) => {
                        *this.size += data.len() as u64;
                        if *this.size > *this.limit {
                            *this.chunks = None;
                        } else if let Some(c) = this.chunks.as_mut() {
                            c.push(data.clone());
                        }
                    }
                    None => *this.chunks = None, // trailers
                }
                // A server stops polling once the body says it has ended.
                this.inner.is_end_stream()
            }
            Some(Err(_)) => {
                *this.chunks = None;
                false
            }
            None => true,
        };
        if ended && let (Some(chunks), Some(done)) = (this.chunks.take(), this.done.take()) {
            let body = match chunks.len() {
                0 => Bytes::new(),
                1 => chunks.into_iter().next().unwrap_or_default(),
                _ => {
                    let mut b = BytesMut::with_capacity(*this.size as usize);
                    for c in chunks {
                        b.put_slice(&c);
                    }
                    b.freeze()
                }
            };
            done(body);
        }
        std::task::Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use portcullis_core::clock::ManualClock;
    use portcullis_core::store::MemoryStore;

    fn cache(enabled: bool) -> (Arc<ResponseCache>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let store = SharedStore::memory(MemoryStore::new(1000, clock.clone()), "t");
        let cfg = CacheConfig {
            enabled,
            max_entries: 100,
            max_body: 1024,
            max_memory: 1 << 20,
        };
        (ResponseCache::new(&cfg, store, clock.clone()), clock)
    }

    fn rule(ttl: u64, tags: &[&str]) -> RouteCache {
        RouteCache {
            ttl: Some(Duration::from_secs(ttl)),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            per_subject: false,
        }
    }

    fn upstream(body: &'static str, headers: &[(&str, &str)]) -> Response<Body> {
        let mut res = Response::new(Body::from_bytes(Bytes::from_static(body.as_bytes())));
        for (k, v) in headers {
            res.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        res
    }

    async fn read(res: Response<Body>) -> (Response<()>, Bytes) {
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (Response::from_parts(parts, ()), bytes)
    }

    async fn get(
        c: &Arc<ResponseCache>,
        r: &RouteCache,
        path: &str,
        headers: &HeaderMap,
        body: &'static str,
        res_headers: &[(&str, &str)],
    ) -> (String, Bytes, HeaderMap) {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let res = match c
            .lookup(r, &Method::GET, headers, path, query, None, false)
            .await
        {
            Lookup::Hit(res) => res,
            Lookup::Miss(p) => c.fill(p, upstream(body, res_headers)),
            other => panic!("unexpected {other:?}"),
        };
        let (head, bytes) = read(res).await;
        let x = head.headers()[&X_CACHE].to_str().unwrap().to_owned();
        (x, bytes, head.headers().clone())
    }

    #[tokio::test]
    async fn misses_then_hits_until_the_ttl_with_age() {
        let (c, clock) = cache(false);
        let r = rule(30, &[]);
        let h = HeaderMap::new();
        let (x, b, _) = get(&c, &r, "/p?a=1", &h, "one", &[]).await;
        assert_eq!((x.as_str(), &b[..]), ("MISS", &b"one"[..]));
        clock.advance(Duration::from_secs(7));
        let (x, b, headers) = get(&c, &r, "/p?a=1", &h, "two", &[]).await;
        assert_eq!((x.as_str(), &b[..]), ("HIT", &b"one"[..]));
        assert_eq!(headers[header::AGE], "7");
        // Another query is another entry.
        let (x, _, _) = get(&c, &r, "/p?a=2", &h, "three", &[]).await;
        assert_eq!(x, "MISS");
        clock.advance(Duration::from_secs(24));
        let (x, b, _) = get(&c, &r, "/p?a=1", &h, "four", &[]).await;
        assert_eq!(
            (x.as_str(), &b[..]),
            ("MISS", &b"four"[..]),
            "stale after 30 s"
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_and_uncacheable_answers_are_not_stored() {
        let (c, _) = cache(false);
        let r = rule(30, &[]);
        let h = HeaderMap::new();
        let big: &'static str = Box::leak("x".repeat(2000).into_boxed_str());
        get(&c, &r, "/big", &h, big, &[]).await;
        assert_eq!(get(&c, &r, "/big", &h, big, &[]).await.0, "MISS");
        for (path, header) in [
            ("/cookie", ("set-cookie", "s=1")),
            ("/private", ("cache-control", "private")),
        ] {
            get(&c, &r, path, &h, "a", &[header]).await;
            assert_eq!(
                get(&c, &r, path, &h, "a", &[header]).await.0,
                "MISS",
                "{path}"
            );
        }
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn a_head_miss_stores_nothing_and_a_head_hit_has_the_length() {
        let (c, _) = cache(false);
        let r = rule(30, &[]);
        let h = HeaderMap::new();
        let Lookup::Miss(p) = c
            .lookup(&r, &Method::HEAD, &h, "/h", None, None, false)
            .await
        else {
            panic!("expected a miss")
        };
        read(c.fill(p, upstream("", &[("content-length", "5")]))).await;
        assert!(c.is_empty(), "a HEAD answer has no body to store");
        get(
            &c,
            &r,
            "/h",
            &h,
            "hello",
            &[("transfer-encoding", "chunked")],
        )
        .await;
        let Lookup::Hit(res) = c
            .lookup(&r, &Method::HEAD, &h, "/h", None, None, false)
            .await
        else {
            panic!("expected a hit")
        };
        let (head, body) = read(res).await;
        assert!(body.is_empty());
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "5");
        assert!(!head.headers().contains_key(header::TRANSFER_ENCODING));
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_key_wait_for_the_first_answer() {
        let (c, _) = cache(false);
        let r = rule(30, &[]);
        let h = HeaderMap::new();
        let Lookup::Miss(leader) = c
            .lookup(&r, &Method::GET, &h, "/hot", None, None, false)
            .await
        else {
            panic!("expected a miss")
        };
        let mut followers = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (c, r) = (c.clone(), r.clone());
            followers.spawn(async move {
                match c
                    .lookup(
                        &r,
                        &Method::GET,
                        &HeaderMap::new(),
                        "/hot",
                        None,
                        None,
                        false,
                    )
                    .await
                {
                    Lookup::Hit(res) => read(res).await.1,
                    other => panic!("a follower got {other:?}"),
                }
            });
        }
        // The followers are waiting; the leader's answer arrives and streams through.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            followers.try_join_next().is_none(),
            "followers did not wait"
        );
        read(c.fill(leader, upstream("fetched once", &[]))).await;
        while let Some(body) = followers.join_next().await {
            assert_eq!(&body.unwrap()[..], b"fetched once");
        }
        // A leader whose answer is not stored wakes the others, who fetch their own.
        let Lookup::Miss(leader) = c
            .lookup(&r, &Method::GET, &h, "/cold", None, None, false)
            .await
        else {
            panic!("expected a miss")
        };
        let c2 = c.clone();
        let r2 = r.clone();
        let follower = tokio::spawn(async move {
            c2.lookup(
                &r2,
                &Method::GET,
                &HeaderMap::new(),
                "/cold",
                None,
                None,
                false,
            )
            .await
            .as_str()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        read(c.fill(leader, upstream("private", &[("cache-control", "private")]))).await;
        assert_eq!(follower.await.unwrap(), "miss");
        assert!(
            c.fetching.lock().unwrap().is_empty(),
            "no leader left behind"
        );
    }

    #[tokio::test]
    async fn a_stale_entry_stands_in_for_a_failed_upstream_while_stale_if_error_allows() {
        let (c, clock) = cache(false);
        let r = rule(3600, &[]);
        let h = HeaderMap::new();
        let cc = [("cache-control", "max-age=10, stale-if-error=60")];
        get(&c, &r, "/s", &h, "old", &cc).await;
        get(
            &c,
            &r,
            "/plain",
            &h,
            "old",
            &[("cache-control", "max-age=10")],
        )
        .await;
        clock.advance(Duration::from_secs(20));
        let Lookup::Miss(p) = c
            .lookup(&r, &Method::GET, &h, "/s", None, None, false)
            .await
        else {
            panic!("stale: a miss")
        };
        let (head, body) = read(c.fall_back(&p).expect("a stand-in")).await;
        assert_eq!(&body[..], b"old");
        assert_eq!(head.headers()[&X_CACHE], "HIT");
        assert_eq!(head.headers()[header::AGE], "20");
        drop(p);
        // Without stale-if-error, nothing stands in.
        let Lookup::Miss(p) = c
            .lookup(&r, &Method::GET, &h, "/plain", None, None, false)
            .await
        else {
            panic!("stale: a miss")
        };
        assert!(c.fall_back(&p).is_none());
        drop(p);
        // Past freshness + stale-if-error, neither.
        clock.advance(Duration::from_secs(60));
        let Lookup::Miss(p) = c
            .lookup(&r, &Method::GET, &h, "/s", None, None, false)
            .await
        else {
            panic!("a miss")
        };
        assert!(c.fall_back(&p).is_none());
    }

    #[tokio::test]
    async fn vary_selects_the_variant() {
        let (c, _) = cache(false);
        let r = rule(30, &[]);
        let mut en = HeaderMap::new();
        en.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en"));
        let mut de = HeaderMap::new();
        de.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("de"));
        let vary = [("vary", "Accept-Language")];
        get(&c, &r, "/v", &en, "hello", &vary).await;
        assert_eq!(get(&c, &r, "/v", &en, "x", &vary).await.1, &b"hello"[..]);
        let (x, b, _) = get(&c, &r, "/v", &de, "hallo", &vary).await;
        assert_eq!((x.as_str(), &b[..]), ("MISS", &b"hallo"[..]));
    }

    #[tokio::test]
    async fn purges_by_key_prefix_tag_and_path() {
        let (c, _) = cache(false);
        let products = rule(30, &["products"]);
        let other = rule(30, &[]);
        let h = HeaderMap::new();
        for p in ["/products/1", "/products/2?x=1", "/orders/1"] {
            get(&c, &products, p, &h, "b", &[]).await;
        }
        get(&c, &other, "/misc", &h, "b", &[]).await;
        assert_eq!(c.len(), 4);
        let key = Purge::Key("HEAD /products/2?x=1".into())
            .normalized()
            .unwrap();
        assert_eq!(key, Purge::Key("GET /products/2?x=1".into()));
        assert_eq!(c.purge(key).await, Ok(1));
        assert_eq!(c.purge(Purge::Prefix("/products".into())).await, Ok(1));
        assert_eq!(
            c.purge(Purge::Tag("products".into())).await,
            Ok(1),
            "/orders/1 has the tag"
        );
        assert_eq!(c.purge(Purge::Path("/misc".into())).await, Ok(1));
        assert!(c.is_empty());
        assert!(Purge::Key("POST /x".into()).normalized().is_err());
        assert!(Purge::Prefix("x".into()).normalized().is_err());
        assert!(Purge::Tag(" ".into()).normalized().is_err());
    }

    #[tokio::test]
    async fn a_response_fetched_before_a_purge_is_not_stored_after_it() {
        let (c, _) = cache(false);
        let r = rule(30, &["t"]);
        let h = HeaderMap::new();
        let Lookup::Miss(pending) = c
            .lookup(&r, &Method::GET, &h, "/a", None, None, false)
            .await
        else {
            panic!("expected a miss")
        };
        c.purge(Purge::Tag("t".into())).await.unwrap();
        read(c.fill(pending, upstream("old", &[]))).await;
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn credentials_bypass_unless_keyed_by_subject() {
        let (c, _) = cache(false);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        let r = rule(30, &[]);
        assert!(matches!(
            c.lookup(&r, &Method::GET, &h, "/a", None, None, false)
                .await,
            Lookup::Bypass
        ));
        assert!(matches!(
            c.lookup(&r, &Method::GET, &h, "/a", None, Some("alice"), false)
                .await,
            Lookup::Bypass
        ));
        let per = RouteCache {
            per_subject: true,
            ..r
        };
        let Lookup::Miss(p) = c
            .lookup(&per, &Method::GET, &h, "/a", None, Some("alice"), false)
            .await
        else {
            panic!("expected a miss")
        };
        read(c.fill(p, upstream("alice's", &[("cache-control", "private")]))).await;
        assert!(matches!(
            c.lookup(&per, &Method::GET, &h, "/a", None, Some("alice"), false)
                .await,
            Lookup::Hit(_)
        ));
        assert!(matches!(
            c.lookup(&per, &Method::GET, &h, "/a", None, Some("bob"), false)
                .await,
            Lookup::Miss(_)
        ));
    }

    #[test]
    fn entries_round_trip_through_the_shared_format_and_garbage_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.append("x-bin", HeaderValue::from_bytes(b"a\xffb").unwrap());
        let e = Entry {
            primary: "GET /a?b=c".into(),
            tags: vec!["t1".to_owned(), "t2".to_owned()].into(),
            vary: vec![
                (header::ACCEPT, Some(HeaderValue::from_static("x"))),
                (header::ACCEPT_LANGUAGE, None),
            ],
            status: StatusCode::NON_AUTHORITATIVE_INFORMATION,
            headers,
            body: Bytes::from_static(b"body\0bytes"),
            stored_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123),
            initial_age: 4,
            fresh_for: Duration::from_millis(30_500),
            stale_for: Duration::from_secs(60),
            seq: 42,
        };
        let d = Entry::decode(e.encode()).unwrap();
        assert_eq!(
            (
                &*d.primary,
                &*d.tags,
                &d.vary,
                d.status,
                &d.headers,
                &d.body
            ),
            (
                &*e.primary,
                &*e.tags,
                &e.vary,
                e.status,
                &e.headers,
                &e.body
            )
        );
        assert_eq!(
            (d.stored_at, d.initial_age, d.fresh_for, d.stale_for, d.seq),
            (e.stored_at, e.initial_age, e.fresh_for, e.stale_for, e.seq)
        );
        let raw = e.encode();
        for cut in 0..raw.len() - e.body.len() {
            assert!(Entry::decode(raw.slice(..cut)).is_none(), "cut at {cut}");
        }
        assert!(Entry::decode(Bytes::from_static(b"\x03garbage")).is_none());
    }
}
