//! W3C Trace Context (`traceparent`, `tracestate`): accepted when valid, continued to the
//! upstream with a new parent id for the gateway's hop, started anew otherwise.
//!
//! - `traceparent` must be version `00`, a 32-hex trace id and a 16-hex parent id that
//!   are not all zeros, and 2-hex flags, in lower case; anything else (including a second
//!   `traceparent` field) starts a new trace, and the client's `tracestate` is dropped
//!   with it.
//! - `tracestate` is kept only with a valid `traceparent`, as at most 32 list members and
//!   512 bytes (whole members; the W3C limits), each `key=value` of visible ASCII.
//!
//! ```
//! use http::HeaderMap;
//! use portcullis::trace_context::TraceContext;
//!
//! let mut h = HeaderMap::new();
//! h.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
//! let t = TraceContext::from_headers(&h);
//! assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert!(t.continued());
//! let out = t.traceparent();
//! assert!(out.to_str().unwrap().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
//! assert!(out.to_str().unwrap().ends_with("-01"));
//! ```

use http::{HeaderMap, HeaderValue};

/// The most `tracestate` list members kept.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// The most `tracestate` bytes kept.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// The trace a request belongs to, and the gateway's span in it.
#[derive(Clone, Debug)]
pub struct TraceContext {
    trace_id: [u8; 32],
    span_id: [u8; 16],
    /// The client's span (the parent of the gateway's), when its trace was continued.
    parent_id: Option<[u8; 16]>,
    flags: [u8; 2],
    continued: bool,
    tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The client's trace when its `traceparent` is valid, else a new sampled one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all("traceparent").iter();
        let parsed = match (values.next(), values.next()) {
            (Some(v), None) => parse(v.as_bytes()),
            _ => None,
        };
        match parsed {
            Some((trace_id, parent_id, flags)) => Self {
                trace_id,
                span_id: random_hex(),
                parent_id: Some(parent_id),
                flags,
                continued: true,
                tracestate: tracestate(headers),
            },
            None => Self {
                trace_id: random_hex(),
                span_id: random_hex(),
                parent_id: None,
                flags: *b"01",
                continued: false,
                tracestate: None,
            },
        }
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or_default()
    }

    /// The gateway's span id (the upstream's parent), 16 hex digits.
    pub fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).unwrap_or_default()
    }

    /// Whether the client's trace was continued.
    pub fn continued(&self) -> bool {
        self.continued
    }

    /// The client's span id (the parent of the gateway's span), when its trace was
    /// continued.
    pub fn parent_id(&self) -> Option<&str> {
        self.parent_id
            .as_ref()
            .map(|p| std::str::from_utf8(p).unwrap_or_default())
    }

    /// Whether the trace is sampled (flag `01`).
    pub fn sampled(&self) -> bool {
        parse_hex_byte(self.flags) & 1 == 1
    }

    /// The `tracestate` kept from the client, if any.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }

    /// Takes the ids of the span a tracer started for the gateway's hop, so that what
    /// the upstream is sent and what the log lines say is what the tracer exports.
    /// `trace_id` is 32 and `span_id` 16 lower-case hex digits, as a tracer formats
    /// them; anything else is ignored. The sampled flag follows `sampled`.
    pub fn adopt(&mut self, trace_id: &str, span_id: &str, sampled: bool) {
        let (Ok(t), Ok(s)) = (
            <[u8; 32]>::try_from(trace_id.as_bytes()),
            <[u8; 16]>::try_from(span_id.as_bytes()),
        ) else {
            return;
        };
        if !is_lower_hex(&t) || !is_lower_hex(&s) {
            return;
        }
        self.trace_id = t;
        self.span_id = s;
        let mut flags = parse_hex_byte(self.flags) & !1;
        if sampled {
            flags |= 1;
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.flags = [HEX[usize::from(flags >> 4)], HEX[usize::from(flags & 15)]];
    }

    /// `traceparent` for the upstream: this trace, the gateway's span as parent.
    pub fn traceparent(&self) -> HeaderValue {
        let mut s = Vec::with_capacity(55);
        s.extend_from_slice(b"00-");
        s.extend_from_slice(&self.trace_id);
        s.push(b'-');
        s.extend_from_slice(&self.span_id);
        s.push(b'-');
        s.extend_from_slice(&self.flags);
        HeaderValue::from_bytes(&s).expect("hex and dashes are a valid header value")
    }

    /// Replaces the request's `traceparent` and `tracestate` with this trace's.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert("traceparent", self.traceparent());
        headers.remove("tracestate");
        if let Some(ts) = &self.tracestate {
            headers.insert("tracestate", ts.clone());
        }
    }
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fn parse_hex_byte(b: [u8; 2]) -> u8 {
    let digit = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => 0,
    };
    digit(b[0]) << 4 | digit(b[1])
}

fn parse(v: &[u8]) -> Option<([u8; 32], [u8; 16], [u8; 2])> {
    if v.len() != 55 || &v[..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (trace, parent, flags) = (&v[3..35], &v[36..52], &v[53..55]);
    if !is_lower_hex(trace) || !is_lower_hex(parent) || !is_lower_hex(flags) {
        return None;
    }
    if trace.iter().all(|c| *c == b'0') || parent.iter().all(|c| *c == b'0') {
        return None;
    }
    Some((
        trace.try_into().ok()?,
        parent.try_into().ok()?,
        flags.try_into().ok()?,
    ))
}

fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut out = String::new();
    let mut members = 0;
    for value in headers.get_all("tracestate") {
        let text = value.to_str().ok()?;
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let (k, v) = member.split_once('=')?;
            if k.is_empty() || v.is_empty() || k.len() > 256 || v.len() > 256 {
                return None;
            }
            if members == MAX_TRACESTATE_MEMBERS
                || out.len() + member.len() + 1 > MAX_TRACESTATE_BYTES
            {
                break;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(member);
            members += 1;
        }
    }
    (!out.is_empty())
        .then(|| HeaderValue::from_str(&out).ok())
        .flatten()
}

fn random_hex<const N: usize>() -> [u8; N] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let raw = crate::request_id::fast_random().to_le_bytes();
    let mut out = [b'0'; N];
    for (i, slot) in out.iter_mut().enumerate() {
        let byte = raw[(i / 2) % 16];
        *slot = HEX[usize::from(if i % 2 == 0 { byte >> 4 } else { byte & 15 })];
    }
    // All zeros is invalid: make the last digit non-zero in that (2^-64) case.
    if out.iter().all(|c| *c == b'0') {
        out[N - 1] = b'1';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_headers as headers;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_parents_are_continued_and_the_rest_start_a_new_trace() {
        let t = TraceContext::from_headers(&headers(&[("traceparent", GOOD)]));
        assert!(t.continued());
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(
            t.span_id(),
            "00f067aa0ba902b7",
            "the gateway's hop is a new span"
        );
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "",
        ] {
            let t = TraceContext::from_headers(&headers(&[
                ("traceparent", bad),
                ("tracestate", "a=1"),
            ]));
            assert!(!t.continued(), "{bad}");
            assert_eq!(t.trace_id().len(), 32);
            let mut out = HeaderMap::new();
            t.apply(&mut out);
            assert!(
                out.get("tracestate").is_none(),
                "{bad}: state dropped with the parent"
            );
        }
        let two =
            TraceContext::from_headers(&headers(&[("traceparent", GOOD), ("traceparent", GOOD)]));
        assert!(!two.continued());
    }

    #[test]
    fn the_parent_is_kept_and_a_tracer_s_ids_adopted() {
        let mut t = TraceContext::from_headers(&headers(&[("traceparent", GOOD)]));
        assert_eq!(t.parent_id(), Some("00f067aa0ba902b7"));
        assert!(t.sampled());
        t.adopt(
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "1111111111111111",
            false,
        );
        assert_eq!(
            t.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-00"
        );
        t.adopt("not hex", "2222222222222222", true);
        assert_eq!(t.span_id(), "1111111111111111", "bad ids are ignored");
        let fresh = TraceContext::from_headers(&HeaderMap::new());
        assert_eq!(fresh.parent_id(), None);
        let unsampled = TraceContext::from_headers(&headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]));
        assert!(!unsampled.sampled());
    }

    #[test]
    fn tracestate_is_capped_and_validated() {
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v{i}")).collect();
        let t = TraceContext::from_headers(&headers(&[
            ("traceparent", GOOD),
            ("tracestate", &many.join(",")),
        ]));
        let mut out = HeaderMap::new();
        t.apply(&mut out);
        let kept = out["tracestate"].to_str().unwrap();
        assert_eq!(kept.split(',').count(), MAX_TRACESTATE_MEMBERS);
        let long = format!("a={},b={}", "x".repeat(250), "y".repeat(250));
        let big = format!("{long},c={}", "z".repeat(250));
        let t =
            TraceContext::from_headers(&headers(&[("traceparent", GOOD), ("tracestate", &big)]));
        let mut out = HeaderMap::new();
        t.apply(&mut out);
        assert!(out["tracestate"].len() <= MAX_TRACESTATE_BYTES);
        let t = TraceContext::from_headers(&headers(&[
            ("traceparent", GOOD),
            ("tracestate", "novalue"),
        ]));
        let mut out = HeaderMap::new();
        t.apply(&mut out);
        assert!(out.get("tracestate").is_none());
        assert_eq!(out["traceparent"].len(), 55);
    }
}
