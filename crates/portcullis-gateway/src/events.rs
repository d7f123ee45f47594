//! Security events: one typed stream every protection emits into.
//!
//! Each event is counted (`portcullis_security_events_total{kind}`), logged at `warn` on
//! the `portcullis::security` target, and kept in a bounded ring that the admin API shows
//! (`GET /admin/security-events`).

use std::collections::VecDeque;
use std::sync::Mutex;

use metrics::Counter;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::telemetry::metrics::SECURITY_EVENTS;

/// Events kept for the admin API.
pub const RING_CAPACITY: usize = 1000;

/// The kinds of security event (DESIGN §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An (account, source) pair was locked.
    Lockout,
    /// A login was refused because of a lock or a ceiling.
    LoginThrottled,
    /// A spent refresh token was presented again; its family was revoked.
    RefreshReuse,
    /// A cross-site or token-less state-changing request was refused.
    CsrfRejected,
    /// A rate limit refused a request.
    RateLimited,
    /// A presented token was refused.
    InvalidToken,
    /// An identity lacked a role a route requires.
    Forbidden,
    /// The store's breaker opened.
    BreakerOpened,
    /// The store's breaker closed.
    BreakerClosed,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 9] = [
        Self::Lockout,
        Self::LoginThrottled,
        Self::RefreshReuse,
        Self::CsrfRejected,
        Self::RateLimited,
        Self::InvalidToken,
        Self::Forbidden,
        Self::BreakerOpened,
        Self::BreakerClosed,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lockout => "lockout",
            Self::LoginThrottled => "login_throttled",
            Self::RefreshReuse => "refresh_reuse",
            Self::CsrfRejected => "csrf_rejected",
            Self::RateLimited => "rate_limited",
            Self::InvalidToken => "invalid_token",
            Self::Forbidden => "forbidden",
            Self::BreakerOpened => "breaker_opened",
            Self::BreakerClosed => "breaker_closed",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// One event.
#[derive(Clone, Debug, Serialize)]
pub struct SecurityEvent {
    /// When, RFC 3339 UTC.
    pub ts: String,
    /// What.
    pub kind: EventKind,
    /// About whom: an account, a source address, a session (never a secret).
    pub key: String,
    /// Why, in a few words.
    pub detail: String,
    /// The request that caused it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The event stream.
#[derive(Debug)]
pub struct Events {
    ring: Mutex<VecDeque<SecurityEvent>>,
    counters: Vec<Counter>,
    alerts: std::sync::OnceLock<crate::alerts::Alerts>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// An empty stream; counters registered with the installed recorder.
    pub fn new() -> Self {
        Self {
            ring: Mutex::new(VecDeque::with_capacity(RING_CAPACITY)),
            counters: EventKind::ALL
                .iter()
                .map(|k| metrics::counter!(SECURITY_EVENTS, "kind" => k.as_str()))
                .collect(),
            alerts: std::sync::OnceLock::new(),
        }
    }

    /// Sends every event from now on to the alert webhook too.
    pub fn send_alerts(&self, alerts: crate::alerts::Alerts) {
        let _ = self.alerts.set(alerts);
    }

    /// Records an event.
    pub fn emit(&self, kind: EventKind, key: &str, detail: &str, request_id: Option<&str>) {
        self.counters[kind.index()].increment(1);
        tracing::warn!(
            target: "portcullis::security",
            event = kind.as_str(),
            key,
            detail,
            request_id = request_id.unwrap_or(""),
            "security event"
        );
        let ev = SecurityEvent {
            ts: OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default(),
            kind,
            key: key.to_owned(),
            detail: detail.to_owned(),
            request_id: request_id.map(str::to_owned),
        };
        if let Some(a) = self.alerts.get() {
            a.offer(&ev);
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == RING_CAPACITY {
            ring.pop_front();
        }
        ring.push_back(ev);
    }

    /// The most recent events, newest first.
    pub fn recent(&self, limit: usize) -> Vec<SecurityEvent> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().rev().take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_bounded_and_newest_first() {
        let e = Events::new();
        for i in 0..RING_CAPACITY + 5 {
            e.emit(EventKind::InvalidToken, &format!("k{i}"), "expired", None);
        }
        let r = e.recent(usize::MAX);
        assert_eq!(r.len(), RING_CAPACITY);
        assert_eq!(r[0].key, format!("k{}", RING_CAPACITY + 4));
    }
}
