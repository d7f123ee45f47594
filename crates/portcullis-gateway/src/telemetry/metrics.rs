//! Prometheus metrics (DESIGN §5), rendered by the admin listener's `/metrics`.
//!
//! Labels are bounded: `route` is a configured route's name (or `default`), never a raw
//! path; `status` is a status code. Handles are registered ahead of time (or once per
//! status seen), so recording a request costs two atomic updates, not a registry lookup.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram, counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by route and status.
pub const REQUESTS_TOTAL: &str = "portcullis_requests_total";
/// Time from request to response head, by route.
pub const REQUEST_DURATION: &str = "portcullis_request_duration_seconds";

/// The `route` label of requests that match no configured route.
pub const DEFAULT_ROUTE: &str = "default";

/// Histogram buckets, in seconds: from well under a millisecond (the gateway's own
/// refusals) to the default request timeout.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The installed recorder's handle.
#[derive(Clone, Debug)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the process-wide recorder. Call once, before any handle is registered.
    pub fn install() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            eprintln!("portcullis: a metrics recorder was already installed; keeping it");
        }
        describe_counter!(REQUESTS_TOTAL, "Requests answered, by route and status.");
        describe_counter!(SECURITY_EVENTS, "Security events, by kind.");
        describe_histogram!(
            REQUEST_DURATION,
            metrics::Unit::Seconds,
            "Time from receiving a request to sending the response head, by route."
        );
        Self { handle }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram samples into buckets; run it periodically so that memory stays
    /// bounded when nobody scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// Pre-registered handles for one route.
#[derive(Debug)]
pub struct RouteMetrics {
    name: Arc<str>,
    duration: Histogram,
    /// Indexed by `status - 100`.
    by_status: Box<[OnceLock<Counter>]>,
}

impl RouteMetrics {
    /// Handles for the route `name`.
    pub fn new(name: Arc<str>) -> Self {
        let duration = histogram!(REQUEST_DURATION, "route" => name.to_string());
        Self {
            name,
            duration,
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Records one answered request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.duration.record(elapsed.as_secs_f64());
        let counter = match status.checked_sub(100).and_then(|i| self.by_status.get(usize::from(i))) {
            Some(slot) => slot.get_or_init(|| {
                counter!(REQUESTS_TOTAL, "route" => self.name.to_string(), "status" => status.to_string())
            }),
            None => return,
        };
        counter.increment(1);
    }
}

/// State of each store backend's breaker: 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "portcullis_breaker_state";
/// Store calls by backend and result.
pub const STORE_CALLS: &str = "portcullis_store_calls_total";
/// Security events by kind.
pub const SECURITY_EVENTS: &str = "portcullis_security_events_total";

/// Counts store calls and breaker changes, and raises each change as a security event:
/// the gateway's [`StoreObserver`](portcullis_core::store::StoreObserver).
#[derive(Debug)]
pub struct StoreMetrics {
    calls: [metrics::Counter; 4],
    breaker: metrics::Gauge,
    events: std::sync::Arc<crate::events::Events>,
}

impl StoreMetrics {
    /// Handles for the `redis` backend (the memory backend makes no remote calls).
    pub fn new(events: std::sync::Arc<crate::events::Events>) -> Self {
        describe_counter!(
            STORE_CALLS,
            "Calls to the shared store, by backend and result."
        );
        metrics::describe_gauge!(
            BREAKER_STATE,
            "Breaker state by backend: 0 closed, 1 open, 2 half-open."
        );
        let call =
            |result: &'static str| counter!(STORE_CALLS, "backend" => "redis", "result" => result);
        let gauge = metrics::gauge!(BREAKER_STATE, "backend" => "redis");
        gauge.set(0.0);
        Self {
            calls: [
                call("ok"),
                call("error"),
                call("timeout"),
                call("short_circuited"),
            ],
            breaker: gauge,
            events,
        }
    }
}

impl portcullis_core::store::StoreObserver for StoreMetrics {
    fn call(&self, _backend: &'static str, result: portcullis_core::store::CallResult) {
        use portcullis_core::store::CallResult;
        let i = match result {
            CallResult::Ok => 0,
            CallResult::Error => 1,
            CallResult::Timeout => 2,
            CallResult::ShortCircuited => 3,
        };
        self.calls[i].increment(1);
    }

    fn breaker(
        &self,
        backend: &'static str,
        from: portcullis_core::breaker::BreakerState,
        to: portcullis_core::breaker::BreakerState,
        reason: &str,
    ) {
        use crate::events::EventKind;
        use portcullis_core::breaker::BreakerState;
        self.breaker.set(to.gauge());
        match to {
            BreakerState::Open => {
                let detail = format!(
                    "{reason} (was {}): features use their fallback",
                    from.as_str()
                );
                self.events
                    .emit(EventKind::BreakerOpened, backend, &detail, None);
            }
            BreakerState::Closed => {
                self.events
                    .emit(EventKind::BreakerClosed, backend, reason, None);
            }
            BreakerState::HalfOpen => {
                tracing::info!(target: "portcullis::store", backend, reason, "the breaker is half-open: probing");
            }
        }
    }
}
