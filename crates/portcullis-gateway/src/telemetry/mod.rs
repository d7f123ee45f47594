//! What the gateway tells operators: JSON logs, Prometheus metrics and OpenTelemetry
//! traces.

pub mod errors;
pub mod json;
pub mod log;
pub mod metrics;
pub mod rolling;
pub mod scope;
pub mod trace;
