//! Error tracking: failures the gateway answers for itself, counted by kind, and panics
//! inside request handling caught, logged once and answered 500.
//!
//! `portcullis_errors_total{kind}` has four kinds: `upstream_refused` (the upstream could
//! not be reached or failed to answer: 502), `upstream_timeout` (504), `internal` (a 500
//! the gateway chose) and `panic` (a bug: the request's handling panicked, it was answered
//! 500 and the process kept serving).
//!
//! A panic while a request is answered is reported by [`install_panic_hook`]'s hook to
//! the request's catch, which logs it once at `error` with the request's ids; a panic
//! anywhere else goes to the default hook (standard error) as before.

use std::cell::RefCell;

use metrics::{Counter, counter, describe_counter};
use portcullis::ProblemKind;

/// Errors the gateway answered for, by kind.
pub const ERRORS_TOTAL: &str = "portcullis_errors_total";

/// Pre-registered counters, one per kind.
#[derive(Debug)]
pub struct ErrorMetrics {
    upstream_refused: Counter,
    upstream_timeout: Counter,
    internal: Counter,
    panic: Counter,
}

impl Default for ErrorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ErrorMetrics {
    /// Registers the counters (after the recorder is installed).
    pub fn new() -> Self {
        describe_counter!(
            ERRORS_TOTAL,
            "Errors answered by the gateway: upstream_refused (502), upstream_timeout (504), internal (500), panic (500 after a caught panic)."
        );
        let c = |kind: &'static str| counter!(ERRORS_TOTAL, "kind" => kind);
        Self {
            upstream_refused: c("upstream_refused"),
            upstream_timeout: c("upstream_timeout"),
            internal: c("internal"),
            panic: c("panic"),
        }
    }

    /// Counts a refusal, when its kind is an error of the gateway or the upstream.
    pub fn refusal(&self, kind: ProblemKind) {
        match kind {
            ProblemKind::UpstreamUnavailable => self.upstream_refused.increment(1),
            ProblemKind::UpstreamTimeout => self.upstream_timeout.increment(1),
            ProblemKind::Internal => self.internal.increment(1),
            _ => {}
        }
    }

    /// Counts a caught panic.
    pub fn panicked(&self) {
        self.panic.increment(1);
    }
}

thread_local! {
    /// What the hook saw of the last panic on this thread inside a request.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs a panic hook that, inside a request (see [`super::scope`]), keeps the panic's
/// message and location for [`take_panic`] instead of printing them, so the request's
/// catch logs it once, as a JSON line with the request's ids. Other panics go to the hook
/// that was installed before.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if super::scope::current().is_none() {
            previous(info);
            return;
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(a non-text panic payload)");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{message}{at}")));
    }));
}

/// The last panic the hook kept on this thread, taken; else what the payload says.
pub fn take_panic(payload: &(dyn std::any::Any + Send)) -> String {
    LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_else(|| {
            payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(a non-text panic payload)".to_owned())
        })
}

/// The debug-build hook that lets tests show a panic being caught.
///
/// No request path panics on purpose in the gateway, and a real fault that panics would
/// be a bug to fix, not a test fixture. So debug builds only (`cfg(debug_assertions)`:
/// compiled out of release builds, where the variable is an unknown one and refused)
/// read [`DEBUG_PANIC_PATH`]: a request whose normalised path equals its value panics
/// inside the stack, after routing.
#[cfg(debug_assertions)]
pub mod debug {
    use std::sync::OnceLock;

    /// The environment variable naming the path that panics (debug builds only).
    pub const DEBUG_PANIC_PATH: &str = "PORTCULLIS_DEBUG_PANIC_PATH";

    /// Panics when `path` is the one [`DEBUG_PANIC_PATH`] names.
    pub fn maybe_panic(path: &str) {
        static PATH: OnceLock<Option<String>> = OnceLock::new();
        let wanted = PATH.get_or_init(|| std::env::var(DEBUG_PANIC_PATH).ok());
        if wanted.as_deref() == Some(path) {
            panic!("{DEBUG_PANIC_PATH} asked for a panic on {path}");
        }
    }
}
