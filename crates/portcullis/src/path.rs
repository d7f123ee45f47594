//! The normalised path: one spelling per resource, so no spelling can dodge a route.
//!
//! Rules (DESIGN §9, Paths and HTTP):
//!
//! - `%XX` of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded; other escapes
//!   are kept, with upper-case hex;
//! - dot segments (`.`, `..`, also spelled `%2e`) are removed, repeated `/` merged;
//! - refused with 400: an encoded `/` or `\`, a literal `\`, a `;` parameter, a control
//!   character or NUL (literal or encoded), a malformed escape, `..` above the root, and
//!   anything that is not an absolute path;
//! - routes match case-insensitively (ASCII) and ignore a trailing slash; the upstream
//!   sees the normalised path with the case and trailing slash the client sent.
//!
//! ```
//! use portcullis::path::{normalize, PathPattern};
//!
//! let p = normalize("/API/./v1//%61dmin/../users/").unwrap();
//! assert_eq!(p.as_str(), "/API/v1/users/");
//! assert_eq!(p.match_key(), "/api/v1/users");
//! assert!(PathPattern::parse("/api/**").unwrap().matches(p.match_key()));
//! assert!(normalize("/api/..%2f..%2fetc").is_err());
//! ```

use std::fmt;

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// The target is not an absolute path (`*`, or a missing leading `/`).
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// An encoded `/` or `\`, or a literal `\`: the segments would be ambiguous.
    EncodedSeparator,
    /// A `;` path parameter.
    Parameter,
    /// A control character or NUL, literal or encoded.
    ControlCharacter,
    /// A `..` that climbs above the root.
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "the request target is not an absolute path",
            Self::BadEscape => "the path has a malformed percent-escape",
            Self::EncodedSeparator => "the path has an encoded or backslash separator",
            Self::Parameter => "the path has a ';' parameter",
            Self::ControlCharacter => "the path has a control character",
            Self::AboveRoot => "the path climbs above the root",
        })
    }
}

impl std::error::Error for PathError {}

/// A normalised path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalizedPath {
    forward: String,
    key: String,
}

impl NormalizedPath {
    /// The path to forward: normalised, with the client's case and trailing slash.
    pub fn as_str(&self) -> &str {
        &self.forward
    }

    /// The path routes match: lower-case ASCII, no trailing slash (`/` for the root).
    pub fn match_key(&self) -> &str {
        &self.key
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Ends a segment; returns whether it names a directory (empty, `.` or `..`), which
/// implies a trailing slash when it is the last.
fn push_segment(seg: &mut String, segments: &mut Vec<String>) -> Result<bool, PathError> {
    let s = std::mem::take(seg);
    match s.as_str() {
        "" | "." => Ok(true),
        ".." => {
            if segments.pop().is_none() {
                return Err(PathError::AboveRoot);
            }
            Ok(true)
        }
        _ => {
            segments.push(s);
            Ok(false)
        }
    }
}

/// Normalises a request path (without the query).
pub fn normalize(raw: &str) -> Result<NormalizedPath, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Decode into segments.
    let mut segments: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut trailing_slash = false;
    let mut i = 1;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' => {
                push_segment(&mut current, &mut segments)?;
                trailing_slash = true;
                i += 1;
                continue;
            }
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h * 16 + l;
                if v == b'/' || v == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                if v < 0x20 || v == 0x7f {
                    return Err(PathError::ControlCharacter);
                }
                if is_unreserved(v) {
                    current.push(char::from(v));
                } else {
                    current.push('%');
                    current.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    current.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::EncodedSeparator),
            b';' => return Err(PathError::Parameter),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ => {
                // Multi-byte UTF-8 is copied whole: find the char at this position.
                let ch = raw[i..].chars().next().ok_or(PathError::BadEscape)?;
                if ch.is_control() {
                    return Err(PathError::ControlCharacter);
                }
                current.push(ch);
                i += ch.len_utf8();
            }
        }
        trailing_slash = false;
    }
    let dir_like = push_segment(&mut current, &mut segments)?;
    let trailing = trailing_slash || (dir_like && !raw.ends_with('/') && raw.len() > 1);
    let mut forward = String::with_capacity(raw.len());
    for s in &segments {
        forward.push('/');
        forward.push_str(s);
    }
    let mut key = forward.to_ascii_lowercase();
    if forward.is_empty() {
        forward.push('/');
        key.push('/');
    } else if trailing {
        forward.push('/');
    }
    Ok(NormalizedPath { forward, key })
}

/// Why a route's path pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError(String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatternError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    /// `**`: any number of segments, none included.
    Any,
    /// A segment, where `*` matches any run of characters within it.
    Glob(String),
}

/// A route's path glob: `*` matches within one segment, `**` any number of segments
/// (none included, so `/admin/**` also covers `/admin`). Literal parts match
/// case-insensitively (ASCII), against [`NormalizedPath::match_key`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segs: Vec<Seg>,
}

impl PathPattern {
    /// Compiles a glob such as `/admin/**` or `/api/*/items`.
    pub fn parse(glob: &str) -> Result<Self, PatternError> {
        if !glob.starts_with('/') {
            return Err(PatternError(format!(
                "a path pattern starts with '/', e.g. \"/api/**\"; got {glob:?}"
            )));
        }
        // The pattern is normalised like a request path, so "/a/./b" and "/A//b" mean "/a/b".
        let norm = normalize(&glob.replace('*', "%2A"))
            .map_err(|e| PatternError(format!("{e} in pattern {glob:?}")))?;
        let key = norm.match_key().replace("%2a", "*");
        let mut segs = Vec::new();
        for part in key.split('/').filter(|s| !s.is_empty()) {
            if part == "**" {
                if segs.last() != Some(&Seg::Any) {
                    segs.push(Seg::Any);
                }
            } else if part.contains("**") {
                return Err(PatternError(format!(
                    "'**' must be a whole segment (\"/a/**\"), not part of one, in {glob:?}"
                )));
            } else {
                segs.push(Seg::Glob(part.to_owned()));
            }
        }
        Ok(Self {
            source: glob.to_owned(),
            segs,
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether a match key (see [`NormalizedPath::match_key`]) matches.
    pub fn matches(&self, match_key: &str) -> bool {
        let path: Vec<&str> = match_key.split('/').filter(|s| !s.is_empty()).collect();
        // Greedy wildcard matching over segments, with backtracking to the last `**`:
        // linear in practice, never recursive.
        let (mut p, mut s) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while s < path.len() {
            match self.segs.get(p) {
                Some(Seg::Any) => {
                    star = Some((p, s));
                    p += 1;
                }
                Some(Seg::Glob(g)) if glob_segment(g, path[s]) => {
                    p += 1;
                    s += 1;
                }
                _ => match star {
                    Some((sp, ss)) => {
                        p = sp + 1;
                        s = ss + 1;
                        star = Some((sp, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        self.segs[p..].iter().all(|seg| *seg == Seg::Any)
    }
}

/// `*` within one segment matches any run of characters.
fn glob_segment(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalisation_table() {
        struct Case {
            raw: &'static str,
            forward: Result<&'static str, PathError>,
            key: &'static str,
        }
        use PathError::*;
        let cases = [
            Case {
                raw: "/",
                forward: Ok("/"),
                key: "/",
            },
            Case {
                raw: "/admin",
                forward: Ok("/admin"),
                key: "/admin",
            },
            Case {
                raw: "/Admin/Users",
                forward: Ok("/Admin/Users"),
                key: "/admin/users",
            },
            Case {
                raw: "/admin/",
                forward: Ok("/admin/"),
                key: "/admin",
            },
            Case {
                raw: "//admin",
                forward: Ok("/admin"),
                key: "/admin",
            },
            Case {
                raw: "/admin//users",
                forward: Ok("/admin/users"),
                key: "/admin/users",
            },
            Case {
                raw: "/./admin",
                forward: Ok("/admin"),
                key: "/admin",
            },
            Case {
                raw: "/x/../admin",
                forward: Ok("/admin"),
                key: "/admin",
            },
            Case {
                raw: "/%61dmin",
                forward: Ok("/admin"),
                key: "/admin",
            },
            Case {
                raw: "/%2e/admin",
                forward: Ok("/admin"),
                key: "/admin",
            },
            Case {
                raw: "/x/%2e%2e/admin",
                forward: Ok("/admin"),
                key: "/admin",
            },
            Case {
                raw: "/x/%2E%2E/admin",
                forward: Ok("/admin"),
                key: "/admin",
            },
            Case {
                raw: "/a/b/..",
                forward: Ok("/a/"),
                key: "/a",
            },
            Case {
                raw: "/a/.",
                forward: Ok("/a/"),
                key: "/a",
            },
            Case {
                raw: "/caf%c3%a9",
                forward: Ok("/caf%C3%A9"),
                key: "/caf%c3%a9",
            },
            Case {
                raw: "/a%20b",
                forward: Ok("/a%20b"),
                key: "/a%20b",
            },
            Case {
                raw: "/%7euser",
                forward: Ok("/~user"),
                key: "/~user",
            },
            Case {
                raw: "/admin%2fusers",
                forward: Err(EncodedSeparator),
                key: "",
            },
            Case {
                raw: "/admin%2Fusers",
                forward: Err(EncodedSeparator),
                key: "",
            },
            Case {
                raw: "/admin%5cusers",
                forward: Err(EncodedSeparator),
                key: "",
            },
            Case {
                raw: "/admin\\users",
                forward: Err(EncodedSeparator),
                key: "",
            },
            Case {
                raw: "/admin;jsessionid=1",
                forward: Err(Parameter),
                key: "",
            },
            Case {
                raw: "/admin%00",
                forward: Err(ControlCharacter),
                key: "",
            },
            Case {
                raw: "/admin%0a",
                forward: Err(ControlCharacter),
                key: "",
            },
            Case {
                raw: "/admin%7F",
                forward: Err(ControlCharacter),
                key: "",
            },
            Case {
                raw: "/..",
                forward: Err(AboveRoot),
                key: "",
            },
            Case {
                raw: "/a/../../admin",
                forward: Err(AboveRoot),
                key: "",
            },
            Case {
                raw: "/%2e%2e/admin",
                forward: Err(AboveRoot),
                key: "",
            },
            Case {
                raw: "/a%zz",
                forward: Err(BadEscape),
                key: "",
            },
            Case {
                raw: "/a%2",
                forward: Err(BadEscape),
                key: "",
            },
            Case {
                raw: "*",
                forward: Err(NotAbsolute),
                key: "",
            },
            Case {
                raw: "admin",
                forward: Err(NotAbsolute),
                key: "",
            },
        ];
        for c in cases {
            let got = normalize(c.raw);
            match (got, c.forward) {
                (Ok(p), Ok(f)) => {
                    assert_eq!(p.as_str(), f, "forward of {:?}", c.raw);
                    assert_eq!(p.match_key(), c.key, "key of {:?}", c.raw);
                }
                (Err(e), Err(want)) => assert_eq!(e, want, "error of {:?}", c.raw),
                (got, want) => panic!("{:?}: got {got:?}, want {want:?}", c.raw),
            }
        }
    }

    #[test]
    fn pattern_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("/admin/**", "/admin", true),
            ("/admin/**", "/admin/users/1", true),
            ("/admin/**", "/administrator", false),
            ("/admin/**", "/", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
            ("/", "/", true),
            ("/", "/a", false),
            ("/api/*/items", "/api/v1/items", true),
            ("/api/*/items", "/api/items", false),
            ("/api/*/items", "/api/v1/v2/items", false),
            ("/files/*.json", "/files/a.json", true),
            ("/files/*.json", "/files/a.txt", false),
            ("/a/**/z", "/a/z", true),
            ("/a/**/z", "/a/b/c/z", true),
            ("/a/**/z", "/a/b/c/y", false),
            ("/Admin/**", "/admin/x", true),
            ("/auth/login", "/auth/login", true),
        ];
        for &(glob, key, want) in cases {
            let p = PathPattern::parse(glob).unwrap();
            assert_eq!(p.matches(key), want, "{glob} vs {key}");
        }
        assert!(PathPattern::parse("admin").is_err());
        assert!(PathPattern::parse("/a**").is_err());
        assert!(PathPattern::parse("/../x").is_err());
    }

    #[test]
    fn every_spelling_of_admin_matches_or_is_refused() {
        let pat = PathPattern::parse("/admin/**").unwrap();
        for raw in [
            "/admin/x",
            "/ADMIN/x",
            "/Admin/x",
            "//admin/x",
            "/./admin/x",
            "/foo/../admin/x",
            "/%61dmin/x",
            "/%41DMIN/x",
            "/%2e/admin/x",
            "/admin/./x",
            "/admin//x",
            "/admin/x/",
            "/x/%2e%2e/admin/x",
        ] {
            let p = normalize(raw).unwrap();
            assert!(pat.matches(p.match_key()), "{raw} dodged the route");
        }
        for raw in [
            "/admin%2fx",
            "/admin;x",
            "/%2e%2e/admin",
            "/admin\\x",
            "/adm%00in",
        ] {
            assert!(normalize(raw).is_err(), "{raw} should be refused");
        }
    }

    proptest! {
        #[test]
        fn normalised_paths_are_fixed_points(raw in "/[a-zA-Z0-9./%~_-]{0,40}") {
            if let Ok(p) = normalize(&raw) {
                let again = normalize(p.as_str()).unwrap();
                prop_assert_eq!(again.as_str(), p.as_str());
                prop_assert_eq!(again.match_key(), p.match_key());
                prop_assert!(!p.as_str().contains("//"));
                prop_assert!(!p.match_key().split('/').any(|s| s == "." || s == ".."));
            }
        }
    }
}
