//! `portcullis-load`: open-loop HTTP load at a fixed rate, and the rate-limit accuracy table
//! of `security-defaults.md` §2 computed from the responses.
//!
//! Open loop: request `i` is due `i / rate` seconds after the start and is started then,
//! however slow the earlier ones are, so a slow gateway cannot slow the load down (no
//! coordinated omission). At most `--max-in-flight` requests are outstanding; a request due
//! while that many are is **skipped** (counted, never sent late). Tokio's timer has a 1 ms
//! resolution, so at rates above 1,000/s the requests due within one millisecond leave
//! together.
//!
//! Each request is `GET --path` to the targets in turn, from one of the clients of the
//! identity pool ([`options::Identity`]). The tool records the status, the first members of
//! `RateLimit-Policy` and `RateLimit`, whether `Retry-After` came, and the send time; the
//! accounting is in [`analysis`] (its docs state the model and its assumptions).
//!
//! The binary is `src/bin/load.rs`; run `portcullis-load --help` for the options.

pub mod analysis;
pub mod headers;
pub mod options;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use analysis::{Accounting, Class, ErrorKind, Outcome, PolicyReport, Record};
use options::{Identity, Options, assign, pool_address};

/// What a run produced, before accounting.
#[derive(Debug)]
pub struct Run {
    /// Every request sent, in no particular order.
    pub records: Vec<Record>,
    /// Requests the schedule asked for (`sent + skipped`).
    pub scheduled: u64,
    /// Requests skipped because `--max-in-flight` were outstanding.
    pub skipped: u64,
    /// From the start until the last response (or timeout).
    pub wall: Duration,
}

/// The header that carries each client's identity, per client.
fn identity_headers(identity: &Identity) -> Result<Vec<Option<(HeaderName, HeaderValue)>>, String> {
    let xff = HeaderName::from_static("x-forwarded-for");
    match identity {
        Identity::Peer => Ok(vec![None]),
        Identity::ForwardedFor { size, offset } => (0..*size)
            .map(|i| {
                let addr = pool_address(offset + i).ok_or("address pool exhausted")?;
                let v = HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
                Ok(Some((xff.clone(), v)))
            })
            .collect(),
        Identity::Bearer(tokens) => tokens
            .iter()
            .map(|t| {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| "a --bearer token holds characters a header cannot")?;
                v.set_sensitive(true);
                Ok(Some((AUTHORIZATION, v)))
            })
            .collect(),
    }
}

/// Joins every line of a header into one list value.
fn joined(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Drives the targets as `opts` says and returns every request's record.
///
/// Must run inside a Tokio runtime with the time and I/O drivers enabled.
pub async fn run(opts: &Options) -> Result<Run, String> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(opts.max_in_flight)
        .build(connector);
    let uris: Vec<Uri> = (0..opts.targets.len())
        .map(|i| opts.request_uri(i))
        .collect::<Result<_, _>>()?;
    let identities = identity_headers(&opts.identity)?;
    let clients = identities.len();
    let limit = u32::try_from(opts.max_in_flight).map_err(|_| "--max-in-flight is too large")?;
    let slots = Arc::new(Semaphore::new(opts.max_in_flight));
    let expected = (opts.rate * opts.duration.as_secs_f64()).ceil() as usize;
    let records = Arc::new(Mutex::new(Vec::with_capacity(expected + 1)));
    let mut scheduled = 0u64;
    let mut skipped = 0u64;

    let start = Instant::now();
    for i in 0u64.. {
        let due = Duration::from_secs_f64(i as f64 / opts.rate);
        if due >= opts.duration {
            break;
        }
        let at = start + due;
        if Instant::now() < at {
            tokio::time::sleep_until(at.into()).await;
        } else {
            // behind schedule: let the requests in flight make progress
            tokio::task::yield_now().await;
        }
        scheduled += 1;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let (client_ix, target) = assign(i, clients, uris.len());
        let mut req = Request::get(uris[target].clone())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        for (k, v) in &opts.headers {
            req.headers_mut().append(k.clone(), v.clone());
        }
        if let Some((k, v)) = &identities[client_ix] {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let http = client.clone();
        let records = records.clone();
        let timeout = opts.timeout;
        tokio::spawn(async move {
            let sent = start.elapsed();
            let exchange = async {
                let res = http.request(req).await.map_err(|e| {
                    if e.is_connect() {
                        ErrorKind::Connect
                    } else {
                        ErrorKind::Other
                    }
                })?;
                let (parts, body) = res.into_parts();
                body.collect().await.map_err(|_| ErrorKind::Other)?;
                Ok::<_, ErrorKind>(parts)
            };
            let result = tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or(Err(ErrorKind::Timeout));
            let latency = start.elapsed() - sent;
            let mut record = Record {
                client: client_ix,
                target,
                due,
                sent,
                latency: None,
                outcome: Outcome::Error(ErrorKind::Other),
                policy: None,
                limit: None,
                retry_after: false,
            };
            match result {
                Ok(parts) => {
                    let h = &parts.headers;
                    record.latency = Some(latency);
                    record.outcome = Outcome::Status(parts.status.as_u16());
                    record.policy = joined(h, "ratelimit-policy")
                        .and_then(|v| headers::parse_policy(&v).into_iter().next());
                    record.limit = joined(h, "ratelimit")
                        .and_then(|v| headers::parse_limit(&v).into_iter().next());
                    record.retry_after = h.contains_key(RETRY_AFTER);
                }
                Err(kind) => record.outcome = Outcome::Error(kind),
            }
            records.lock().expect("records lock").push(record);
            drop(slot);
        });
    }
    // wait for every request still outstanding (each ends within --timeout)
    let _all = slots.acquire_many(limit).await.map_err(|e| e.to_string())?;
    let wall = start.elapsed();
    let records = std::mem::take(&mut *records.lock().expect("records lock"));
    Ok(Run {
        records,
        scheduled,
        skipped,
        wall,
    })
}

/// Totals over all requests, whatever their policy.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Requests sent.
    pub sent: u64,
    /// Responses per status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport errors per kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Per target: (sent, allowed, 429, 5xx, transport errors).
    pub per_target: Vec<[u64; 5]>,
    /// Latency percentiles of the answered requests: p50, p99, max.
    pub latency: Option<[Duration; 3]>,
    /// The latest a request started after it was due.
    pub max_lag: Duration,
}

impl Totals {
    /// Sums up a run over `targets` targets.
    pub fn of(run: &Run, targets: usize) -> Self {
        let mut t = Totals {
            sent: run.records.len() as u64,
            per_target: vec![[0; 5]; targets],
            ..Totals::default()
        };
        let mut latencies = Vec::with_capacity(run.records.len());
        for r in &run.records {
            t.max_lag = t.max_lag.max(r.sent.saturating_sub(r.due));
            let row = &mut t.per_target[r.target];
            row[0] += 1;
            match r.outcome {
                Outcome::Status(s) => *t.statuses.entry(s).or_default() += 1,
                Outcome::Error(k) => *t.errors.entry(k).or_default() += 1,
            }
            match r.outcome.class() {
                Class::Allowed => row[1] += 1,
                Class::Limited => row[2] += 1,
                Class::ServerError => row[3] += 1,
                Class::Error => row[4] += 1,
            }
            latencies.extend(r.latency);
        }
        latencies.sort();
        if let Some(&max) = latencies.last() {
            let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
            t.latency = Some([pct(0.5), pct(0.99), max]);
        }
        t
    }

    /// Transport errors of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The accounting settings that `opts` implies.
pub fn accounting(opts: &Options) -> Accounting {
    Accounting {
        duration: opts.duration,
        burst: opts.bursts.by_policy.clone(),
        default_burst: opts.bursts.all,
        slack: opts.slack,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Milliseconds with microsecond precision, for JSON.
fn ms_f64(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

/// The whole Markdown report: the run, then the accuracy table and its notes.
pub fn markdown(opts: &Options, run: &Run, totals: &Totals, reports: &[PolicyReport]) -> String {
    let mut s = String::new();
    let secs = opts.duration.as_secs_f64();
    let targets: Vec<String> = opts
        .targets
        .iter()
        .map(|t| t.to_string().trim_end_matches('/').to_string())
        .collect();
    let _ = writeln!(
        s,
        "## portcullis-load: GET {} at {} req/s for {} s\n",
        opts.path, opts.rate, secs
    );
    let _ = writeln!(
        s,
        "- targets: {}; {}; max in flight {}; timeout {} ms",
        targets.join(", "),
        opts.identity.describe(),
        opts.max_in_flight,
        opts.timeout.as_millis()
    );
    let _ = writeln!(
        s,
        "- sent {} of {} scheduled ({} skipped at the in-flight limit), {:.1} req/s; \
         latest start {} ms after its due time",
        totals.sent,
        run.scheduled,
        run.skipped,
        totals.sent as f64 / secs,
        ms(totals.max_lag)
    );
    let statuses: Vec<String> = totals
        .statuses
        .iter()
        .map(|(s, n)| format!("{s} × {n}"))
        .collect();
    let errors: Vec<String> = totals
        .errors
        .iter()
        .map(|(k, n)| format!("{} × {n}", k.name()))
        .collect();
    let _ = writeln!(
        s,
        "- answered: {}; transport errors: {}",
        if statuses.is_empty() {
            "none".into()
        } else {
            statuses.join(", ")
        },
        if errors.is_empty() {
            "0".into()
        } else {
            errors.join(", ")
        }
    );
    if targets.len() > 1 {
        let rows: Vec<String> = totals
            .per_target
            .iter()
            .zip(&targets)
            .map(|(r, t)| {
                format!(
                    "{t}: {} sent, {} allowed, {} limited, {} 5xx, {} errors",
                    r[0], r[1], r[2], r[3], r[4]
                )
            })
            .collect();
        let _ = writeln!(s, "- per target: {}", rows.join("; "));
    }
    if let Some([p50, p99, max]) = totals.latency {
        let _ = writeln!(
            s,
            "- latency (send to whole response): p50 {} ms, p99 {} ms, max {} ms",
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
    let _ = writeln!(
        s,
        "- wall time including the drain: {:.2} s",
        run.wall.as_secs_f64()
    );
    let _ = writeln!(s, "\n### Rate-limit accuracy\n");
    s.push_str(&analysis::markdown_table(reports));
    let _ = writeln!(
        s,
        "\n- Allowed = any status below 500 but 429. Expected, per client: min(offered, \
         b + floor(D × q / w)), D = {secs} s, summed over the policy's clients; q and w from \
         `RateLimit-Policy`, b from `--burst`, else assumed = q. K = Σ max(0, allowed − expected)."
    );
    let _ = writeln!(
        s,
        "- False 429: a 429 that an ideal GCRA (q, w, b), replayed over the requests this \
         client got through, would have allowed, whenever within [send, response] the gateway \
         decided each request (slack {} ms more); for steady demand that is \"allowed so far < \
         b + floor(e × q / w)\", e = time since the client's first request. Assumes a fresh \
         bucket per client at the start.",
        opts.slack.as_millis()
    );
    let _ = writeln!(
        s,
        "- Max in any sliding window: the largest client's most allowed requests certainly \
         decided within one w − slack (sent after the window opened, answered before it closed); \
         GCRA permits b + q − 1, a sliding window q. The JSON also has the figure by send times."
    );
    for p in reports {
        let findings = p.headers.findings();
        if findings.is_empty() {
            continue;
        }
        let list: Vec<String> = findings.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = writeln!(s, "- header checks for `{}`: {}", p.name, list.join("; "));
    }
    if reports.iter().all(|p| p.headers.findings().is_empty()) && !reports.is_empty() {
        let _ = writeln!(
            s,
            "- header checks: every response carried consistent RateLimit-Policy / RateLimit \
             headers, every 429 a Retry-After"
        );
    }
    s
}

/// The raw counts as JSON: settings, totals, and per policy the table row with per-client
/// counts.
pub fn json_report(opts: &Options, run: &Run, totals: &Totals, reports: &[PolicyReport]) -> Value {
    let label = |i: usize| opts.identity.label(i);
    json!({
        "settings": {
            "targets": opts.targets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "path": opts.path,
            "rate_per_second": opts.rate,
            "duration_seconds": opts.duration.as_secs_f64(),
            "max_in_flight": opts.max_in_flight,
            "timeout_ms": opts.timeout.as_millis() as u64,
            "clients": opts.identity.clients(),
            "identity": opts.identity.describe(),
            "burst_all": opts.bursts.all,
            "burst_by_policy": opts.bursts.by_policy,
            "slack_ms": ms_f64(opts.slack),
        },
        "totals": {
            "scheduled": run.scheduled,
            "sent": totals.sent,
            "skipped_in_flight_limit": run.skipped,
            "statuses": totals.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "transport_errors": totals.errors.iter().map(|(k, v)| (k.name().to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "per_target": totals.per_target.iter().enumerate().map(|(i, r)| json!({
                "target": opts.targets[i].to_string(),
                "sent": r[0], "allowed": r[1], "limited": r[2], "server_errors": r[3], "errors": r[4],
            })).collect::<Vec<_>>(),
            "latency_ms": totals.latency.map(|[a, b, c]| json!({
                "p50": ms_f64(a), "p99": ms_f64(b), "max": ms_f64(c),
            })),
            "max_start_lag_ms": ms_f64(totals.max_lag),
            "wall_seconds": ms_f64(run.wall) / 1e3,
        },
        "policies": analysis::reports_json(reports, &label),
    })
}

/// One CSV line per request, in send order.
pub fn csv(opts: &Options, run: &Run) -> String {
    let mut rows: Vec<&Record> = run.records.iter().collect();
    rows.sort_by_key(|r| r.sent);
    let mut s = String::from(
        "due_us,sent_us,client,target,status,error,latency_us,policy,q,w,r,t,retry_after\n",
    );
    let opt = |v: Option<i64>| v.map_or_else(String::new, |v| v.to_string());
    for r in rows {
        let (status, error) = match r.outcome {
            Outcome::Status(s) => (s.to_string(), ""),
            Outcome::Error(k) => (String::new(), k.name()),
        };
        let p = r.policy.as_ref();
        let l = r.limit.as_ref();
        let _ = writeln!(
            s,
            "{},{},{},{},{status},{error},{},{},{},{},{},{},{}",
            r.due.as_micros(),
            r.sent.as_micros(),
            opts.identity.label(r.client),
            r.target,
            r.latency
                .map_or_else(String::new, |d| d.as_micros().to_string()),
            p.map_or_else(String::new, |p| csv_field(&p.name)),
            opt(p.and_then(|p| p.quota).map(|v| v as i64)),
            opt(p.and_then(|p| p.window).map(|v| v as i64)),
            opt(l.and_then(|l| l.remaining)),
            opt(l.and_then(|l| l.reset)),
            u8::from(r.retry_after),
        );
    }
    s
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::options::Parsed;

    /// End to end on loopback: a tiny server that answers like a GCRA limiter with q = 5 per
    /// 10 seconds, b = 5, for one client, and the tool must see exactly that.
    #[tokio::test]
    async fn drives_a_server_and_reads_its_headers() {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Mutex::new(0u32));
        tokio::spawn(async move {
            loop {
                let (io, _) = listener.accept().await.unwrap();
                let served = served.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let served = served.clone();
                        async move {
                            assert_eq!(req.headers()["x-test"], "1");
                            let n = {
                                let mut n = served.lock().unwrap();
                                *n += 1;
                                *n
                            };
                            // allow the first 5, refuse the rest (the run is shorter than w / q)
                            let (status, r) = if n <= 5 { (200, 5 - n) } else { (429, 0) };
                            let mut res = http::Response::builder()
                                .status(status)
                                .header("RateLimit-Policy", r#""anon";q=5;w=10"#)
                                .header("RateLimit", format!(r#""anon";r={r};t=1"#));
                            if status == 429 {
                                res = res.header("Retry-After", "1");
                            }
                            Ok::<_, std::convert::Infallible>(
                                res.body(http_body_util::Full::new(Bytes::from_static(b"{}")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(io), svc)
                        .await;
                });
            }
        });

        let args = [
            "--target".to_string(),
            format!("http://{addr}"),
            "--rate".into(),
            "100".into(),
            "--duration".into(),
            "150ms".into(),
            "--header".into(),
            "X-Test: 1".into(),
        ];
        let Parsed::Run(opts) = Options::parse(args).unwrap() else {
            panic!("help")
        };
        let run = run(&opts).await.unwrap();
        assert_eq!(run.scheduled, 15);
        assert_eq!(run.records.len(), 15);
        let totals = Totals::of(&run, 1);
        assert_eq!(totals.statuses.get(&200), Some(&5));
        assert_eq!(totals.statuses.get(&429), Some(&10));
        let reports = analysis::account(&run.records, &accounting(&opts));
        assert_eq!(reports.len(), 1);
        let p = &reports[0];
        assert_eq!(p.name, "anon");
        assert_eq!(p.total.expected, Some(5)); // 5 + floor(0.15 s * 5 / 10 s)
        assert_eq!(p.total.beyond, Some(0));
        assert_eq!(p.total.false_limited, Some(0));
        assert!(p.headers.findings().is_empty(), "{:?}", p.headers);
        let md = markdown(&opts, &run, &totals, &reports);
        assert!(
            md.contains(
                "| `anon` q=5 w=10s b=5 (assumed = q) | 1 | 15 | 5 | 10 | 0 | 0 | 5 | 0 | 0 | 5 |"
            ),
            "{md}"
        );
        let j = json_report(&opts, &run, &totals, &reports);
        assert_eq!(j["policies"][0]["total"]["allowed"], 5);
        assert_eq!(j["policies"][0]["per_client"][0]["client"], "peer");
        assert_eq!(csv(&opts, &run).lines().count(), 16);
    }

    #[tokio::test]
    async fn connection_errors_are_counted() {
        let addr = crate::ports::free_addr(); // nothing listens there
        let args = [
            "--target".to_string(),
            format!("http://{addr}"),
            "--rate".into(),
            "50".into(),
            "--duration".into(),
            "100ms".into(),
            "--xff-pool".into(),
            "2".into(),
        ];
        let Parsed::Run(opts) = Options::parse(args).unwrap() else {
            panic!("help")
        };
        let run = run(&opts).await.unwrap();
        let totals = Totals::of(&run, 1);
        assert_eq!(totals.sent, 5);
        assert_eq!(totals.errors.get(&ErrorKind::Connect), Some(&5));
        assert!(opts.max_errors.exceeded(totals.error_count(), totals.sent));
        let reports = analysis::account(&run.records, &accounting(&opts));
        assert_eq!(reports[0].name, analysis::NO_POLICY);
        assert_eq!(reports[0].clients.len(), 2);
    }
}
