//! The request a log line belongs to: its request id and trace id, set for the time a
//! request is being answered and added to every JSON line written meanwhile
//! ([`super::json::JsonLines`]), whatever module logs it.
//!
//! A task-local rather than a `tracing` span: the span registry would allocate a slot and
//! format the span's fields for every request, logged or not; this copies under 100 bytes
//! per poll. Lines logged by other tasks on the request's behalf (a connection's body
//! stream after the response head left) are not inside the scope.

use std::future::Future;

tokio::task_local! {
    static CURRENT: RequestScope;
}

/// The ids of the request being answered.
#[derive(Clone, Copy, Debug)]
pub struct RequestScope {
    id: [u8; 64],
    id_len: u8,
    trace_id: [u8; 32],
}

impl RequestScope {
    /// The ids of one request. A request id is at most 64 characters (ids are checked
    /// before they are used); a longer one is cut.
    pub fn new(request_id: &str, trace_id: &str) -> Self {
        let mut id = [0u8; 64];
        let n = request_id.len().min(64);
        id[..n].copy_from_slice(&request_id.as_bytes()[..n]);
        let mut t = [b'0'; 32];
        if trace_id.len() == 32 {
            t.copy_from_slice(trace_id.as_bytes());
        }
        Self {
            id,
            id_len: n as u8,
            trace_id: t,
        }
    }

    /// The request id.
    pub fn request_id(&self) -> &str {
        std::str::from_utf8(&self.id[..usize::from(self.id_len)]).unwrap_or_default()
    }

    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or_default()
    }

    /// Runs `fut` with these ids on every line it logs.
    pub fn run<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, fut)
    }
}

/// The ids of the request being answered on this task, if any.
pub fn current() -> Option<RequestScope> {
    CURRENT.try_with(|s| *s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scope_holds_inside_and_not_outside() {
        assert!(current().is_none());
        let s = RequestScope::new("req-1", "4bf92f3577b34da6a3ce929d0e0e4736");
        let seen = s
            .run(async {
                tokio::task::yield_now().await;
                current().map(|c| (c.request_id().to_owned(), c.trace_id().to_owned()))
            })
            .await;
        assert_eq!(
            seen,
            Some((
                "req-1".to_owned(),
                "4bf92f3577b34da6a3ce929d0e0e4736".to_owned()
            ))
        );
        assert!(current().is_none());
    }
}
