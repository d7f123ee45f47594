//! OpenTelemetry tracing: a span per request, a child span per protection step and per
//! store call, exported over OTLP/HTTP (protobuf) in batches.
//!
//! Off unless `trace.otlp_endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) is set, and then
//! nothing here is reached by a request: [`RequestSpan::start`] and [`step`] return `None`
//! after one atomic load, so the proxy's hot path pays a branch, not a span.
//!
//! The request span continues the client's `traceparent` (same trace id, the client's
//! span as parent); its own ids are then written into the request's [`TraceContext`], so
//! the `traceparent` the upstream receives and the `trace_id` of the log lines are those
//! of the exported span. Sampling is parent-based: a client's sampled flag is followed,
//! new traces are sampled at `trace.sample_ratio`.
//!
//! # Fail mode
//!
//! Export never blocks a request. Ended spans go to a bounded queue
//! ([`QUEUE`] spans) drained by the SDK's batch processor on its own thread, which
//! `POST`s them with a short timeout ([`EXPORT_TIMEOUT`]). While the collector is down or
//! hanging the queue fills and further spans are dropped and counted in
//! `portcullis_trace_spans_dropped_total{reason="queue_full"}`; spans of a failed export
//! are counted with `reason="export_failed"`. Memory stays bounded whatever the collector
//! does.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use futures_util::future::Either;
use metrics::{Counter, counter, describe_counter};
use opentelemetry::trace::{
    FutureExt, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
    TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter, SpanProcessor,
};
use portcullis::trace_context::TraceContext;

use crate::config::{ConfigError, TraceConfig};

/// Spans dropped instead of exported, by reason (`queue_full`, `export_failed`).
pub const SPANS_DROPPED: &str = "portcullis_trace_spans_dropped_total";

/// Most ended spans waiting for export: about 1 KiB each, so a collector that is down
/// costs at most a few MiB. At the default batch delay this absorbs bursts of several
/// thousand requests per second.
pub const QUEUE: usize = 2048;

/// Spans per export request (the OpenTelemetry default).
const BATCH: usize = 512;

/// Time between exports when the queue is not filling up faster.
const BATCH_DELAY: Duration = Duration::from_millis(1000);

/// Bound on one export request: a hanging collector holds the export thread this long
/// at most, never a request.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound on the flush at shutdown: one export of what is queued, and a little more.
pub const FLUSH_WAIT: Duration = Duration::from_secs(3);

/// The tracer, set once when tracing is on; `None` is the off switch every call checks.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The installed pipeline; [`Tracing::shutdown`] flushes it.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

/// Starts the export pipeline for `cfg` and turns tracing on for the process.
pub fn install(cfg: &TraceConfig) -> Result<Tracing, ConfigError> {
    let err = |message: String| ConfigError {
        key: "trace.otlp_endpoint".into(),
        origin: None,
        message,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(cfg.traces_url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| err(format!("cannot build the OTLP exporter: {e}")))?;
    describe_counter!(
        SPANS_DROPPED,
        "Spans dropped instead of exported: queue_full (the collector is slower than the traffic, or down), export_failed."
    );
    let queued = Arc::new(AtomicUsize::new(0));
    let exporter = Counted {
        inner: exporter,
        queued: queued.clone(),
        failed: counter!(SPANS_DROPPED, "reason" => "export_failed"),
    };
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .with_max_export_batch_size(BATCH)
                .with_scheduled_delay(BATCH_DELAY)
                .build(),
        )
        .build();
    let processor = Bounded {
        inner: batch,
        queued,
        full: counter!(SPANS_DROPPED, "reason" => "queue_full"),
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.sample_ratio,
        ))))
        .with_resource(
            Resource::builder_empty()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("portcullis");
    if TRACER.set(tracer).is_err() {
        return Err(err("tracing was already installed in this process".into()));
    }
    Ok(Tracing { provider })
}

/// Whether tracing is on.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

impl Tracing {
    /// Exports what is queued and stops the export thread, waiting at most
    /// [`FLUSH_WAIT`]. Blocks: call it off the async workers.
    pub fn shutdown(self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown_with_timeout(FLUSH_WAIT);
    }
}

/// The batch processor behind a queue bound that is counted: a span that would not fit
/// is dropped here and counted, so the processor's own queue never overflows uncounted.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` and not yet through an export.
    queued: Arc<AtomicUsize>,
    full: Counter,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.full.increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, releasing queue places as batches leave and counting the spans of
/// failed exports.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    failed: Counter,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(n, Ordering::Relaxed);
        if result.is_err() {
            self.failed.increment(n as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The gateway's span of one request (server kind).
#[derive(Debug)]
pub struct RequestSpan {
    cx: Context,
    method: http::Method,
}

impl RequestSpan {
    /// Starts the span of a request whose trace is `trace` (the client's, or a new one),
    /// and makes `trace` carry the span's ids. `None` when tracing is off.
    pub fn start(
        trace: &mut TraceContext,
        method: &http::Method,
        path: &str,
        request_id: &str,
    ) -> Option<Self> {
        let tracer = TRACER.get()?;
        let parent = match (trace.parent_id(), TraceId::from_hex(trace.trace_id()).ok()) {
            (Some(p), Some(trace_id)) => match SpanId::from_hex(p) {
                Ok(span_id) => {
                    let state = trace
                        .tracestate()
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<TraceState>().ok())
                        .unwrap_or_default();
                    let flags = if trace.sampled() {
                        TraceFlags::SAMPLED
                    } else {
                        TraceFlags::default()
                    };
                    Context::new().with_remote_span_context(SpanContext::new(
                        trace_id, span_id, flags, true, state,
                    ))
                }
                Err(_) => Context::new(),
            },
            _ => Context::new(),
        };
        let span = tracer
            .span_builder(method.as_str().to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.as_str().to_owned()),
                KeyValue::new("url.path", path.to_owned()),
                KeyValue::new("portcullis.request_id", request_id.to_owned()),
            ])
            .start_with_context(tracer, &parent);
        let sc = span.span_context().clone();
        trace.adopt(
            &format!("{:032x}", sc.trace_id()),
            &format!("{:016x}", sc.span_id()),
            sc.is_sampled(),
        );
        Some(Self {
            cx: parent.with_span(span),
            method: method.clone(),
        })
    }

    /// Runs `fut` with this span as the current one, so steps and store calls become its
    /// children.
    pub fn run<F: Future>(&self, fut: F) -> opentelemetry::trace::WithContext<F> {
        fut.with_context(self.cx.clone())
    }

    /// Ends the span with the request's route, status and refusal (if any).
    pub fn finish(self, route: &str, status: u16, refusal: Option<&'static str>) {
        let span = self.cx.span();
        span.update_name(format!("{} {route}", self.method));
        span.set_attribute(KeyValue::new("http.route", route.to_owned()));
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some(r) = refusal {
            span.set_attribute(KeyValue::new("portcullis.refusal", r));
        }
        if status >= 500 {
            span.set_status(Status::error(Cow::Borrowed("server error")));
        }
        span.end();
    }
}

/// A protection step's span, a child of the current request span; ends when dropped.
#[derive(Debug)]
pub struct Step {
    cx: Context,
}

/// Starts the span of a protection step (`rate_limit`, `identity`, `csrf`, …) under the
/// current request span. `None` when tracing is off or no request span is current.
pub fn step(name: &'static str) -> Option<Step> {
    let tracer = TRACER.get()?;
    let parent = Context::current();
    if !parent.has_active_span() {
        return None;
    }
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .start_with_context(tracer, &parent);
    Some(Step {
        cx: parent.with_span(span),
    })
}

impl Step {
    /// Sets an attribute on the step's span, e.g. its decision.
    pub fn note(&self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.cx.span().set_attribute(KeyValue::new(key, value));
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

/// Notes `key = value` on a step's span, when there is one.
pub fn note(step: &Option<Step>, key: &'static str, value: &'static str) {
    if let Some(s) = step {
        s.note(key, value);
    }
}

/// Runs `fut` inside `step`'s span (so store calls it makes are the step's children),
/// or as it is when there is no span.
pub fn within<F: Future>(
    step: &Option<Step>,
    fut: F,
) -> Either<opentelemetry::trace::WithContext<F>, F> {
    match step {
        Some(s) => Either::Left(fut.with_context(s.cx.clone())),
        None => Either::Right(fut),
    }
}

/// Makes a span of each store call made under a request span, with the call's own start
/// and end: the store's [`CallTracer`](portcullis_core::store::CallTracer).
#[derive(Debug, Default)]
pub struct StoreSpans;

impl portcullis_core::store::CallTracer for StoreSpans {
    fn call(
        &self,
        backend: &'static str,
        op: &'static str,
        start: SystemTime,
        end: SystemTime,
        routed: &'static str,
    ) {
        let Some(tracer) = TRACER.get() else {
            return;
        };
        let parent = Context::current();
        if !parent.has_active_span() {
            return;
        }
        let mut span = tracer
            .span_builder(format!("store.{op}"))
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("db.system.name", backend),
                KeyValue::new("db.operation.name", op),
                KeyValue::new("portcullis.store.routed", routed),
            ])
            .start_with_context(tracer, &parent);
        if routed == "unavailable" || routed == "error" {
            span.set_status(Status::error(Cow::Borrowed("store unavailable")));
        }
        span.end_with_timestamp(end);
    }
}
