//! Security events to `alerts.webhook_url`: de-duplicated, with threshold rules, retried,
//! never in a request's way.
//!
//! [`Alerts::offer`] puts an event on a bounded queue without waiting (when the queue is
//! full the event is dropped and counted in `portcullis_alerts_dropped_total`). One task
//! folds them: the first event of a kind and key is sent at once; the same kind and key
//! again within `alerts.dedup_window` is folded, and when the window ends one alert says
//! how many were folded (`count`). That alert opens the next window, so events that keep
//! coming give one alert per window; a window with nothing folded ends the run, and the
//! next event is sent at once again. A threshold rule raises its own alert,
//! `suspicious_activity`, when one source causes `alerts.suspicious_per_minute`
//! `invalid_token` or `csrf_rejected` events within a minute.
//!
//! Alerts are `POST`ed as JSON `{"kind","severity","summary","key","count","first_seen",
//! "last_seen"}`, in order. A failed delivery is retried with back-off (1 s, doubling,
//! at most 60 s between attempts) for at least 10 minutes, then dropped and counted; at
//! most [`PENDING`] alerts wait, the oldest dropped beyond.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::Counter;
use serde_json::json;
use tokio::sync::mpsc;

use crate::events::{EventKind, SecurityEvent};

/// Events waiting to be folded.
const QUEUE: usize = 4096;
/// Alerts waiting to be delivered.
pub const PENDING: usize = 1000;
/// How long a failing alert is retried.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(600);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// One delivery attempt's bound.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// `[alerts]`.
#[derive(Clone, Debug)]
pub struct AlertsConfig {
    /// Where alerts are `POST`ed.
    pub webhook_url: String,
    /// Same kind and key within this window: folded into one alert.
    pub dedup_window: Duration,
    /// `invalid_token` + `csrf_rejected` from one source per minute that raise
    /// `suspicious_activity`.
    pub suspicious_per_minute: u32,
}

/// The sending side, held by the event stream.
#[derive(Debug)]
pub struct Alerts {
    tx: mpsc::Sender<SecurityEvent>,
    dropped: Counter,
}

impl Alerts {
    /// Starts the folding and delivery tasks.
    pub fn spawn(cfg: AlertsConfig, tls: Arc<rustls::ClientConfig>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = metrics::counter!("portcullis_alerts_dropped_total");
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(fold(cfg.clone(), rx, out_tx));
        tokio::spawn(deliver(cfg.webhook_url, tls, out_rx, dropped.clone()));
        Self { tx, dropped }
    }

    /// Offers an event; never waits.
    pub fn offer(&self, ev: &SecurityEvent) {
        if self.tx.try_send(ev.clone()).is_err() {
            self.dropped.increment(1);
        }
    }
}

/// An alert as sent.
#[derive(Clone, Debug)]
struct Alert {
    kind: &'static str,
    key: String,
    summary: String,
    count: u64,
    first_seen: String,
    last_seen: String,
}

impl Alert {
    fn body(&self) -> Bytes {
        Bytes::from(
            json!({
                "kind": self.kind,
                "severity": severity(self.kind),
                "summary": self.summary,
                "key": self.key,
                "count": self.count,
                "first_seen": self.first_seen,
                "last_seen": self.last_seen,
            })
            .to_string(),
        )
    }
}

fn severity(kind: &str) -> &'static str {
    match kind {
        "refresh_reuse" | "breaker_opened" | "suspicious_activity" | "lockout" => "critical",
        "breaker_closed" => "info",
        _ => "warning",
    }
}

/// Folded events of one kind and key.
struct Window {
    opened: Instant,
    folded: u64,
    first: String,
    last: String,
    summary: String,
}

async fn fold(
    cfg: AlertsConfig,
    mut rx: mpsc::Receiver<SecurityEvent>,
    out: mpsc::UnboundedSender<Alert>,
) {
    let mut windows: HashMap<(EventKind, String), Window> = HashMap::new();
    // Per source: when its recent invalid_token / csrf_rejected events happened.
    let mut suspicious: HashMap<String, VecDeque<Instant>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { return };
                let now = Instant::now();
                if matches!(ev.kind, EventKind::InvalidToken | EventKind::CsrfRejected)
                    && cfg.suspicious_per_minute > 0
                {
                    let times = suspicious.entry(ev.key.clone()).or_default();
                    times.push_back(now);
                    while times.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60)) {
                        times.pop_front();
                    }
                    if times.len() == cfg.suspicious_per_minute as usize {
                        let _ = out.send(Alert {
                            kind: "suspicious_activity",
                            key: ev.key.clone(),
                            summary: format!(
                                "{} invalid tokens or CSRF refusals from one source within a minute",
                                times.len()
                            ),
                            count: times.len() as u64,
                            first_seen: ev.ts.clone(),
                            last_seen: ev.ts.clone(),
                        });
                    }
                }
                match windows.get_mut(&(ev.kind, ev.key.clone())) {
                    Some(w) => {
                        w.folded += 1;
                        if w.folded == 1 {
                            w.first.clone_from(&ev.ts);
                        }
                        w.last.clone_from(&ev.ts);
                    }
                    None => {
                        let _ = out.send(Alert {
                            kind: ev.kind.as_str(),
                            key: ev.key.clone(),
                            summary: ev.detail.clone(),
                            count: 1,
                            first_seen: ev.ts.clone(),
                            last_seen: ev.ts.clone(),
                        });
                        windows.insert((ev.kind, ev.key), Window {
                            opened: now,
                            folded: 0,
                            first: String::new(),
                            last: String::new(),
                            summary: ev.detail,
                        });
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                windows.retain(|(kind, key), w| {
                    if now.duration_since(w.opened) < cfg.dedup_window {
                        return true;
                    }
                    if w.folded == 0 {
                        // A quiet window ends the run: the next event is sent at once.
                        return false;
                    }
                    let _ = out.send(Alert {
                        kind: kind.as_str(),
                        key: key.clone(),
                        summary: format!("{} (and {} more like it)", w.summary, w.folded - 1),
                        count: w.folded,
                        first_seen: std::mem::take(&mut w.first),
                        last_seen: std::mem::take(&mut w.last),
                    });
                    // The alert just sent opens the next window: events that keep coming
                    // are folded into it, one alert per window, never this one and a
                    // fresh "first" one back to back.
                    w.opened = now;
                    w.folded = 0;
                    true
                });
                suspicious.retain(|_, t| t.back().is_some_and(|t| now.duration_since(*t) <= Duration::from_secs(60)));
            }
        }
    }
}

async fn deliver(
    url: String,
    tls: Arc<rustls::ClientConfig>,
    mut rx: mpsc::UnboundedReceiver<Alert>,
    dropped: Counter,
) {
    let mut pending: VecDeque<(Alert, Instant)> = VecDeque::new();
    let sent = metrics::counter!("portcullis_alerts_sent_total");
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(a) => pending.push_back((a, Instant::now())),
                None => return,
            }
        }
        while let Ok(a) = rx.try_recv() {
            pending.push_back((a, Instant::now()));
        }
        while pending.len() > PENDING {
            pending.pop_front();
            dropped.increment(1);
        }
        let Some((alert, since)) = pending.front().cloned() else {
            continue;
        };
        let mut wait = Duration::from_secs(1);
        loop {
            let result = crate::jwks::exchange(
                http::Method::POST,
                &url,
                "application/json",
                alert.body(),
                &tls,
                ATTEMPT_TIMEOUT,
            )
            .await;
            match result {
                Ok((status, _)) if status.is_success() => {
                    sent.increment(1);
                    break;
                }
                outcome => {
                    let why = match outcome {
                        Ok((status, _)) => format!("status {status}"),
                        Err(e) => e,
                    };
                    if since.elapsed() >= GIVE_UP_AFTER {
                        tracing::error!(kind = alert.kind, key = %alert.key, error = %why, "alert not delivered; dropped after retrying for 10 minutes");
                        dropped.increment(1);
                        break;
                    }
                    tracing::warn!(kind = alert.kind, error = %why, retry_in_ms = wait.as_millis() as u64, "alert delivery failed");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                    // Keep the queue bounded while this one is retried.
                    while let Ok(a) = rx.try_recv() {
                        pending.push_back((a, Instant::now()));
                    }
                    while pending.len() > PENDING {
                        pending.remove(1);
                        dropped.increment(1);
                    }
                }
            }
        }
        pending.pop_front();
    }
}
