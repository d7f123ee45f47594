//! JSON log lines (DESIGN §5): `ts`, `level`, `target`, `msg`, then the event's fields.
//!
//! Every string is escaped so that no input can forge or split a line: besides what JSON
//! requires, C1 controls, DEL and U+2028/U+2029 are written as `\uXXXX`. Fields whose
//! names are in the redaction list are written as `"[redacted]"` whatever they hold.

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

/// Appends `s` to `out` as a JSON string literal, escaping every control character
/// (C0, DEL, C1) and the line and paragraph separators.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20
                || (0x7f..=0x9f).contains(&(c as u32))
                || c == '\u{2028}'
                || c == '\u{2029}' =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Names whose values are never logged.
#[derive(Clone, Debug, Default)]
pub struct Redact {
    fields: Arc<[String]>,
}

impl Redact {
    /// Redacts fields with these names (compared case-insensitively).
    pub fn new(fields: impl IntoIterator<Item = String>) -> Self {
        Self {
            fields: fields.into_iter().map(|f| f.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a field of this name is redacted.
    pub fn is_redacted(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.eq_ignore_ascii_case(name))
    }
}

struct Visitor<'a> {
    out: &'a mut String,
    redact: &'a Redact,
}

impl Visitor<'_> {
    fn key(&mut self, field: &Field) -> bool {
        self.out.push(',');
        let name = match field.name() {
            "message" => "msg",
            n => n,
        };
        write_str(self.out, name);
        self.out.push(':');
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
        fields.record(&mut Visitor {
            out: &mut out,
            redact: &self.redact,
        });
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
        out.push_str("{\"ts\":");
        let ts = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        write_str(&mut out, &ts);
        out.push_str(",\"level\":");
        write_str(
            &mut out,
            &event.metadata().level().as_str().to_ascii_lowercase(),
        );
        out.push_str(",\"target\":");
        write_str(&mut out, event.metadata().target());
        event.record(&mut Visitor {
            out: &mut out,
            redact: &self.redact,
        });
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
    fn redaction_is_case_insensitive() {
        let r = Redact::new(["Password".to_string()]);
        assert!(r.is_redacted("password"));
        assert!(r.is_redacted("PASSWORD"));
        assert!(!r.is_redacted("user"));
    }
}
