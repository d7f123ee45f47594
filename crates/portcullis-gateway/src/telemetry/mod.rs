//! What the gateway tells operators: JSON logs and Prometheus metrics.

pub mod json;
pub mod log;
pub mod metrics;
