//! JSON log lines (DESIGN §5): `ts`, `level`, `target`, `msg`, then the event's fields.
//!
//! Every string is escaped so that no input can forge or split a line: besides what JSON
//! requires, C1 controls, DEL and U+2028/U+2029 are written as `\uXXXX`. Fields whose
//! names are in the redaction list are written as `"[redacted]"` whatever they hold.
//!
//! A line written while a request is being answered carries that request's `request_id`
//! and `trace_id` ([`super::scope`]), unless the event names them itself.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The value written in place of a redacted one.
pub const REDACTED: &str = "[redacted]";

/// Bytes that are, or may start, something to escape.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t[0xc2] = true;
    t[0xe2] = true;
    t
};

/// Appends `s` to `out` as a JSON string literal, escaping every control character
/// (C0, DEL, C1) and the line and paragraph separators.
///
/// Runs of safe bytes are copied whole; only the bytes that may start something to escape
/// are looked at closely (C1 controls are `C2 80`–`C2 9F` in UTF-8, the separators
/// `E2 80 A8` and `E2 80 A9`).
pub fn write_str(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push('"');
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !SPECIAL[usize::from(b)] {
            i += 1;
            continue;
        }
        let escape: Option<(u32, usize)> = match b {
            0xc2 => match bytes.get(i + 1) {
                Some(&n @ 0x80..=0x9f) => Some((u32::from(n), 2)),
                _ => None,
            },
            0xe2 => match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(0x80), Some(&n @ (0xa8 | 0xa9))) => Some((0x2000 + u32::from(n - 0x80), 3)),
                _ => None,
            },
            _ => Some((u32::from(b), 1)),
        };
        let Some((code, len)) = escape else {
            i += 1;
            continue;
        };
        out.push_str(&s[run..i]);
        match code {
            0x22 => out.push_str("\\\""),
            0x5c => out.push_str("\\\\"),
            0x0a => out.push_str("\\n"),
            0x0d => out.push_str("\\r"),
            0x09 => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\u{c:04x}");
            }
        }
        i += len;
        run = i;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    }
}

/// Lets `time` format straight into a `String`.
struct FmtAdapter<'a>(&'a mut String);

impl std::io::Write for FmtAdapter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .push_str(std::str::from_utf8(buf).map_err(std::io::Error::other)?);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Names whose values are never logged.
#[derive(Clone, Debug, Default)]
pub struct Redact {
    fields: Arc<[String]>,
    /// Bit `n` is set when a name of length `n` (or 63 for longer) is in the list: most
    /// field names are rejected by one test.
    lengths: u64,
}

impl Redact {
    /// Redacts fields with these names (compared case-insensitively).
    pub fn new(fields: impl IntoIterator<Item = String>) -> Self {
        let fields: Arc<[String]> = fields.into_iter().map(|f| f.to_ascii_lowercase()).collect();
        let lengths = fields.iter().fold(0u64, |m, f| m | 1 << f.len().min(63));
        Self { fields, lengths }
    }

    /// Whether a field of this name is redacted.
    pub fn is_redacted(&self, name: &str) -> bool {
        self.lengths & (1 << name.len().min(63)) != 0
            && self
                .fields
                .iter()
                .any(|f| f.len() == name.len() && f.eq_ignore_ascii_case(name))
    }

    /// `target` (`path?query`, or anything ending so, such as a cache key
    /// `GET path?query`) with the value of each query parameter whose name is redacted
    /// written as `[redacted]`. A name is compared percent-decoded, and by each of its
    /// parts in the nested forms `user[password]` and `user.password`.
    pub fn query(&self, target: &str) -> String {
        let Some((head, query)) = target.split_once('?') else {
            return target.to_owned();
        };
        let mut out = String::with_capacity(target.len());
        out.push_str(head);
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if self.is_redacted_param(name) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(pair),
            }
        }
        out
    }

    fn is_redacted_param(&self, name: &str) -> bool {
        let name = percent_decode(name);
        self.is_redacted(&name)
            || name
                .split(['[', ']', '.'])
                .any(|part| !part.is_empty() && self.is_redacted(part))
    }

    /// `value` with every member whose name is redacted written as `[redacted]`, at any
    /// depth, and every string that holds a query ([`Redact::query`]) redacted as one:
    /// for JSON that is logged whole, such as an admin change.
    pub fn json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| {
                        let v = if self.is_redacted(k) {
                            Value::String(REDACTED.into())
                        } else {
                            self.json(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.json(v)).collect()),
            Value::String(s) if s.contains('?') => Value::String(self.query(s)),
            other => other.clone(),
        }
    }
}

/// `%XX` decoded and `+` read as a space, as in a form-encoded name; invalid escapes kept.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Visitor<'a> {
    out: &'a mut String,
    redact: &'a Redact,
    /// Whether `request_id` / `trace_id` were written, so the request's are not added
    /// a second time.
    has_request_id: bool,
    has_trace_id: bool,
}

impl<'a> Visitor<'a> {
    fn new(out: &'a mut String, redact: &'a Redact) -> Self {
        Self {
            out,
            redact,
            has_request_id: false,
            has_trace_id: false,
        }
    }
}

impl Visitor<'_> {
    fn key(&mut self, field: &Field) -> bool {
        let name = match field.name() {
            "message" => "msg",
            "request_id" => {
                self.has_request_id = true;
                "request_id"
            }
            "trace_id" => {
                self.has_trace_id = true;
                "trace_id"
            }
            n => n,
        };
        // Field names are Rust identifiers: nothing in them needs escaping.
        self.out.push_str(",\"");
        self.out.push_str(name);
        self.out.push_str("\":");
        if self.redact.is_redacted(name) {
            write_str(self.out, REDACTED);
            return false;
        }
        true
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            write_str(self.out, value);
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            if value.is_finite() {
                let _ = write!(self.out, "{value}");
            } else {
                write_str(self.out, &value.to_string());
            }
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            write_str(self.out, &format!("{value:?}"));
        }
    }
}

/// Formats span fields as `,"k":v` fragments, so they can be copied into each line.
#[derive(Clone, Debug, Default)]
pub struct JsonFields {
    redact: Redact,
}

impl JsonFields {
    /// Span fields, redacted like event fields.
    pub fn new(redact: Redact) -> Self {
        Self { redact }
    }
}

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut out = String::new();
        fields.record(&mut Visitor::new(&mut out, &self.redact));
        writer.write_str(&out)
    }
}

/// One JSON object per event.
#[derive(Clone, Debug, Default)]
pub struct JsonLines {
    redact: Redact,
}

impl JsonLines {
    /// Lines with these fields redacted.
    pub fn new(redact: Redact) -> Self {
        Self { redact }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut out = String::with_capacity(256);
        out.push_str("{\"ts\":\"");
        // RFC 3339 in UTC: digits, '-', ':', '.', 'T' and 'Z' only, nothing to escape.
        let _ = OffsetDateTime::now_utc().format_into(&mut FmtAdapter(&mut out), &Rfc3339);
        out.push_str("\",\"level\":\"");
        out.push_str(level_name(event.metadata().level()));
        out.push('"');
        out.push_str(",\"target\":");
        write_str(&mut out, event.metadata().target());
        let mut visitor = Visitor::new(&mut out, &self.redact);
        event.record(&mut visitor);
        let (has_request_id, has_trace_id) = (visitor.has_request_id, visitor.has_trace_id);
        if let Some(request) = super::scope::current() {
            // Ids are `[A-Za-z0-9._-]` and hex: escaped anyway, as every value is.
            if !has_request_id {
                out.push_str(",\"request_id\":");
                write_str(&mut out, request.request_id());
            }
            if !has_trace_id {
                out.push_str(",\"trace_id\":");
                write_str(&mut out, request.trace_id());
            }
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    out.push_str(fields);
                }
            }
        }
        out.push_str("}\n");
        writer.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_control_and_separator() {
        let mut out = String::new();
        write_str(
            &mut out,
            "a\"b\\c\nd\re\u{0}f\u{1b}g\u{7f}h\u{85}i\u{9f}j\u{2028}k\u{2029}l",
        );
        assert_eq!(
            out,
            "\"a\\\"b\\\\c\\nd\\re\\u0000f\\u001bg\\u007fh\\u0085i\\u009fj\\u2028k\\u2029l\""
        );
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert!(parsed.contains('\u{2028}'));
        assert!(!out.contains('\n'));
    }

    #[test]
    fn plain_text_and_multibyte_text_pass_through() {
        for text in [
            "",
            "plain",
            "caf\u{e9} \u{2014} \u{1F600} \u{a0}\u{c2}",
            "\u{2027}\u{202a}",
        ] {
            let mut out = String::new();
            write_str(&mut out, text);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text);
            assert_eq!(out.len(), text.len() + 2, "{text:?} was escaped needlessly");
        }
    }

    #[test]
    fn query_parameters_are_redacted_by_name_however_written() {
        let r = Redact::new(["password".to_string(), "token".to_string()]);
        for (name, target, want) in [
            ("no query", "/a/b", "/a/b"),
            ("nothing to hide", "/a?page=2&q=x", "/a?page=2&q=x"),
            (
                "a cache key",
                "GET /p?page=1&token=s3&password=s4",
                "GET /p?page=1&token=[redacted]&password=[redacted]",
            ),
            ("case", "/a?TOKEN=s", "/a?TOKEN=[redacted]"),
            (
                "encoded name",
                "/a?pass%77ord=s&x=1",
                "/a?pass%77ord=[redacted]&x=1",
            ),
            (
                "nested",
                "/a?user[password]=s",
                "/a?user[password]=[redacted]",
            ),
            ("dotted", "/a?user.token=s", "/a?user.token=[redacted]"),
            (
                "repeated",
                "/a?token=1&token=2",
                "/a?token=[redacted]&token=[redacted]",
            ),
            ("no value", "/a?token&x=1", "/a?token&x=1"),
            ("empty value", "/a?token=", "/a?token=[redacted]"),
            ("bad escape", "/a?%zztoken=1%", "/a?%zztoken=1%"),
        ] {
            assert_eq!(r.query(target), want, "{name}");
        }
    }

    #[test]
    fn json_members_and_queries_inside_are_redacted_at_depth() {
        let r = Redact::new(["password".to_string(), "token".to_string()]);
        let v = serde_json::json!({
            "key": "GET /p?token=s1&page=2",
            "a": [{ "password": "s2", "b": { "Token": { "x": "s3" } } }],
            "n": 3,
        });
        assert_eq!(
            r.json(&v),
            serde_json::json!({
                "key": "GET /p?token=[redacted]&page=2",
                "a": [{ "password": "[redacted]", "b": { "Token": "[redacted]" } }],
                "n": 3,
            })
        );
    }

    #[test]
    fn redaction_is_case_insensitive() {
        let r = Redact::new(["Password".to_string()]);
        assert!(r.is_redacted("password"));
        assert!(r.is_redacted("PASSWORD"));
        assert!(!r.is_redacted("user"));
    }
}
