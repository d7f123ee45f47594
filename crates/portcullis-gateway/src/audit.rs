//! Where audit records go: the hash-chained `audit.file` ([`portcullis_core::audit`]) when
//! set, and always the log stream (target `portcullis::audit`).
//!
//! Audited: every admin-API change, every login outcome, refresh reuse, lockouts and
//! unlocks, and every request to a route with `audit = true`. A record is written and
//! flushed before the response that caused it is sent (a small synchronous write).

use std::sync::OnceLock;

use portcullis_core::audit::{AuditLog, Entry};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

static FILE: OnceLock<AuditLog> = OnceLock::new();

/// Sends records to `log` from now on (once per process).
pub fn install(log: AuditLog) {
    let _ = FILE.set(log);
}

/// Records one audited operation.
pub fn record(action: &str, actor: &str, target: &str, outcome: &str, request_id: &str) {
    tracing::info!(
        target: "portcullis::audit",
        action,
        actor,
        resource = target,
        outcome,
        request_id,
        "audit"
    );
    append(action, actor, target, outcome, request_id);
}

/// Appends a record to the audit file only (the caller logs it its own way).
pub fn append(action: &str, actor: &str, target: &str, outcome: &str, request_id: &str) {
    if let Some(file) = FILE.get() {
        let ts = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let entry = Entry {
            action,
            actor,
            target,
            outcome,
            request_id,
        };
        if let Err(e) = file.append(&ts, &entry) {
            tracing::error!(error = %e, action, "cannot write the audit log");
        }
    }
}
