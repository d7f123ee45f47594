//! Strict JSON: RFC 8259 and nothing more, checked in the same pass that builds the value.
//!
//! serde_json already refuses most of what RFC 8259 forbids (comments, trailing commas,
//! `NaN`, single quotes, lone surrogates, raw control characters in strings, trailing data).
//! What it allows and we refuse, each with a location and never the submitted value:
//!
//! - a duplicate name in an object (serde_json keeps the last one silently): the parser
//!   inserts each name into the object it is building and refuses the first that is already
//!   there, in O(log n) per name;
//! - nesting deeper than [`JsonDepth`], counted on entering each array or object, so the
//!   parse stops at the first level too many and never recurses further;
//! - control characters that JSON lets through: escaped C0 controls other than `\t`, `\n`
//!   and `\r`, and DEL and the C1 controls (U+007F–U+009F), escaped or raw;
//! - a byte order mark, and invalid UTF-8 (checked over the whole body first, for an exact
//!   offset).

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// How deeply arrays and objects may nest: 1 to [`JsonDepth::MAX`].
///
/// `[[1]]` and `{"a": [1]}` have depth 2; a top-level scalar has depth 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JsonDepth(u8);

impl JsonDepth {
    /// `[limits] json_depth`: deeper than any API body we know of, and far below the
    /// recursion limit, so a nesting bomb is refused after a few dozen bytes.
    pub const DEFAULT: Self = Self(32);

    /// The deepest that can be allowed: serde_json refuses the 128th level itself, as the
    /// backstop that keeps its recursion off the end of the stack.
    pub const MAX: Self = Self(127);

    /// `depth` if it is from 1 to [`JsonDepth::MAX`].
    pub const fn new(depth: u32) -> Option<Self> {
        if depth >= 1 && depth <= Self::MAX.0 as u32 {
            Some(Self(depth as u8))
        } else {
            None
        }
    }

    /// The number of levels allowed.
    pub const fn get(self) -> u32 {
        self.0 as u32
    }
}

impl Default for JsonDepth {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a body is not strict JSON. Every variant says where, by byte offset or JSON
/// pointer, and none carries the submitted value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StrictError {
    /// Nothing but JSON whitespace.
    #[error("the body is empty")]
    Empty,
    /// A UTF-8 byte order mark (RFC 8259 §8.1: must not be added).
    #[error("the body starts with a byte order mark")]
    ByteOrderMark,
    /// Bytes that are not UTF-8.
    #[error("invalid UTF-8 at byte {at}")]
    InvalidUtf8 {
        /// Offset of the first bad byte.
        at: usize,
    },
    /// DEL or a C1 control written as is (escaped ones are [`StrictError::EscapedControl`];
    /// raw C0 controls are a [`Syntax::ControlInString`]).
    #[error("control character {} at byte {at}", CodePoint(*code))]
    RawControl {
        /// The code point, U+007F to U+009F.
        code: u32,
        /// Its offset.
        at: usize,
    },
    /// A refused control character written as a `\u` escape, in a string value or in a name.
    #[error(
        "control character {} in {} at {}",
        CodePoint(*code),
        if *in_name { "a name of the object" } else { "the string" },
        Pointer(pointer)
    )]
    EscapedControl {
        /// The code point.
        code: u32,
        /// Whether it is in a name (then `pointer` is the object's) or in a value.
        in_name: bool,
        /// Where, as an RFC 6901 JSON pointer.
        pointer: String,
    },
    /// An object with the same name twice (after unescaping).
    #[error("duplicate name at {}", Pointer(pointer))]
    DuplicateName {
        /// The second occurrence, as an RFC 6901 JSON pointer.
        pointer: String,
    },
    /// Arrays and objects nested deeper than allowed.
    #[error("nesting deeper than {max} levels at byte {at}")]
    TooDeep {
        /// The limit.
        max: u32,
        /// Where the level too many starts (approximately: within a byte or two).
        at: usize,
    },
    /// Not JSON at all.
    #[error("invalid JSON: {problem} at byte {at}")]
    Syntax {
        /// What is wrong.
        problem: Syntax,
        /// Where (approximately: at or just after the offending byte).
        at: usize,
    },
}

/// What is syntactically wrong with a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Syntax {
    /// `//` or `/* */`.
    Comment,
    /// `NaN`, `Infinity` or `-Infinity`.
    NonFiniteNumber,
    /// A `,` before `]` or `}`.
    TrailingComma,
    /// Anything but whitespace after the value.
    TrailingData,
    /// A `\uD800`–`\uDFFF` escape that is not half of a surrogate pair.
    LoneSurrogate,
    /// A `\` escape that JSON does not have.
    InvalidEscape,
    /// A raw character below U+0020 inside a string.
    ControlInString,
    /// A number that does not fit a 64-bit float (e.g. `1e400`).
    NumberOutOfRange,
    /// A malformed number (`01`, `1.`, `-`).
    InvalidNumber,
    /// `'single quotes'`.
    SingleQuote,
    /// An object member whose name is not a string.
    NameNotString,
    /// The body stops in the middle of a value.
    UnexpectedEnd,
    /// A character that cannot start or continue a value here.
    UnexpectedCharacter,
}

impl fmt::Display for Syntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Comment => "a comment",
            Self::NonFiniteNumber => "NaN or Infinity",
            Self::TrailingComma => "a trailing comma",
            Self::TrailingData => "data after the value",
            Self::LoneSurrogate => "an unpaired surrogate escape",
            Self::InvalidEscape => "an invalid escape",
            Self::ControlInString => "a raw control character in a string",
            Self::NumberOutOfRange => "a number out of range",
            Self::InvalidNumber => "an invalid number",
            Self::SingleQuote => "a single-quoted string",
            Self::NameNotString => "a member name that is not a string",
            Self::UnexpectedEnd => "the body ends inside a value",
            Self::UnexpectedCharacter => "an unexpected character",
        })
    }
}

struct CodePoint(u32);

impl fmt::Display for CodePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "U+{:04X}", self.0)
    }
}

/// A JSON pointer for a sentence: the root has no characters of its own.
struct Pointer<'a>(&'a str);

impl fmt::Display for Pointer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("the top level")
        } else {
            f.write_str(self.0)
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses `body` as strict JSON, no deeper than `max_depth`.
///
/// Top-level scalars are allowed (RFC 8259 §2). Numbers are those of `serde_json::Value`:
/// integers beyond 64 bits become floats; beyond the float range they are refused.
pub fn parse_strict(body: &[u8], max_depth: JsonDepth) -> Result<Value, StrictError> {
    if body.starts_with(BOM) {
        return Err(StrictError::ByteOrderMark);
    }
    let text = std::str::from_utf8(body).map_err(|e| StrictError::InvalidUtf8 {
        at: e.valid_up_to(),
    })?;
    if body.iter().all(|b| is_json_whitespace(*b)) {
        return Err(StrictError::Empty);
    }
    refuse_raw_controls(body)?;

    let mut state = State {
        max_depth: max_depth.get(),
        depth: 0,
        failure: None,
        unwind: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = ValueSeed { state: &mut state }
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    parsed.map_err(|e| state.into_error(&e, body))
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// DEL and C1 controls written as is. Outside strings they are syntax errors anyway, so
/// one pass over the bytes finds them all with their offsets; in UTF-8, U+0080–U+009F
/// are `C2 80`–`C2 9F`.
fn refuse_raw_controls(body: &[u8]) -> Result<(), StrictError> {
    for at in memchr::memchr2_iter(0x7F, 0xC2, body) {
        let code = match body[at] {
            0x7F => 0x7F,
            _ => match body.get(at + 1) {
                Some(&b @ 0x80..=0x9F) => u32::from(b),
                _ => continue,
            },
        };
        return Err(StrictError::RawControl { code, at });
    }
    Ok(())
}

/// Controls refused inside strings: C0 but tab, line feed and carriage return (which a
/// string can only hold escaped), DEL and C1.
pub(crate) fn is_refused_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{7F}'..='\u{9F}')
}

fn refused_control(s: &str) -> Option<char> {
    s.chars().find(|&c| is_refused_control(c))
}

/// What our visitors found, kept beside serde's opaque error.
enum Failure {
    TooDeep,
    DuplicateName,
    Control { code: u32, in_name: bool },
}

enum Segment {
    Index(usize),
    Name(String),
}

/// Shared by every level of the parse. On a failure each level pushes its own segment to
/// `unwind` as the error passes through it, so the pointer costs nothing when all is well.
struct State {
    max_depth: u32,
    depth: u32,
    failure: Option<Failure>,
    unwind: Vec<Segment>,
}

impl State {
    fn fail<E: de::Error>(&mut self, failure: Failure) -> E {
        self.failure = Some(failure);
        // The message is never shown: `into_error` builds the refusal from `failure`.
        E::custom("refused")
    }

    fn pointer(&self) -> String {
        let mut out = String::new();
        for seg in self.unwind.iter().rev() {
            out.push('/');
            match seg {
                Segment::Index(i) => out.push_str(itoa::Buffer::new().format(*i)),
                Segment::Name(name) => push_escaped(&mut out, name),
            }
        }
        out
    }

    fn into_error(self, e: &serde_json::Error, body: &[u8]) -> StrictError {
        match self.failure {
            Some(Failure::TooDeep) => StrictError::TooDeep {
                max: self.max_depth,
                at: offset(e, body),
            },
            Some(Failure::DuplicateName) => StrictError::DuplicateName {
                pointer: self.pointer(),
            },
            Some(Failure::Control { code, in_name }) => StrictError::EscapedControl {
                code,
                in_name,
                pointer: self.pointer(),
            },
            None => classify(e, body, self.max_depth),
        }
    }
}

/// Appends `name` as one RFC 6901 reference token.
pub(crate) fn push_escaped(out: &mut String, name: &str) {
    for c in name.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

/// The byte offset of a serde_json error: it reports a 1-based line and a 1-based column
/// counted in bytes.
fn offset(e: &serde_json::Error, body: &[u8]) -> usize {
    if e.is_eof() {
        return body.len();
    }
    let line_start = match e.line() {
        0 | 1 => 0,
        n => memchr::memchr_iter(b'\n', body)
            .nth(n - 2)
            .map_or(body.len(), |nl| nl + 1),
    };
    (line_start + e.column().saturating_sub(1)).min(body.len())
}

/// Names a syntax error. serde_json's messages are fixed texts that never quote input; we
/// still translate them into our own vocabulary, looking at the byte where the parser
/// stopped to tell a comment or a `NaN` from any other unexpected character.
fn classify(e: &serde_json::Error, body: &[u8], max_depth: u32) -> StrictError {
    let at = offset(e, body);
    let message = e.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(m, _)| m);
    let rest = &body[at..];
    let problem = if e.is_eof() {
        Syntax::UnexpectedEnd
    } else if rest.starts_with(b"/") {
        // A `/` outside a string is never JSON: whatever serde_json expected, it is a comment.
        Syntax::Comment
    } else {
        match message {
            "trailing comma" => Syntax::TrailingComma,
            "trailing characters" => Syntax::TrailingData,
            "lone leading surrogate in hex escape" | "unexpected end of hex escape" => {
                Syntax::LoneSurrogate
            }
            "invalid escape" | "invalid unicode code point" => Syntax::InvalidEscape,
            "number out of range" => Syntax::NumberOutOfRange,
            "recursion limit exceeded" => {
                return StrictError::TooDeep { max: max_depth, at };
            }
            m if m.starts_with("control character") => Syntax::ControlInString,
            _ if rest.starts_with(b"NaN") || rest.starts_with(b"Infinity") => {
                Syntax::NonFiniteNumber
            }
            _ if rest.starts_with(b"'") => Syntax::SingleQuote,
            "invalid number" => Syntax::InvalidNumber,
            "key must be a string" => Syntax::NameNotString,
            _ => Syntax::UnexpectedCharacter,
        }
    };
    StrictError::Syntax { problem, at }
}

struct ValueSeed<'s> {
    state: &'s mut State,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor { state: self.state })
    }
}

struct ValueVisitor<'s> {
    state: &'s mut State,
}

impl ValueVisitor<'_> {
    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.state.depth += 1;
        if self.state.depth > self.state.max_depth {
            return Err(self.state.fail(Failure::TooDeep));
        }
        Ok(())
    }

    fn checked<E: de::Error>(self, v: &str) -> Result<Value, E> {
        if let Some(c) = refused_control(v) {
            return Err(self.state.fail(Failure::Control {
                code: c.into(),
                in_name: false,
            }));
        }
        Ok(Value::String(v.to_owned()))
    }
}

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json never produces a non-finite float from text.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    /// A string without escapes, borrowed from the body: it cannot hold a C0 control
    /// (serde_json refuses raw ones) nor DEL or C1 (the byte scan refused them).
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    /// A string that had escapes: the only way a refused control can get here.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.checked(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        loop {
            match seq.next_element_seed(ValueSeed {
                state: &mut *self.state,
            }) {
                Ok(Some(v)) => items.push(v),
                Ok(None) => break,
                Err(e) => {
                    self.state.unwind.push(Segment::Index(items.len()));
                    return Err(e);
                }
            }
        }
        self.state.depth -= 1;
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut object = Map::new();
        while let Some(name) = map.next_key_seed(NameSeed {
            state: &mut *self.state,
        })? {
            match object.entry(name) {
                Entry::Occupied(o) => {
                    self.state.unwind.push(Segment::Name(o.key().clone()));
                    return Err(self.state.fail(Failure::DuplicateName));
                }
                Entry::Vacant(slot) => match map.next_value_seed(ValueSeed {
                    state: &mut *self.state,
                }) {
                    Ok(v) => {
                        slot.insert(v);
                    }
                    Err(e) => {
                        self.state.unwind.push(Segment::Name(slot.key().clone()));
                        return Err(e);
                    }
                },
            }
        }
        self.state.depth -= 1;
        Ok(Value::Object(object))
    }
}

struct NameSeed<'s> {
    state: &'s mut State,
}

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if let Some(c) = refused_control(v) {
            return Err(self.state.fail(Failure::Control {
                code: c.into(),
                in_name: true,
            }));
        }
        Ok(v.to_owned())
    }
}
