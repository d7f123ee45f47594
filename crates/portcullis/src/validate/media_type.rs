//! The `Content-Type` a validated route accepts: JSON in UTF-8, said exactly once.
//!
//! Accepted: `application/json` and `application/<anything>+json` (RFC 6839), type and
//! subtype in any case, with any parameters (RFC 9110 §8.3.1 syntax); a `charset`, if
//! present, must be `utf-8` in any case, quoted or not, and only once. Everything else is
//! 415: no `Content-Type`, several, a malformed one, another type, another charset
//! (`utf8`, `latin1`, `utf-16`), or a value that is not visible ASCII.

use http::HeaderMap;
use http::header::CONTENT_TYPE;

/// Why a request's `Content-Type` is refused (always 415). The messages never repeat the
/// header's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaTypeError {
    /// No `Content-Type`.
    #[error("the request has no Content-Type; this route accepts application/json")]
    Missing,
    /// More than one `Content-Type` field.
    #[error("the request has more than one Content-Type")]
    Several,
    /// Not `type/subtype` followed by well-formed parameters.
    #[error("the Content-Type is malformed")]
    Malformed,
    /// A media type other than JSON.
    #[error("this route accepts only application/json or application/*+json")]
    NotJson,
    /// A `charset` other than `utf-8`, or two of them.
    #[error("this route accepts JSON only in UTF-8")]
    Charset,
}

/// Checks that the request says its body is JSON in UTF-8.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), super::Refusal> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => Err(MediaTypeError::Missing),
        (Some(_), Some(_)) => Err(MediaTypeError::Several),
        (Some(v), None) => Ok(v),
    }?;
    Ok(check_media_type(value.as_bytes())?)
}

/// The rule on one field value.
pub(crate) fn check_media_type(value: &[u8]) -> Result<(), MediaTypeError> {
    let value = std::str::from_utf8(value)
        .ok()
        .filter(|v| v.is_ascii())
        .ok_or(MediaTypeError::Malformed)?;
    let (essence, mut params) = value.split_once(';').unwrap_or((value, ""));
    let (ty, subtype) = essence
        .trim_matches(is_ows)
        .split_once('/')
        .ok_or(MediaTypeError::Malformed)?;
    if !is_token(ty) || !is_token(subtype) {
        return Err(MediaTypeError::Malformed);
    }
    let structured_json = subtype.len() > "+json".len()
        && subtype
            .get(subtype.len() - "+json".len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case("+json"));
    if !ty.eq_ignore_ascii_case("application")
        || !(subtype.eq_ignore_ascii_case("json") || structured_json)
    {
        return Err(MediaTypeError::NotJson);
    }

    // parameters = *( OWS ";" OWS [ parameter ] ); the first ";" is already consumed.
    let mut charset_seen = false;
    loop {
        params = params.trim_start_matches(is_ows);
        if params.is_empty() {
            break;
        }
        if let Some(rest) = params.strip_prefix(';') {
            params = rest;
            continue;
        }
        let (name, rest) = params.split_once('=').ok_or(MediaTypeError::Malformed)?;
        if !is_token(name) {
            return Err(MediaTypeError::Malformed);
        }
        let (val, rest) = parameter_value(rest)?;
        params = rest.trim_start_matches(is_ows);
        if !params.is_empty() {
            params = params.strip_prefix(';').ok_or(MediaTypeError::Malformed)?;
        }
        if name.eq_ignore_ascii_case("charset") {
            if charset_seen || !val.eq_ignore_ascii_case("utf-8") {
                return Err(MediaTypeError::Charset);
            }
            charset_seen = true;
        }
    }
    Ok(())
}

/// A token or a quoted-string (unescaped), and what follows it.
fn parameter_value(s: &str) -> Result<(String, &str), MediaTypeError> {
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s.find(|c| c == ';' || is_ows(c)).unwrap_or(s.len());
        let (token, rest) = s.split_at(end);
        if !is_token(token) {
            return Err(MediaTypeError::Malformed);
        }
        return Ok((token.to_owned(), rest));
    };
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &quoted[i + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped)) if escaped == '\t' || (' '..='~').contains(&escaped) => {
                    out.push(escaped);
                }
                _ => return Err(MediaTypeError::Malformed),
            },
            c if c == '\t' || (' '..='~').contains(&c) => out.push(c),
            _ => return Err(MediaTypeError::Malformed),
        }
    }
    Err(MediaTypeError::Malformed)
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 9110 §5.6.2 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
