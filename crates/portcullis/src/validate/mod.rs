//! Body validation for routes that declare it: JSON only, parsed strictly, checked
//! against the route's schema, with named fields HTML-sanitized.
//!
//! The rule, in order (DESIGN §9, Bodies):
//!
//! 1. [`check_content_type`]: `application/json` or `application/*+json`, charset `utf-8`
//!    if any, else **415** `unsupported-media-type`.
//! 2. [`parse_strict`]: RFC 8259 with nothing tolerated, else **400** `invalid-body` with a
//!    detail naming the problem and its byte offset or JSON pointer. Refused: a BOM,
//!    invalid UTF-8, comments, trailing commas, `NaN`/`Infinity`, single quotes, lone
//!    surrogate escapes, invalid escapes or numbers, numbers beyond the float range
//!    (`1e400`), data after the value, an empty body, duplicate names in an object (after
//!    unescaping), nesting deeper than [`JsonDepth`] (32 by default; arrays and objects
//!    both count), and control characters: raw C0 (invalid JSON anyway), escaped C0 other
//!    than `\t` `\n` `\r`, and DEL and C1 (U+007F–U+009F) escaped or raw — in values and
//!    in names alike. Top-level scalars are allowed.
//! 3. [`CompiledSchema::check`] (when the route has a `schema`): Draft 2020-12, else
//!    **422** `invalid-body` with an `errors` extension listing `{pointer, reason}` for each
//!    failing place (at most [`MAX_REPORTED`]; `more_errors` counts the rest).
//! 4. Sanitizing (when the route has `sanitize_html`): see [`FieldPath`]. The body is
//!    forwarded byte for byte ([`Validated::Original`]) unless a string changed.
//!
//! No refusal quotes the submitted value: details and reasons are built from our own
//! words, the schema and locations. A location can contain the body's own member names
//! (`/items/0/colour`), never its values.
//!
//! ```
//! use std::sync::Arc;
//! use portcullis::validate::{BodyRules, CompiledSchema, Validated, validate};
//!
//! let schema = CompiledSchema::from_value(&serde_json::json!({
//!     "type": "object",
//!     "properties": { "qty": { "type": "integer", "minimum": 1 } },
//!     "required": ["qty"]
//! })).unwrap();
//! let rules = BodyRules::new().with_schema(Arc::new(schema));
//!
//! assert_eq!(validate(br#"{"qty": 2}"#, &rules), Ok(Validated::Original));
//!
//! let refused = validate(br#"{"qty": 2, "qty": 3}"#, &rules).unwrap_err();
//! assert_eq!(refused.status(), 400);
//! assert_eq!(refused.to_string(), "duplicate name at /qty");
//!
//! let refused = validate(br#"{"qty": 0}"#, &rules).unwrap_err();
//! assert_eq!(refused.status(), 422);
//! let body: serde_json::Value =
//!     serde_json::from_slice(&refused.to_problem().body(Some("req-1"))).unwrap();
//! assert_eq!(body["errors"][0]["pointer"], "/qty");
//! assert_eq!(body["errors"][0]["reason"], "below minimum 1");
//! ```
//!
//! # Fail mode
//!
//! Nothing here waits on anything: no store, no network (remote `$ref`s are refused when
//! the schema is compiled). Time and memory are linear in the body: duplicate names are
//! found through the object being built (O(log n) per name), a nesting bomb stops at the
//! first level too many, and the byte limit in front of this bounds everything else.
//!
//! # Security
//!
//! - Put the body size limit in front: this module reads a whole body.
//! - The value checked is exactly what the upstream gets: a duplicate name cannot show one
//!   value to the schema and another to the upstream, and a body that would be rewritten
//!   is never forwarded in its original form.
//! - Sanitizing can lengthen a string (`&` becomes `&amp;`, links gain `rel`), so the
//!   forwarded body may exceed a `maxLength` it met before; it runs after the schema.
//! - Sanitizing is for fields that are meant to hold HTML. Rejecting bad input through the
//!   schema is better than rewriting it.

mod media_type;
#[cfg(feature = "sanitize-html")]
mod sanitize;
mod schema;
mod strict;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use crate::problem::{Problem, ProblemKind};

pub use media_type::{MediaTypeError, check_content_type};
#[cfg(feature = "sanitize-html")]
pub use sanitize::{FieldPath, FieldPathError};
pub use schema::{CompiledSchema, DRAFT_2020_12, MAX_REPORTED, SchemaError, Violation, Violations};
pub use strict::{JsonDepth, StrictError, Syntax, parse_strict};

/// What a route asks of its bodies.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct BodyRules {
    max_depth: JsonDepth,
    schema: Option<Arc<CompiledSchema>>,
    #[cfg(feature = "sanitize-html")]
    sanitize_html: Vec<FieldPath>,
}

impl BodyRules {
    /// Strict JSON no deeper than [`JsonDepth::DEFAULT`], no schema, nothing sanitized.
    pub fn new() -> Self {
        Self::default()
    }

    /// How deeply arrays and objects may nest (`[limits] json_depth`).
    pub fn max_depth(mut self, depth: JsonDepth) -> Self {
        self.max_depth = depth;
        self
    }

    /// The route's schema (`schema`).
    pub fn with_schema(mut self, schema: Arc<CompiledSchema>) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Adds a field to HTML-sanitize (one entry of `sanitize_html`).
    #[cfg(feature = "sanitize-html")]
    pub fn add_sanitize_html(mut self, path: FieldPath) -> Self {
        self.sanitize_html.push(path);
        self
    }
}

/// What to forward after a body passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validated {
    /// The body exactly as received.
    Original,
    /// A new body: sanitizing changed at least one string (set `Content-Length` anew).
    Sanitized(Bytes),
}

/// Why a body is refused. Render it with [`Refusal::to_problem`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// 415: not JSON in UTF-8.
    #[error(transparent)]
    MediaType(#[from] MediaTypeError),
    /// 400: not strict JSON.
    #[error(transparent)]
    Json(#[from] StrictError),
    /// 422: valid JSON that fails the route's schema.
    #[error(transparent)]
    Schema(#[from] Violations),
}

impl Refusal {
    /// The problem type: `unsupported-media-type` or `invalid-body`.
    pub fn kind(&self) -> ProblemKind {
        match self {
            Self::MediaType(_) => ProblemKind::UnsupportedMediaType,
            Self::Json(_) | Self::Schema(_) => ProblemKind::InvalidBody,
        }
    }

    /// 415, 400 or 422.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Json(_) => StatusCode::BAD_REQUEST,
            Self::Schema(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The problem details: the sentence of the refusal as `detail`, and for a schema
    /// failure `errors` (`[{"pointer", "reason"}]`) and, when some were left out,
    /// `more_errors`.
    pub fn to_problem(&self) -> Problem {
        let problem = Problem::new(self.kind()).status(self.status());
        match self {
            Self::MediaType(e) => problem.detail(e.to_string()),
            Self::Json(e) => problem.detail(e.to_string()),
            Self::Schema(v) => {
                let listed = serde_json::to_value(&v.errors).unwrap_or_default();
                let problem = problem
                    .detail("the body does not match the schema of this route")
                    .extension("errors", listed);
                if v.more == 0 {
                    problem
                } else {
                    problem.extension("more_errors", Value::from(v.more))
                }
            }
        }
    }
}

impl From<Refusal> for Problem {
    fn from(r: Refusal) -> Self {
        r.to_problem()
    }
}

/// Validates a body against a route's rules (the `Content-Type` is checked apart, by
/// [`check_content_type`], before the body is read).
pub fn validate(body: &[u8], rules: &BodyRules) -> Result<Validated, Refusal> {
    let value = parse_strict(body, rules.max_depth)?;
    if let Some(schema) = &rules.schema {
        schema.check(&value)?;
    }
    #[cfg(feature = "sanitize-html")]
    if !rules.sanitize_html.is_empty()
        && let Some(new) = sanitize::sanitize(body, &rules.sanitize_html)
    {
        return Ok(Validated::Sanitized(Bytes::from(new)));
    }
    Ok(Validated::Original)
}
