//! HTML sanitizing of named string fields, by rewriting only the strings that change.
//!
//! A [`FieldPath`] names fields by object keys separated by `/` (`author/bio`); a segment
//! `*` stands for every member of an object or every element of an array
//! (`items/*/text`); a segment of decimal digits also matches that array index
//! (`items/0/text`). `~1` and `~0` spell a `/` and a `~` inside a key, as in RFC 6901. A
//! leading `/` is allowed and changes nothing. A key spelled exactly `*` can only be
//! reached through the wildcard.
//!
//! Each string found at such a path is cleaned with ammonia's default allow-list: it
//! keeps text formatting and structure (`b`, `i`, `em`, `strong`, `p`, `ul`/`ol`/`li`,
//! `blockquote`, `code`, `pre`, tables, `img` with `src`/`alt`, …) and links (`a` with
//! `href` in schemes such as `http`, `https`, `mailto`, plus `rel="noopener noreferrer"`);
//! it removes `script` and `style` elements with their content, every other element (its
//! text kept), every event handler attribute (`onerror=`, …), `style` attributes, and URLs
//! with other schemes (`javascript:`, `data:`). Text is re-serialised as HTML, so a bare
//! `<` or `&` comes out as `&lt;` or `&amp;`. A character reference to a control that
//! strict parsing refuses (`&#1;`, `&#x7F;`, `&#x81;`) is dropped rather than decoded, so a
//! sanitized body still parses strictly.
//!
//! Values that are not strings, and paths that are not in the body, are left alone. The
//! body is scanned once; a string that ammonia leaves as it was is not touched, and a body
//! where nothing changed is not rewritten at all. When something changes, only those
//! strings' bytes are replaced: key order, spacing and numbers stay as the client sent them.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use super::strict::is_refused_control;

/// A path to the string fields to sanitize, e.g. `comment`, `author/bio`, `items/*/text`.
#[derive(Clone, PartialEq, Eq)]
pub struct FieldPath {
    segments: Vec<Segment>,
    source: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Any,
    Name { name: String, index: Option<usize> },
}

/// Why a field path is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldPathError {
    /// `""` or `"/"`.
    #[error("a field path must name at least one key")]
    Empty,
    /// `a//b`, or a trailing `/`.
    #[error("a field path has an empty segment")]
    EmptySegment,
    /// A `~` not followed by `0` or `1`.
    #[error("a field path has a `~` that is not `~0` or `~1`")]
    BadEscape,
}

impl FieldPath {
    /// Parses a path as written in `sanitize_html`.
    pub fn parse(path: &str) -> Result<Self, FieldPathError> {
        let body = path.strip_prefix('/').unwrap_or(path);
        if body.is_empty() {
            return Err(FieldPathError::Empty);
        }
        let segments = body
            .split('/')
            .map(|raw| {
                if raw.is_empty() {
                    return Err(FieldPathError::EmptySegment);
                }
                if raw == "*" {
                    return Ok(Segment::Any);
                }
                let name = unescape(raw)?;
                // Canonical decimal only: `007` is a key, not an index.
                let canonical = name.bytes().all(|b| b.is_ascii_digit())
                    && (name == "0" || !name.starts_with('0'));
                let index = canonical.then(|| name.parse().ok()).flatten();
                Ok(Segment::Name { name, index })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            segments,
            source: path.to_owned(),
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn matches(&self, stack: &[Frame<'_>]) -> bool {
        self.segments.len() == stack.len()
            && self
                .segments
                .iter()
                .zip(stack)
                .all(|(seg, frame)| match (seg, frame) {
                    (Segment::Any, _) => true,
                    (Segment::Name { name, .. }, Frame::Object { name: Some(key) }) => name == key,
                    (Segment::Name { index, .. }, Frame::Array { index: at }) => {
                        *index == Some(*at)
                    }
                    (Segment::Name { .. }, Frame::Object { name: None }) => false,
                })
    }
}

fn unescape(raw: &str) -> Result<String, FieldPathError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err(FieldPathError::BadEscape),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FromStr for FieldPath {
    type Err = FieldPathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({:?})", self.source)
    }
}

/// Where the scan is: the containers around the current value.
enum Frame<'a> {
    /// `name` is the member being read (`None` before the first name).
    Object {
        name: Option<Cow<'a, str>>,
    },
    Array {
        index: usize,
    },
}

/// Sanitizes the strings of `body` at `paths`; `None` when nothing changed.
///
/// `body` must already be strict JSON (this scan does not check syntax), no deeper than
/// [`super::JsonDepth::MAX`].
pub(crate) fn sanitize(body: &[u8], paths: &[FieldPath]) -> Option<Vec<u8>> {
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut expect_name = false;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match b {
            b'{' => {
                stack.push(Frame::Object { name: None });
                expect_name = true;
                i += 1;
            }
            b'[' => {
                stack.push(Frame::Array { index: 0 });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                expect_name = false;
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Array { index }) => *index += 1,
                    Some(Frame::Object { .. }) => expect_name = true,
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let end = string_end(body, i);
                let token = &body[i..end];
                if expect_name {
                    if let Some(Frame::Object { name }) = stack.last_mut() {
                        *name = decode(token);
                    }
                    expect_name = false;
                } else if paths.iter().any(|p| p.matches(&stack))
                    && let Some(text) = decode(token)
                {
                    let mut clean = ammonia::clean(&text);
                    // ammonia decodes character references, so `&#1;` or `&#x81;` comes
                    // out as a raw control character: one that `parse_strict` refuses in
                    // any body. Drop those, so that sanitizing never forwards what the
                    // gateway would have refused.
                    if clean.contains(is_refused_control) {
                        clean.retain(|c| !is_refused_control(c));
                    }
                    if clean != text {
                        // Serialising a `String` cannot fail.
                        let json = serde_json::to_string(&clean).unwrap_or_default();
                        edits.push((i..end, json));
                    }
                }
                i = end;
            }
            // Whitespace, `:`, numbers, `true`, `false`, `null`.
            _ => i += 1,
        }
    }
    if edits.is_empty() {
        return None;
    }
    let grown: usize = edits
        .iter()
        .map(|(r, s)| s.len().saturating_sub(r.len()))
        .sum();
    let mut out = Vec::with_capacity(body.len() + grown);
    let mut from = 0;
    for (range, json) in &edits {
        out.extend_from_slice(&body[from..range.start]);
        out.extend_from_slice(json.as_bytes());
        from = range.end;
    }
    out.extend_from_slice(&body[from..]);
    Some(out)
}

/// The end (one past the closing quote) of the string token starting at `start`.
fn string_end(body: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(found) = memchr::memchr2(b'"', b'\\', &body[i..]) {
        let at = i + found;
        if body[at] == b'\\' {
            i = at + 2;
            if i >= body.len() {
                break;
            }
        } else {
            return at + 1;
        }
    }
    body.len()
}

/// A string token's text: borrowed when it has no escapes.
fn decode(token: &[u8]) -> Option<Cow<'_, str>> {
    let inner = token.get(1..token.len().checked_sub(1)?)?;
    if memchr::memchr(b'\\', inner).is_none() {
        std::str::from_utf8(inner).ok().map(Cow::Borrowed)
    } else {
        serde_json::from_slice::<String>(token).ok().map(Cow::Owned)
    }
}
