//! Rate-limit accounting: from the recorded requests to the accuracy table.
//!
//! # The model
//!
//! Each policy announces its quota in `RateLimit-Policy`: `q` requests per `w` seconds. The
//! gateway's default algorithm is GCRA with a burst `b` (the bucket: requests allowed at
//! once). `b` is not in the header, so it is given with `--burst`, or **assumed equal to
//! `q`** (the design's default when a tier sets no `burst`). A fresh GCRA bucket lets a client
//! through `b` requests at once and then one more every `w / q` seconds, so the number a
//! client may have been allowed `e` seconds after its first request is
//!
//! ```text
//! allowance(e) = b + floor(e * q / w)
//! ```
//!
//! From that, per client (the identity the tool sends), summed per policy:
//!
//! - **expected** = `min(offered, b + floor(D * q / w))`, `D` the run's duration: the most
//!   a correct limiter may allow. (The client's requests span at most `D`, so this is an upper
//!   bound, with up to one emission interval of slack for clock and network jitter.)
//! - **allowed beyond the limit** K = `max(0, allowed - expected)`.
//! - **false 429s**: a 429 answered while the client had not used its allowance at that
//!   point in time. Checked by replaying an ideal GCRA (`q`, `w`, `b`) over the requests the
//!   gateway actually allowed this client, in send order: a 429 is false if that GCRA would
//!   have allowed the request. While the client's bucket never sits full after its first
//!   request (steady demand above the quota, `b >= 2`), this is exactly the cumulative rule
//!   "allowed so far < `allowance(e)`", `e` the time since the client's first request; unlike
//!   that rule it stays right when the bucket is full (with `b = 1` every refill fills it, and
//!   capacity a client does not claim at once is lost), or when a client idles and then bursts.
//!
//!   The gateway decided each request at some instant between its send and its complete
//!   response, and the tool cannot know which. So that a 429 counts as false only when it is
//!   false whatever those instants were, the replay charges each allowed request at its
//!   response time (the latest) and judges the 429 at its send time (the earliest). Without
//!   this, a client whose first request waited for a new connection (a few ms) would have its
//!   bucket start later at the gateway than in the tool's clock, and every refusal on an
//!   emission boundary would look false. `--slack` widens the margin further, for clocks that
//!   are not the same clock (a gateway on another machine).
//! - **max in any sliding window**: the most allowed requests that certainly fell within one
//!   window of length `w` (`w - slack` with `--slack`): for a window opening at a send, the
//!   requests sent since and answered before it closes, so whatever the gateway's decision
//!   instants were, they fit. GCRA permits up to `b + q - 1`; a sliding-window limiter `q`.
//!   The JSON also has the figure by send times alone, which jitter can raise by one on a
//!   schedule aligned with the emission interval.
//!
//! These assume each client's state is fresh when the run starts (a new gateway, reset
//! counters, or unused addresses: `--xff-offset`). With `algorithm = "sliding_window"` the
//! expected figure (with `b = q`) is still an upper bound, but the false-429 rule, which is
//! GCRA's, flags the refusals a sliding window legitimately makes after its first `q`.
//!
//! Send times are the tool's; requests that got no response (transport errors) count as
//! offered but neither allowed nor limited, although the gateway may have admitted them.
//!
//! # Attribution
//!
//! A response belongs to the first member of its `RateLimit-Policy` header. A response
//! without the header (a gateway error, a transport error) is attributed to the policy its
//! client last had, else to the first policy the client ever had, else to `-`. The quota and
//! window of a policy are those of its first response that carries both; later changes are
//! counted in the header checks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use serde_json::{Value, json};

use super::headers::{LimitItem, PolicyItem};

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status code.
    Status(u16),
    /// No response.
    Error(ErrorKind),
}

/// Why a request got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The connection could not be made.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// Anything else (reset, malformed response, body cut short).
    Other,
}

impl ErrorKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Other => "other",
        }
    }
}

/// What a request counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Any status below 500 other than 429: the limiter let it through.
    Allowed,
    /// 429.
    Limited,
    /// 5xx.
    ServerError,
    /// No response.
    Error,
}

impl Outcome {
    /// The class of this outcome.
    pub fn class(self) -> Class {
        match self {
            Outcome::Status(429) => Class::Limited,
            Outcome::Status(s) if s >= 500 => Class::ServerError,
            Outcome::Status(_) => Class::Allowed,
            Outcome::Error(_) => Class::Error,
        }
    }
}

/// One request of one client, as the accounting sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// When it was sent, since the start of the run.
    pub sent: Duration,
    /// When its response was complete (`sent` if there was none): the gateway decided in
    /// between.
    pub answered: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

/// One request as sent and answered.
#[derive(Clone, Debug)]
pub struct Record {
    /// The client (index into the identity pool).
    pub client: usize,
    /// The target (index into `--target`).
    pub target: usize,
    /// When it was due by the schedule, since the start of the run.
    pub due: Duration,
    /// When it was sent, since the start of the run.
    pub sent: Duration,
    /// Time to the whole response, if there was one.
    pub latency: Option<Duration>,
    /// How it ended.
    pub outcome: Outcome,
    /// The first member of `RateLimit-Policy`, if any.
    pub policy: Option<PolicyItem>,
    /// The first member of `RateLimit`, if any.
    pub limit: Option<LimitItem>,
    /// Whether the response had `Retry-After`.
    pub retry_after: bool,
}

/// A policy's quota as the accounting uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// `q`: requests per window.
    pub limit: u64,
    /// `w`.
    pub window: Duration,
    /// `b`: requests allowed at once.
    pub burst: u64,
}

impl Quota {
    /// `b + floor(elapsed * q / w)`: how many requests a fresh GCRA bucket lets through in
    /// the first `elapsed` after a client's first request (that instant included).
    pub fn allowance(&self, elapsed: Duration) -> u64 {
        let w = self.window.as_nanos();
        if w == 0 {
            return u64::MAX;
        }
        let refill = elapsed.as_nanos().saturating_mul(u128::from(self.limit)) / w;
        self.burst
            .saturating_add(u64::try_from(refill).unwrap_or(u64::MAX))
    }

    /// `min(offered, b + floor(duration * q / w))`.
    pub fn expected(&self, offered: u64, duration: Duration) -> u64 {
        offered.min(self.allowance(duration))
    }
}

/// Counts for one client, or summed over a policy's clients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests sent.
    pub offered: u64,
    /// Answered with a status below 500 other than 429.
    pub allowed: u64,
    /// Answered 429.
    pub limited: u64,
    /// Answered 5xx.
    pub server_errors: u64,
    /// Not answered.
    pub errors: u64,
    /// The most a correct limiter may allow (`None` without a quota).
    pub expected: Option<u64>,
    /// Allowed beyond `expected`.
    pub beyond: Option<u64>,
    /// 429s while the client was below its allowance.
    pub false_limited: Option<u64>,
    /// The most allowed requests certainly within one window of length `w` (for a sum over
    /// clients: the largest client's figure).
    pub max_in_window: Option<u64>,
    /// The same by send times alone.
    pub max_in_window_sent: Option<u64>,
}

impl Counts {
    fn add(&mut self, c: &Counts) {
        fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (None, b) => b,
                (a, None) => a,
                (Some(a), Some(b)) => Some(a + b),
            }
        }
        self.offered += c.offered;
        self.allowed += c.allowed;
        self.limited += c.limited;
        self.server_errors += c.server_errors;
        self.errors += c.errors;
        self.expected = sum(self.expected, c.expected);
        self.beyond = sum(self.beyond, c.beyond);
        self.false_limited = sum(self.false_limited, c.false_limited);
        self.max_in_window = self.max_in_window.max(c.max_in_window);
        self.max_in_window_sent = self.max_in_window_sent.max(c.max_in_window_sent);
    }

    fn to_json(&self) -> Value {
        json!({
            "offered": self.offered,
            "allowed": self.allowed,
            "limited": self.limited,
            "server_errors": self.server_errors,
            "errors": self.errors,
            "expected": self.expected,
            "allowed_beyond_limit": self.beyond,
            "false_429": self.false_limited,
            "max_in_sliding_window": self.max_in_window,
            "max_in_sliding_window_by_send_time": self.max_in_window_sent,
        })
    }
}

/// The most of `spans` (`(sent, answered)`, sorted by `sent`, `answered >= sent`) that
/// certainly fall within one window of length `window`, whatever instant between `sent` and
/// `answered` each was decided at: for a window opening at some `sent_i`, those sent since
/// and answered before it closes. With `answered == sent` this is the most instants in any
/// half-open window `[t, t + window)`.
pub fn max_in_window(spans: &[(Duration, Duration)], window: Duration) -> u64 {
    // Sweep the opening over the sends. The window's close only moves forward, so a span
    // that once fitted keeps fitting until the opening passes its send: a min-heap of the
    // spans in range that do not fit yet, and a flag per span that did.
    let mut waiting = BinaryHeap::new();
    let mut fitted = vec![false; spans.len()];
    let mut inside = 0usize;
    let mut best = 0usize;
    let mut next = 0;
    for open in 0..spans.len() {
        if open > 0 && fitted[open - 1] {
            inside -= 1;
        }
        let close = spans[open].0 + window;
        while next < spans.len() && spans[next].0 < close {
            waiting.push(Reverse((spans[next].1, next)));
            next += 1;
        }
        while let Some(&Reverse((answered, k))) = waiting.peek() {
            if k < open {
                waiting.pop(); // sent before the opening: out of this window and every later one
            } else if answered < close {
                waiting.pop();
                fitted[k] = true;
                inside += 1;
            } else {
                break;
            }
        }
        best = best.max(inside);
    }
    best as u64
}

/// An ideal GCRA fed only the requests a gateway allowed: what it would have decided.
///
/// Times are kept multiplied by `q` so that the emission interval `w / q` is a whole number:
/// `T·q = w`, `τ·q = (b - 1)·w`.
#[derive(Debug)]
struct Replay {
    quota: Quota,
    /// Theoretical arrival time × q, in nanoseconds; 0 is "fresh" since times are ≥ 0.
    tat: u128,
}

impl Replay {
    fn new(quota: Quota) -> Self {
        Self { quota, tat: 0 }
    }

    fn scaled(&self, t: Duration) -> u128 {
        t.as_nanos() * u128::from(self.quota.limit)
    }

    /// Whether the ideal GCRA would allow a request at `t`.
    fn would_allow(&self, t: Duration) -> bool {
        let now = self.scaled(t);
        let tau = u128::from(self.quota.burst.saturating_sub(1)) * self.quota.window.as_nanos();
        self.tat.max(now) - now <= tau
    }

    /// Counts a request the gateway allowed at `t` (whatever the ideal would have said).
    fn allowed(&mut self, t: Duration) {
        self.tat = self.tat.max(self.scaled(t)) + self.quota.window.as_nanos();
    }
}

/// The counts of one client's requests under one policy; `events` in send order.
pub fn client_counts(
    events: &[Event],
    quota: Option<Quota>,
    duration: Duration,
    slack: Duration,
) -> Counts {
    let mut c = Counts::default();
    let mut replay = quota.map(Replay::new);
    let mut false_limited = 0;
    let mut allowed_spans = Vec::new();
    for e in events {
        let sent = e.sent;
        c.offered += 1;
        match e.outcome.class() {
            Class::Allowed => {
                c.allowed += 1;
                allowed_spans.push((sent, e.answered.max(sent)));
                if let Some(r) = &mut replay {
                    // decided at the latest when the response was complete
                    r.allowed(e.answered.max(sent));
                }
            }
            Class::Limited => {
                c.limited += 1;
                if replay
                    .as_ref()
                    .is_some_and(|r| r.would_allow(sent.saturating_sub(slack)))
                {
                    false_limited += 1;
                }
            }
            Class::ServerError => c.server_errors += 1,
            Class::Error => c.errors += 1,
        }
    }
    if let Some(q) = quota {
        let expected = q.expected(c.offered, duration);
        c.expected = Some(expected);
        c.beyond = Some(c.allowed.saturating_sub(expected));
        c.false_limited = Some(false_limited);
        let window = q.window.saturating_sub(slack).max(Duration::from_nanos(1));
        c.max_in_window = Some(max_in_window(&allowed_spans, window));
        let instants: Vec<_> = allowed_spans.iter().map(|&(s, _)| (s, s)).collect();
        c.max_in_window_sent = Some(max_in_window(&instants, window));
    }
    c
}

/// Consistency checks of the rate-limit headers, per policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderChecks {
    /// Responses attributed to the policy without a `RateLimit-Policy` header.
    pub missing_policy: u64,
    /// Responses with `RateLimit-Policy` but no `RateLimit`.
    pub missing_ratelimit: u64,
    /// `RateLimit` naming another policy than `RateLimit-Policy`.
    pub name_mismatch: u64,
    /// 429s without `Retry-After`.
    pub limited_without_retry_after: u64,
    /// 429s whose `RateLimit` says `r` > 0.
    pub limited_with_remaining: u64,
    /// Allowed responses whose `RateLimit` says `r` < 0.
    pub negative_remaining: u64,
    /// Responses whose `q` or `w` differ from the policy's first.
    pub quota_changed: u64,
}

impl HeaderChecks {
    /// The non-zero checks, as `name n` pairs.
    pub fn findings(&self) -> Vec<(&'static str, u64)> {
        [
            ("responses without RateLimit-Policy", self.missing_policy),
            ("responses without RateLimit", self.missing_ratelimit),
            ("RateLimit naming another policy", self.name_mismatch),
            ("429 without Retry-After", self.limited_without_retry_after),
            ("429 with r > 0", self.limited_with_remaining),
            ("allowed with r < 0", self.negative_remaining),
            ("q or w changed during the run", self.quota_changed),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// The accounting of one policy.
#[derive(Clone, Debug)]
pub struct PolicyReport {
    /// The policy's name (`-` for responses without any policy).
    pub name: String,
    /// `q`, `w` and the burst used, if the policy announced `q` and `w`.
    pub quota: Option<Quota>,
    /// Whether the burst is the assumed `q` (no `--burst`).
    pub burst_assumed: bool,
    /// Per client: (client index, counts), by client index.
    pub clients: Vec<(usize, Counts)>,
    /// Sums over the clients.
    pub total: Counts,
    /// Header consistency.
    pub headers: HeaderChecks,
}

/// Settings of the accounting.
#[derive(Clone, Debug)]
pub struct Accounting {
    /// The run's duration `D`.
    pub duration: Duration,
    /// Burst per policy name given on the command line (`None`: assume `q`).
    pub burst: BTreeMap<String, u64>,
    /// Burst for policies not in `burst`.
    pub default_burst: Option<u64>,
    /// Tolerance of the false-429 check.
    pub slack: Duration,
}

/// The policy name used for responses that carry none.
pub const NO_POLICY: &str = "-";

/// Attributes each record to a policy name (see the module docs).
pub fn attribute(records: &[Record]) -> Vec<String> {
    let mut first_of_client: BTreeMap<usize, &str> = BTreeMap::new();
    for r in records {
        if let Some(p) = &r.policy {
            first_of_client.entry(r.client).or_insert(&p.name);
        }
    }
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| records[i].sent);
    let mut last_of_client: BTreeMap<usize, &str> = BTreeMap::new();
    let mut names = vec![String::new(); records.len()];
    for i in order {
        let r = &records[i];
        let name = match &r.policy {
            Some(p) => {
                last_of_client.insert(r.client, &p.name);
                p.name.as_str()
            }
            None => last_of_client
                .get(&r.client)
                .or_else(|| first_of_client.get(&r.client))
                .copied()
                .unwrap_or(NO_POLICY),
        };
        names[i] = name.to_string();
    }
    names
}

/// Builds one report per policy, sorted by name.
pub fn account(records: &[Record], acc: &Accounting) -> Vec<PolicyReport> {
    let names = attribute(records);
    // policy -> client -> record indices
    let mut groups: BTreeMap<&str, BTreeMap<usize, Vec<usize>>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        groups
            .entry(names[i].as_str())
            .or_default()
            .entry(r.client)
            .or_default()
            .push(i);
    }
    let mut out = Vec::new();
    for (name, clients) in groups {
        let mut all: Vec<usize> = clients.values().flatten().copied().collect();
        all.sort_by_key(|&i| records[i].sent);
        let announced = all.iter().find_map(|&i| {
            let p = records[i].policy.as_ref()?;
            Some((p.quota?, p.window?))
        });
        let given = acc.burst.get(name).copied().or(acc.default_burst);
        let quota = announced.map(|(limit, window)| Quota {
            limit,
            window: Duration::from_secs(window),
            burst: given.unwrap_or(limit),
        });
        let headers = check_headers(all.iter().map(|&i| &records[i]), announced);
        let mut total = Counts::default();
        let mut per_client = Vec::new();
        for (client, mut idx) in clients {
            idx.sort_by_key(|&i| records[i].sent);
            let events: Vec<_> = idx
                .iter()
                .map(|&i| {
                    let r = &records[i];
                    Event {
                        sent: r.sent,
                        answered: r.sent + r.latency.unwrap_or_default(),
                        outcome: r.outcome,
                    }
                })
                .collect();
            let c = client_counts(&events, quota, acc.duration, acc.slack);
            total.add(&c);
            per_client.push((client, c));
        }
        out.push(PolicyReport {
            name: name.to_string(),
            quota,
            burst_assumed: given.is_none(),
            clients: per_client,
            total,
            headers,
        });
    }
    out
}

fn check_headers<'a>(
    records: impl Iterator<Item = &'a Record>,
    announced: Option<(u64, u64)>,
) -> HeaderChecks {
    let mut h = HeaderChecks::default();
    for r in records {
        let Outcome::Status(status) = r.outcome else {
            continue;
        };
        let Some(p) = &r.policy else {
            h.missing_policy += 1;
            continue;
        };
        if let (Some(a), Some(q), Some(w)) = (announced, p.quota, p.window)
            && a != (q, w)
        {
            h.quota_changed += 1;
        }
        match &r.limit {
            None => h.missing_ratelimit += 1,
            Some(l) => {
                if l.name != p.name {
                    h.name_mismatch += 1;
                }
                let remaining = l.remaining.unwrap_or(0);
                if status == 429 && remaining > 0 {
                    h.limited_with_remaining += 1;
                }
                if status != 429 && remaining < 0 {
                    h.negative_remaining += 1;
                }
            }
        }
        if status == 429 && !r.retry_after {
            h.limited_without_retry_after += 1;
        }
    }
    h
}

fn fmt_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "—".into(), |v| v.to_string())
}

fn fmt_window(w: Duration) -> String {
    format!("{}", w.as_secs())
}

/// The Markdown accuracy table (the columns of security-defaults.md §2, plus the split of
/// what was not allowed).
pub fn markdown_table(reports: &[PolicyReport]) -> String {
    let mut s = String::new();
    s.push_str(
        "| Policy | Clients | Offered | Allowed | Limited (429) | 5xx | Errors | Expected | \
         Allowed beyond limit K | False 429 (below limit) | Max in any sliding window |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for p in reports {
        let policy = match p.quota {
            Some(q) => format!(
                "`{}` q={} w={}s b={}{}",
                p.name,
                q.limit,
                fmt_window(q.window),
                q.burst,
                if p.burst_assumed {
                    " (assumed = q)"
                } else {
                    ""
                }
            ),
            None if p.name == NO_POLICY => "- (no RateLimit-Policy)".into(),
            None => format!("`{}` (no q/w)", p.name),
        };
        let t = &p.total;
        s.push_str(&format!(
            "| {policy} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            p.clients.len(),
            t.offered,
            t.allowed,
            t.limited,
            t.server_errors,
            t.errors,
            fmt_opt(t.expected),
            fmt_opt(t.beyond),
            fmt_opt(t.false_limited),
            fmt_opt(t.max_in_window),
        ));
    }
    s
}

/// The reports as JSON, with per-client counts (`labels[i]` names client `i`).
pub fn reports_json(reports: &[PolicyReport], labels: &dyn Fn(usize) -> String) -> Value {
    Value::Array(
        reports
            .iter()
            .map(|p| {
                let checks = &p.headers;
                json!({
                    "policy": p.name,
                    "q": p.quota.map(|q| q.limit),
                    "w_seconds": p.quota.map(|q| q.window.as_secs()),
                    "burst": p.quota.map(|q| q.burst),
                    "burst_assumed": p.burst_assumed,
                    "clients": p.clients.len(),
                    "total": p.total.to_json(),
                    "header_checks": {
                        "missing_policy": checks.missing_policy,
                        "missing_ratelimit": checks.missing_ratelimit,
                        "name_mismatch": checks.name_mismatch,
                        "limited_without_retry_after": checks.limited_without_retry_after,
                        "limited_with_remaining": checks.limited_with_remaining,
                        "negative_remaining": checks.negative_remaining,
                        "quota_changed": checks.quota_changed,
                    },
                    "per_client": p.clients.iter().map(|(i, c)| {
                        let mut v = c.to_json();
                        v["client"] = json!(labels(*i));
                        v
                    }).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Outcome = Outcome::Status(200);
    const NO: Outcome = Outcome::Status(429);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn quota(limit: u64, window_s: u64, burst: u64) -> Quota {
        Quota {
            limit,
            window: Duration::from_secs(window_s),
            burst,
        }
    }

    #[test]
    fn allowance_and_expected() {
        // 10 per second, burst 3: 3 at once, then one every 100 ms
        let q = quota(10, 1, 3);
        assert_eq!(q.allowance(ms(0)), 3);
        assert_eq!(q.allowance(ms(99)), 3);
        assert_eq!(q.allowance(ms(100)), 4);
        assert_eq!(q.allowance(ms(2_050)), 23);
        // expected over a 10 s run: 3 + 100, capped by what was offered
        assert_eq!(q.expected(1_000, Duration::from_secs(10)), 103);
        assert_eq!(q.expected(50, Duration::from_secs(10)), 50);
        // 60 per minute, burst assumed = q: 60 + floor(10 * 60 / 60)
        assert_eq!(
            quota(60, 60, 60).expected(1_000, Duration::from_secs(10)),
            70
        );
    }

    /// The counts of `(sent, outcome)` pairs answered at once (no latency).
    fn counts(
        events: &[(Duration, Outcome)],
        quota: Option<Quota>,
        duration: Duration,
        slack: Duration,
    ) -> Counts {
        let events: Vec<Event> = events
            .iter()
            .map(|&(sent, outcome)| Event {
                sent,
                answered: sent,
                outcome,
            })
            .collect();
        client_counts(&events, quota, duration, slack)
    }

    /// A client sending every `period` ms for `n` requests, answered by `decide`.
    fn schedule(n: u64, period: u64, decide: impl Fn(u64) -> Outcome) -> Vec<(Duration, Outcome)> {
        (0..n).map(|i| (ms(i * period), decide(i))).collect()
    }

    /// An exact GCRA limiter (b at once, then one per `w/q`), deciding on send times.
    fn gcra(events: &[Duration], q: Quota) -> Vec<(Duration, Outcome)> {
        let t = q.window.as_nanos() / u128::from(q.limit);
        let tau = t * u128::from(q.burst - 1);
        let mut tat: u128 = 0;
        events
            .iter()
            .map(|&s| {
                let now = s.as_nanos();
                let tat_now = tat.max(now);
                if tat_now - now <= tau {
                    tat = tat_now + t;
                    (s, OK)
                } else {
                    (s, NO)
                }
            })
            .collect()
    }

    #[test]
    fn an_exact_gcra_limiter_scores_zero_beyond_and_zero_false() {
        let q = quota(10, 1, 3);
        // 50 requests per second for 4 s
        let sent: Vec<Duration> = (0..200).map(|i| ms(i * 20)).collect();
        let events = gcra(&sent, q);
        let c = counts(&events, Some(q), Duration::from_secs(4), Duration::ZERO);
        assert_eq!(c.offered, 200);
        // last send at 3.98 s: 3 + floor(3.98 * 10) = 42 allowed
        assert_eq!(c.allowed, 42);
        assert_eq!(c.limited, 158);
        assert_eq!(c.expected, Some(43)); // 3 + 4 * 10, one interval of slack
        assert_eq!(c.beyond, Some(0));
        assert_eq!(c.false_limited, Some(0));
        // a window of 1 s holds the burst plus the refills: b + q - 1 at most
        assert_eq!(c.max_in_window, Some(12));
    }

    /// Invariant over many random steady schedules (the shape the tool sends): an exact GCRA
    /// limiter never shows allowed-beyond-limit or false 429s, and never more than
    /// `b + q - 1` in a window. A tiny LCG instead of proptest (not a testkit dependency).
    #[test]
    fn exact_gcra_is_never_flagged_on_steady_schedules() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for _ in 0..500 {
            // limits whose emission interval is a whole number of nanoseconds
            let limit = [1, 2, 4, 5, 8, 10, 20, 25, 50, 100][next(10) as usize];
            let q = quota(limit, 1 + next(3), 1 + next(2 * limit));
            let period = ms(1 + next(400));
            let start = ms(next(1_000));
            let n = 1 + next(300);
            let sent: Vec<Duration> = (0..n as u32).map(|i| start + period * i).collect();
            let duration = *sent.last().unwrap() + ms(1);
            let events = gcra(&sent, q);
            let c = counts(&events, Some(q), duration, Duration::ZERO);
            let case = format!("{q:?} period {period:?} n {n}");
            assert_eq!(c.beyond, Some(0), "{case}");
            assert_eq!(c.false_limited, Some(0), "{case}");
            // at most b + q - 1
            assert!(c.max_in_window.unwrap() < q.burst + q.limit, "{case}");
        }
    }

    #[test]
    fn allowing_everything_counts_beyond_the_limit() {
        let q = quota(10, 1, 10);
        let events = schedule(100, 20, |_| OK); // 50/s for 2 s, all allowed
        let c = counts(&events, Some(q), Duration::from_secs(2), Duration::ZERO);
        assert_eq!(c.expected, Some(30)); // 10 + floor(2 * 10)
        assert_eq!(c.beyond, Some(70));
        assert_eq!(c.false_limited, Some(0));
        assert_eq!(c.max_in_window, Some(50));
    }

    #[test]
    fn refusing_too_early_counts_false_429s() {
        let q = quota(10, 1, 5);
        // allows the first 2, refuses everything after: requests 2, 3, 4 are refused inside
        // the burst, and the refill after 100 ms, 200 ms, ... is refused too
        let events = schedule(10, 50, |i| if i < 2 { OK } else { NO });
        let c = counts(&events, Some(q), ms(500), Duration::ZERO);
        // at send times 100..450 ms the allowance is 5 + floor(t / 100) > 2: all 8 are false
        assert_eq!(c.limited, 8);
        assert_eq!(c.false_limited, Some(8));
        assert_eq!(c.beyond, Some(0));
    }

    #[test]
    fn a_429_once_the_allowance_is_used_is_not_false() {
        let q = quota(10, 1, 2);
        // two allowed at 0 and 10 ms, refused at 20 ms (allowance 2), then allowed at 100 ms
        let events = vec![(ms(0), OK), (ms(10), OK), (ms(20), NO), (ms(100), OK)];
        let c = counts(&events, Some(q), ms(200), Duration::ZERO);
        assert_eq!(c.false_limited, Some(0));
        // refused exactly on the boundary (allowance 3 at 100 ms, 2 used): false by the rule
        let events = vec![(ms(0), OK), (ms(10), OK), (ms(20), NO), (ms(100), NO)];
        let c = counts(&events, Some(q), ms(200), Duration::ZERO);
        assert_eq!(c.false_limited, Some(1));
        // ... unless the slack covers the jitter
        let c = counts(&events, Some(q), ms(200), ms(1));
        assert_eq!(c.false_limited, Some(0));
    }

    #[test]
    fn the_replay_agrees_with_the_cumulative_rule_on_steady_demand() {
        // b = 3, T = 100 ms, a request every 30 ms, refused at random by a broken limiter:
        // every refusal is false iff allowed-so-far < b + floor(e * q / w)
        let q = quota(10, 1, 3);
        let events = schedule(100, 30, |i| if (i * 7) % 5 < 2 { OK } else { NO });
        let mut allowed = 0;
        let mut cumulative = 0;
        for &(t, o) in &events {
            match o {
                OK => allowed += 1,
                _ if allowed < q.allowance(t) => cumulative += 1,
                _ => {}
            }
        }
        let c = counts(&events, Some(q), Duration::from_secs(3), Duration::ZERO);
        assert!(cumulative > 0);
        assert_eq!(c.false_limited, Some(cumulative));
    }

    #[test]
    fn a_full_bucket_loses_what_the_client_does_not_claim() {
        // b = 1, T = 1 s, a request every 300 ms: allowed at 0, 1.2, 2.4, ... (the bucket is
        // full from each refill until the next send). The cumulative rule would call the
        // refusal at 2.1 s false (1 + floor(2.1) = 3 > 2 allowed); it is not.
        let q = quota(1, 1, 1);
        let sent: Vec<Duration> = (0..10).map(|i| ms(i * 300)).collect();
        let events = gcra(&sent, q);
        assert_eq!(events[4].1, OK); // 1.2 s
        assert_eq!(events[7].1, NO); // 2.1 s
        let c = counts(&events, Some(q), ms(3_000), Duration::ZERO);
        assert_eq!(c.false_limited, Some(0));
        // ... and an idle client that bursts may be refused beyond b
        let events = vec![(ms(0), OK), (ms(10_000), OK), (ms(10_001), NO)];
        let c = counts(&events, Some(q), ms(11_000), Duration::ZERO);
        assert_eq!(c.false_limited, Some(0));
    }

    #[test]
    fn a_slow_first_response_moves_the_bucket_origin() {
        // q = 10/s, b = 1: allowed at 0, refused at 100 ms by the tool's clock. If the first
        // request reached the gateway 3 ms late, its bucket refills at 103 ms: the refusal at
        // 100 ms is right, and the tool cannot rule that out, since the first response took 5 ms.
        let q = quota(10, 1, 1);
        let events = [
            Event {
                sent: ms(0),
                answered: ms(5),
                outcome: OK,
            },
            Event {
                sent: ms(100),
                answered: ms(101),
                outcome: NO,
            },
        ];
        let c = client_counts(&events, Some(q), ms(200), Duration::ZERO);
        assert_eq!(c.false_limited, Some(0));
        // with a prompt first response, the same refusal is false
        let mut prompt = events;
        prompt[0].answered = ms(0);
        let c = client_counts(&prompt, Some(q), ms(200), Duration::ZERO);
        assert_eq!(c.false_limited, Some(1));
    }

    #[test]
    fn elapsed_counts_from_the_clients_first_request() {
        // a client that starts 5 s into the run gets a fresh bucket then, not 5 s of refill
        let q = quota(1, 1, 1);
        let events = vec![(ms(5_000), OK), (ms(5_010), NO)];
        let c = counts(&events, Some(q), Duration::from_secs(10), Duration::ZERO);
        assert_eq!(c.false_limited, Some(0));
    }

    #[test]
    fn slack_narrows_the_sliding_window_too() {
        let q = quota(2, 1, 2);
        let events = vec![(ms(0), OK), (ms(10), OK), (ms(999), OK)];
        let c = counts(&events, Some(q), ms(1_000), Duration::ZERO);
        assert_eq!(c.max_in_window, Some(3));
        let c = counts(&events, Some(q), ms(1_000), ms(2));
        assert_eq!(c.max_in_window, Some(2));
    }

    #[test]
    fn errors_and_5xx_are_neither_allowed_nor_limited() {
        let q = quota(10, 1, 10);
        let events = vec![
            (ms(0), OK),
            (ms(1), Outcome::Status(503)),
            (ms(2), Outcome::Error(ErrorKind::Connect)),
            (ms(3), Outcome::Status(404)),
        ];
        let c = counts(&events, Some(q), ms(10), Duration::ZERO);
        assert_eq!(
            (c.offered, c.allowed, c.limited, c.server_errors, c.errors),
            (4, 2, 0, 1, 1)
        );
        assert_eq!(c.expected, Some(4));
    }

    #[test]
    fn no_quota_no_judgement() {
        let c = counts(&schedule(3, 1, |_| NO), None, ms(10), Duration::ZERO);
        assert_eq!(c.limited, 3);
        assert_eq!(
            (c.expected, c.beyond, c.false_limited, c.max_in_window),
            (None, None, None, None)
        );
    }

    #[test]
    fn sliding_window_maximum() {
        let t: Vec<_> = [0, 100, 200, 999, 1000, 1001, 1500]
            .map(|n| (ms(n), ms(n)))
            .to_vec();
        assert_eq!(max_in_window(&t, Duration::from_secs(1)), 5); // 100..1001 (half-open)
        assert_eq!(max_in_window(&[], Duration::from_secs(1)), 0);
        assert_eq!(max_in_window(&t, ms(1)), 1);
    }

    #[test]
    fn sliding_window_sweep_matches_brute_force() {
        let mut seed: u64 = 42;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for _ in 0..300 {
            let n = next(60) as usize;
            let mut spans: Vec<(Duration, Duration)> = (0..n)
                .map(|_| {
                    let sent = ms(next(3_000));
                    (sent, sent + ms(next(4) * next(300)))
                })
                .collect();
            spans.sort();
            let window = ms(1 + next(1_500));
            let brute = (0..n)
                .map(|i| {
                    let close = spans[i].0 + window;
                    spans[i..].iter().filter(|&&(_, a)| a < close).count()
                })
                .max()
                .unwrap_or(0) as u64;
            assert_eq!(max_in_window(&spans, window), brute, "{spans:?} {window:?}");
        }
    }

    #[test]
    fn sliding_window_counts_only_what_certainly_fits() {
        // sent at 0, 500, 990 ms; the response at 990 took 20 ms: the gateway may have decided
        // it at 1,005 ms, outside [0, 1 s)
        let spans = [(ms(0), ms(1)), (ms(500), ms(501)), (ms(990), ms(1_010))];
        assert_eq!(max_in_window(&spans, Duration::from_secs(1)), 2);
        // a slow response in the middle leaves out only itself
        let spans = [(ms(0), ms(1)), (ms(10), ms(1_200)), (ms(20), ms(21))];
        assert_eq!(max_in_window(&spans, Duration::from_secs(1)), 2);
        let by_sent: Vec<_> = spans.iter().map(|&(s, _)| (s, s)).collect();
        assert_eq!(max_in_window(&by_sent, Duration::from_secs(1)), 3);
    }

    fn rec(client: usize, sent: u64, status: u16, policy: Option<(&str, u64, u64)>) -> Record {
        Record {
            client,
            target: 0,
            due: ms(sent),
            sent: ms(sent),
            latency: Some(ms(1)),
            outcome: Outcome::Status(status),
            policy: policy.map(|(n, q, w)| PolicyItem {
                name: n.into(),
                quota: Some(q),
                window: Some(w),
            }),
            limit: policy.map(|(n, _, _)| LimitItem {
                name: n.into(),
                remaining: Some(if status == 429 { 0 } else { 1 }),
                reset: Some(1),
            }),
            retry_after: status == 429,
        }
    }

    #[test]
    fn responses_without_a_policy_follow_their_client() {
        let records = vec![
            rec(0, 1, 200, Some(("anon", 2, 1))),
            rec(0, 2, 503, None), // follows client 0's last policy
            rec(1, 0, 502, None), // before any policy: client 1's first
            rec(1, 3, 200, Some(("user", 5, 1))),
            rec(2, 4, 200, None), // never any policy
        ];
        assert_eq!(attribute(&records), ["anon", "anon", "user", "user", "-"]);
    }

    #[test]
    fn sums_over_clients_per_policy() {
        // two clients, q = 2 per 1 s, b = 2, each sends 4 at once and gets 2 through
        let mut records = Vec::new();
        for client in 0..2 {
            for i in 0..4 {
                let status = if i < 2 { 200 } else { 429 };
                records.push(rec(client, i, status, Some(("anon", 2, 1))));
            }
        }
        // a third client gets 3 through: one beyond
        for i in 0..4 {
            let status = if i < 3 { 200 } else { 429 };
            records.push(rec(2, i, status, Some(("anon", 2, 1))));
        }
        let acc = Accounting {
            duration: ms(400),
            burst: BTreeMap::new(),
            default_burst: None,
            slack: Duration::ZERO,
        };
        let reports = account(&records, &acc);
        assert_eq!(reports.len(), 1);
        let p = &reports[0];
        assert!(p.burst_assumed);
        assert_eq!(p.quota, Some(quota(2, 1, 2)));
        assert_eq!(p.clients.len(), 3);
        assert_eq!(p.total.offered, 12);
        assert_eq!(p.total.allowed, 7);
        assert_eq!(p.total.expected, Some(6)); // 3 clients x (2 + floor(0.4 s * 2 / 1 s))
        assert_eq!(p.total.beyond, Some(1));
        assert_eq!(p.total.false_limited, Some(0));
        assert_eq!(p.total.max_in_window, Some(3));
        assert_eq!(p.headers, HeaderChecks::default());
        let table = markdown_table(&reports);
        assert!(
            table.contains(
                "| `anon` q=2 w=1s b=2 (assumed = q) | 3 | 12 | 7 | 5 | 0 | 0 | 6 | 1 | 0 | 3 |"
            ),
            "{table}"
        );
    }

    #[test]
    fn header_checks_find_inconsistencies() {
        let mut r1 = rec(0, 0, 429, Some(("anon", 2, 1)));
        r1.retry_after = false;
        r1.limit.as_mut().unwrap().remaining = Some(1);
        let r2 = rec(0, 1, 200, Some(("anon", 3, 1)));
        let mut r3 = rec(0, 2, 200, Some(("anon", 2, 1)));
        r3.limit = None;
        let acc = Accounting {
            duration: ms(10),
            burst: BTreeMap::from([("anon".to_string(), 1)]),
            default_burst: None,
            slack: Duration::ZERO,
        };
        let p = &account(&[r1, r2, r3], &acc)[0];
        assert!(!p.burst_assumed);
        assert_eq!(p.quota.unwrap().burst, 1);
        let h = &p.headers;
        assert_eq!(h.limited_without_retry_after, 1);
        assert_eq!(h.limited_with_remaining, 1);
        assert_eq!(h.quota_changed, 1);
        assert_eq!(h.missing_ratelimit, 1);
        assert_eq!(h.findings().len(), 4);
    }
}
