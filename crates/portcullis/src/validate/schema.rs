//! JSON Schema (Draft 2020-12), compiled once, reporting where a body fails and why in
//! words of our own that never quote the body.
//!
//! Compilation settings, each chosen for a gateway:
//!
//! - Draft 2020-12 only: a `$schema` naming another draft is an error rather than a silent
//!   change of meaning (`items` as an array means something else in draft 7).
//! - No remote `$ref`: references resolve inside the document (`$defs`, `#/...`, `$id`s
//!   it declares); anything else is a compile error. The crate is built without its HTTP
//!   and file resolvers and the retriever is set offline as well.
//! - `format` is asserted (2020-12 makes it an annotation by default): a route that
//!   writes `"format": "email"` means it. An unknown format is a compile error, so a typo
//!   cannot turn a check off.
//! - `pattern` uses the linear-time `regex` engine (ECMA-262 syntax translated): a request
//!   cannot make a pattern backtrack for seconds. Look-arounds and back-references are
//!   refused at compile time.

use std::path::Path;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{PatternOptions, ValidationError, Validator};
use serde_json::Value;

use super::strict::{JsonDepth, parse_strict, push_escaped};

/// The only `$schema` accepted (with or without an empty fragment).
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// How many violations a 422 lists: enough to fix a form in one round, few enough that
/// a body of 100k bad items cannot make a megabyte of problem details.
pub const MAX_REPORTED: usize = 50;

/// A schema compiled for validating request bodies. Share it behind an `Arc`.
pub struct CompiledSchema {
    validator: Validator,
    origin: String,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Why a schema cannot be used. The message names the file (or "inline schema") and the
/// problem; it is for operators, never for clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The file could not be read.
    #[error("{path}: cannot read the schema: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not strict JSON (the same rules as request bodies: no duplicate names).
    #[error("{origin}: the schema is not strict JSON: {source}")]
    Json {
        /// The file.
        origin: String,
        /// Why.
        source: super::StrictError,
    },
    /// Not a usable Draft 2020-12 schema.
    #[error("{origin}: {problem}")]
    Invalid {
        /// The file, or "inline schema".
        origin: String,
        /// What is wrong, and where in the schema.
        problem: String,
    },
}

/// One place where a body fails its schema.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// RFC 6901 pointer to the failing value in the body (`""` is the whole body).
    pub pointer: String,
    /// What the schema wants there. Built from the schema only: it never contains the
    /// submitted value.
    pub reason: String,
}

/// All the places where a body fails its schema: the first [`MAX_REPORTED`] found,
/// sorted by pointer, and how many more there were.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the body does not match the schema in {} places", self.errors.len() + self.more)]
pub struct Violations {
    /// The violations listed.
    pub errors: Vec<Violation>,
    /// How many more were found and not listed.
    pub more: usize,
}

impl CompiledSchema {
    /// Reads and compiles a schema file. Blocking: call it when loading configuration.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SchemaError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SchemaError::Read {
            path: origin.clone(),
            source,
        })?;
        let schema = parse_strict(&bytes, JsonDepth::MAX).map_err(|source| SchemaError::Json {
            origin: origin.clone(),
            source,
        })?;
        Self::compile(&schema, origin)
    }

    /// Compiles a schema given as a value.
    pub fn from_value(schema: &Value) -> Result<Self, SchemaError> {
        Self::compile(schema, "inline schema".to_owned())
    }

    fn compile(schema: &Value, origin: String) -> Result<Self, SchemaError> {
        let invalid = |problem: String| SchemaError::Invalid {
            origin: origin.clone(),
            problem,
        };
        if let Some(declared) = schema.get("$schema") {
            let declared = declared.as_str().unwrap_or_default();
            if declared.trim_end_matches('#') != DRAFT_2020_12 {
                return Err(invalid(format!(
                    "$schema must be {DRAFT_2020_12} (only Draft 2020-12 is supported)"
                )));
            }
        }
        let validator = jsonschema::draft202012::options()
            .offline()
            .should_validate_formats(true)
            .should_ignore_unknown_formats(false)
            .with_pattern_options(PatternOptions::regex())
            .build(schema)
            .map_err(|e| {
                let at = e.instance_path().as_str();
                if at.is_empty() {
                    invalid(format!("not a usable Draft 2020-12 schema: {e}"))
                } else {
                    invalid(format!("not a usable Draft 2020-12 schema at {at}: {e}"))
                }
            })?;
        Ok(Self { validator, origin })
    }

    /// Where the schema came from: its file, or "inline schema".
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Checks `instance`, collecting every violation (the first [`MAX_REPORTED`] listed).
    pub fn check(&self, instance: &Value) -> Result<(), Violations> {
        // The fast path stops at the first failure and builds no errors.
        if self.validator.is_valid(instance) {
            return Ok(());
        }
        let mut errors = Vec::new();
        let mut more = 0;
        for error in self.validator.iter_errors(instance) {
            describe(&error, instance, &mut |violation| {
                if errors.len() < MAX_REPORTED {
                    errors.push(violation);
                } else {
                    more += 1;
                }
            });
        }
        errors.sort_by(|a, b| (&a.pointer, &a.reason).cmp(&(&b.pointer, &b.reason)));
        Err(Violations { errors, more })
    }
}

/// Turns one error into violations (one per unexpected property for
/// `additionalProperties`), with reasons made from the schema alone. The instance's values
/// and the kinds' own messages are never used: they quote the body. `root` is the whole
/// body, used only to find member names.
fn describe(error: &ValidationError<'_>, root: &Value, emit: &mut dyn FnMut(Violation)) {
    use ValidationErrorKind as K;
    let at = error.instance_path().as_str();
    let mut one = |reason: String| {
        emit(Violation {
            pointer: at.to_owned(),
            reason,
        })
    };
    match error.kind() {
        // The names are the body's own keys: they go in the pointer (a location), the
        // reason stays fixed.
        K::AdditionalProperties { unexpected } => {
            for name in unexpected {
                emit(Violation {
                    pointer: child(at, name),
                    reason: "additional property not allowed".to_owned(),
                });
            }
        }
        K::UnevaluatedProperties { unexpected } => {
            for name in unexpected {
                emit(Violation {
                    pointer: child(at, name),
                    reason: "unevaluated property not allowed".to_owned(),
                });
            }
        }
        K::PropertyNames { error } => match error.instance().as_ref() {
            Value::String(name) => emit(Violation {
                pointer: child(at, name),
                reason: "property name not allowed by propertyNames".to_owned(),
            }),
            _ => one("a property name is not allowed by propertyNames".to_owned()),
        },
        // `unexpected` holds the items themselves: not used.
        K::UnevaluatedItems { .. } => one("array items not allowed by unevaluatedItems".into()),
        K::AdditionalItems { limit } => one(format!("more than {limit} items")),
        K::Type { kind } => one(match kind {
            TypeKind::Single(t) => format!("expected type {t}"),
            TypeKind::Multiple(set) => {
                let names: Vec<String> = set.iter().map(|t| t.to_string()).collect();
                format!("expected one of the types {}", names.join(", "))
            }
        }),
        K::Required { property } => match property.as_str() {
            Some(name) => one(format!("required property {} missing", quoted(name))),
            None => one("a required property is missing".into()),
        },
        K::Enum { .. } => one("not one of the allowed values".into()),
        K::Constant { .. } => one("not the required constant value".into()),
        K::Pattern { pattern } => one(format!("does not match pattern {}", quoted(pattern))),
        K::Format { format } => one(format!("not a valid {}", quoted(format))),
        K::Minimum { limit } => one(format!("below minimum {limit}")),
        K::Maximum { limit } => one(format!("above maximum {limit}")),
        K::ExclusiveMinimum { limit } => one(format!("not above exclusive minimum {limit}")),
        K::ExclusiveMaximum { limit } => one(format!("not below exclusive maximum {limit}")),
        K::MultipleOf { multiple_of } => one(format!("not a multiple of {multiple_of}")),
        K::MinLength { limit } => one(format!("string shorter than {limit}")),
        K::MaxLength { limit } => one(format!("string longer than {limit}")),
        K::MinItems { limit } => one(format!("fewer than {limit} items")),
        K::MaxItems { limit } => one(format!("more than {limit} items")),
        K::MinProperties { limit } => one(format!("fewer than {limit} properties")),
        K::MaxProperties { limit } => one(format!("more than {limit} properties")),
        K::UniqueItems => one("array items are not unique".into()),
        K::Contains => one("no array item matches the contains schema".into()),
        K::AnyOf { .. } => one("does not match any of the anyOf schemas".into()),
        K::OneOfNotValid { .. } => one("does not match any of the oneOf schemas".into()),
        K::OneOfMultipleValid { .. } => one("matches more than one of the oneOf schemas".into()),
        K::Not { .. } => one("matches a schema it must not match".into()),
        K::FalseSchema => match additional_members(error, root) {
            Some(names) => {
                for name in names {
                    emit(Violation {
                        pointer: child(at, name),
                        reason: "additional property not allowed".to_owned(),
                    });
                }
            }
            None => one("no value is allowed here".into()),
        },
        K::ContentEncoding { content_encoding } => {
            one(format!("not valid {}", quoted(content_encoding)))
        }
        K::FromUtf8 { .. } => one("decoded content is not UTF-8".into()),
        K::ContentMediaType { content_media_type } => {
            one(format!("not valid {}", quoted(content_media_type)))
        }
        K::BacktrackLimitExceeded { .. } | K::RegexEngineFailure { .. } => {
            one("the pattern could not be evaluated".into())
        }
        // A custom keyword's message is its own and may quote the value.
        K::Custom { keyword, .. } => one(format!("fails keyword {}", quoted(keyword))),
        K::Referencing(_) => one("a schema reference could not be resolved".into()),
    }
}

/// The member names of the object an `"additionalProperties": false` refused, when
/// jsonschema reports it as a false schema.
///
/// With no `properties` or `patternProperties` beside it, jsonschema checks
/// `"additionalProperties": false` as "the object is empty" and reports a false schema at
/// the *object* carrying its *first member's value*: read plainly, "no value is allowed
/// here" at the object, which blames the wrong place and names one member at most. Every
/// member is additional then, so all are named, as for the other form. The case is told
/// apart from a real `false` schema (which carries the value at its own location) by the
/// value carried not being the object at the location.
fn additional_members<'v>(
    error: &ValidationError<'_>,
    root: &'v Value,
) -> Option<impl Iterator<Item = &'v String>> {
    if !error
        .schema_path()
        .as_str()
        .ends_with("/additionalProperties")
    {
        return None;
    }
    let object = root.pointer(error.instance_path().as_str())?;
    let members = object.as_object()?;
    (object != error.instance().as_ref()).then(|| members.keys())
}

/// A pointer one level below `parent`.
fn child(parent: &str, name: &str) -> String {
    let mut out = String::with_capacity(parent.len() + name.len() + 1);
    out.push_str(parent);
    out.push('/');
    push_escaped(&mut out, name);
    out
}

/// A schema string as a JSON string literal, so a name with quotes cannot blur a reason.
fn quoted(s: &str) -> String {
    Value::from(s).to_string()
}
