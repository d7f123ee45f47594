//! Usernames, canonicalised once at the edge (RFC 8265 `UsernameCaseMapped`).
//!
//! Two spellings that a person reads as the same name must be the same account, for the
//! users file, for lockout counters and for the `sub` of a token; and a name must not hide
//! characters a person cannot see. [`canonicalize`] turns what a client typed into a
//! [`Username`], the only type lookups and lockout keys accept:
//!
//! 1. **Width mapping**: each character of the Halfwidth and Fullwidth Forms block
//!    (U+FF00–U+FFEF) and the ideographic space U+3000 becomes its compatibility
//!    decomposition (NFKC of that one character): `ａｌｉｃｅ` → `alice`.
//! 2. **Case mapping**: Unicode `toLowerCase` ([`str::to_lowercase`]): `ALICE` → `alice`.
//! 3. **NFC**: `e` + U+0301 → `é` (U+00E9).
//!
//! The result is then refused, with a typed [`UsernameError`], when it is empty, longer than
//! [`MAX_USERNAME_BYTES`], or holds any of:
//!
//! - a control character (general category Cc);
//! - a bidirectional control (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069);
//! - a zero-width, format or default-ignorable character (U+00AD, U+034F, U+115F, U+1160,
//!   U+17B4, U+17B5, U+180B–U+180F, U+200B–U+200D, U+2060–U+2065, U+206A–U+206F, U+3164,
//!   U+FE00–U+FE0F, U+FEFF, U+FFA0, U+FFF0–U+FFFB, the other Cf format characters, tags
//!   and variation selectors in U+E0000–U+E0FFF);
//! - a space (Unicode `White_Space`, which covers every Zs);
//! - a character that still has a compatibility decomposition (NFKC of it differs from
//!   it: ligatures such as `ﬁ`, superscripts such as `²`, the long s `ſ`, `µ`, …);
//! - anything else that is not ASCII printable (U+0021–U+007E) nor a letter, digit or
//!   combining mark of some script (Unicode `Alphabetic`, `Numeric` or general category
//!   M), or that is unassigned or private-use: symbols, emoji, punctuation outside ASCII.
//!
//! # Documented consequences
//!
//! - `toLowerCase` is not case *folding*: `Straße` becomes `straße`, while `STRASSE`
//!   becomes `strasse`; they are two names (RFC 8265 §3.3.2 chose lower-casing for this
//!   reason: folding `ß` to `ss` would merge names a German reader tells apart).
//! - `İ` (U+0130) lower-cases to `i` + U+0307, not to `i`; a final capital sigma lower-cases
//!   to `ς` as Unicode's context rule says. Such names are kept, as written.
//! - Names in different scripts that merely look alike (Latin `a`, Cyrillic `а`) stay
//!   distinct: confusable detection is a registration policy, not canonicalisation.
//!
//! # Security
//!
//! Canonicalise once, at ingress, and key everything (the users file, lockout counters,
//! tokens) by the result; comparing raw strings anywhere reopens the Spotify 2013 account
//! takeover (`ᴮᴵᴳᴮᴵᴿᴰ` reset the password of `bigbird`). The refusals keep invisible and
//! direction-changing characters out of logs and admin screens, where they could make one
//! name look like another.
//!
//! ```
//! use portcullis_core::auth::username::{canonicalize, UsernameError};
//!
//! assert_eq!(canonicalize("Alice").unwrap().as_str(), "alice");
//! assert_eq!(canonicalize("ａｌｉｃｅ").unwrap(), canonicalize("ALICE").unwrap());
//! assert!(matches!(canonicalize("al\u{200B}ice"), Err(UsernameError::Invisible { .. })));
//! ```

use std::fmt;
use std::str::FromStr;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::{is_combining_mark, is_public_assigned};

/// The longest canonical username, in bytes of UTF-8: long enough for any e-mail address
/// (RFC 5321 caps the path at 256 octets), short enough to keep keys and log lines small.
pub const MAX_USERNAME_BYTES: usize = 256;

/// Input longer than this is refused before any mapping, so a huge body costs nothing;
/// width mapping and NFC shrink text by at most a factor of three, so nothing that could
/// canonicalise to [`MAX_USERNAME_BYTES`] is refused by it.
const MAX_RAW_BYTES: usize = 4 * MAX_USERNAME_BYTES;

/// A canonical username: the only form lookups and lockout keys accept.
///
/// Made by [`canonicalize`] (or `str::parse`, which calls it), so holding one proves the
/// name was mapped and checked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Username(String);

impl Username {
    /// The canonical name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical name, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Username {
    type Err = UsernameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        canonicalize(s)
    }
}

/// Why a username was refused. `at` is the character's index (in characters) in the
/// canonical form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Nothing was given.
    #[error("the username is empty")]
    Empty,
    /// Longer than [`MAX_USERNAME_BYTES`] once canonical.
    #[error("the username is {bytes} bytes long; at most {max} are allowed", max = MAX_USERNAME_BYTES)]
    TooLong {
        /// Its length in bytes (of the raw input when that alone was far too long).
        bytes: usize,
    },
    /// A space of any kind.
    #[error("usernames cannot contain spaces (U+{:04X} at position {at})", *ch as u32)]
    Space {
        /// The character.
        ch: char,
        /// Its position.
        at: usize,
    },
    /// A control character.
    #[error("usernames cannot contain control characters (U+{:04X} at position {at})", *ch as u32)]
    Control {
        /// The character.
        ch: char,
        /// Its position.
        at: usize,
    },
    /// A zero-width, format or otherwise invisible character.
    #[error(
        "usernames cannot contain zero-width or invisible characters (U+{:04X} at position {at})",
        *ch as u32
    )]
    Invisible {
        /// The character.
        ch: char,
        /// Its position.
        at: usize,
    },
    /// A bidirectional control.
    #[error(
        "usernames cannot contain bidirectional controls (U+{:04X} at position {at})",
        *ch as u32
    )]
    Bidi {
        /// The character.
        ch: char,
        /// Its position.
        at: usize,
    },
    /// A character with a compatibility decomposition (a ligature, a superscript, …).
    #[error(
        "usernames cannot contain compatibility characters such as ligatures or superscripts \
         (U+{:04X} at position {at}; write {plain:?} instead)",
        *ch as u32
    )]
    Compatibility {
        /// The character.
        ch: char,
        /// Its position.
        at: usize,
        /// What it stands for (its NFKC form).
        plain: String,
    },
    /// A symbol, emoji, non-ASCII punctuation, unassigned or private-use character.
    #[error(
        "usernames can hold only letters, digits, combining marks and ASCII punctuation \
         (U+{:04X} at position {at} is none of these)",
        *ch as u32
    )]
    Disallowed {
        /// The character.
        ch: char,
        /// Its position.
        at: usize,
    },
}

/// Canonicalises `raw` (width mapping, `toLowerCase`, NFC) and checks the result; see the
/// module documentation for the exact rules.
pub fn canonicalize(raw: &str) -> Result<Username, UsernameError> {
    if raw.is_empty() {
        return Err(UsernameError::Empty);
    }
    if raw.len() > MAX_RAW_BYTES {
        return Err(UsernameError::TooLong { bytes: raw.len() });
    }
    let mut mapped = String::with_capacity(raw.len());
    for c in raw.chars() {
        if is_width_mapped(c) {
            mapped.extend(std::iter::once(c).nfkc());
        } else {
            mapped.push(c);
        }
    }
    let canonical: String = mapped.to_lowercase().nfc().collect();
    for (at, ch) in canonical.chars().enumerate() {
        check_char(ch, at)?;
    }
    if canonical.len() > MAX_USERNAME_BYTES {
        return Err(UsernameError::TooLong {
            bytes: canonical.len(),
        });
    }
    Ok(Username(canonical))
}

fn is_width_mapped(c: char) -> bool {
    matches!(c, '\u{FF00}'..='\u{FFEF}' | '\u{3000}')
}

fn check_char(ch: char, at: usize) -> Result<(), UsernameError> {
    if ch.is_ascii_graphic() {
        return Ok(());
    }
    if ch.is_control() {
        return Err(UsernameError::Control { ch, at });
    }
    if is_bidi_control(ch) {
        return Err(UsernameError::Bidi { ch, at });
    }
    if is_invisible(ch) {
        return Err(UsernameError::Invisible { ch, at });
    }
    if ch.is_whitespace() {
        return Err(UsernameError::Space { ch, at });
    }
    let plain: String = std::iter::once(ch).nfkc().collect();
    if plain.chars().ne(std::iter::once(ch)) {
        return Err(UsernameError::Compatibility { ch, at, plain });
    }
    let word = ch.is_alphabetic() || ch.is_numeric() || is_combining_mark(ch);
    if !word || !is_public_assigned(ch) {
        return Err(UsernameError::Disallowed { ch, at });
    }
    Ok(())
}

/// Characters that change the direction of the text around them.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Zero-width, format (Cf) and default-ignorable characters: a reader cannot see them, so
/// two names differing only by one look the same. Some are letters or marks by category
/// (the Hangul fillers, variation selectors, the combining grapheme joiner) and would
/// otherwise pass.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{0600}'..='\u{0605}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'..='\u{2065}'
            | '\u{206A}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(raw: &str) -> String {
        canonicalize(raw)
            .unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
            .into_string()
    }

    #[test]
    fn look_alikes_canonicalise_to_one_name() {
        let cases: &[(&str, &str, &str)] = &[
            ("ascii lower", "alice", "alice"),
            ("capitalised", "Alice", "alice"),
            ("upper", "ALICE", "alice"),
            ("fullwidth", "ａｌｉｃｅ", "alice"),
            ("fullwidth upper", "ＡＬＩＣＥ", "alice"),
            ("fullwidth digits", "ｕｓｅｒ１２", "user12"),
            ("fullwidth punctuation", "ａ＠ｂ．ｃ", "a@b.c"),
            ("halfwidth katakana", "ｱﾘｽ", "アリス"),
            ("decomposed e acute", "jose\u{301}", "jos\u{E9}"),
            ("composed e acute", "jos\u{E9}", "jos\u{E9}"),
            ("decomposed upper E acute", "JOSE\u{301}", "jos\u{E9}"),
            (
                "angstrom sign is canonical A ring",
                "\u{212B}ngstr\u{F6}m",
                "\u{E5}ngstr\u{F6}m",
            ),
            ("kelvin sign lower-cases to k", "\u{212A}elvin", "kelvin"),
            ("straße keeps its sharp s", "Straße", "straße"),
            ("STRASSE is another name", "STRASSE", "strasse"),
            (
                "capital sharp s lower-cases to ß",
                "STRA\u{1E9E}E",
                "straße",
            ),
            ("greek", "ΑΛΙΚΗ", "αλικη"),
            ("cyrillic", "Алиса", "алиса"),
            ("cjk", "爱丽丝", "爱丽丝"),
            ("devanagari with marks", "अलीस", "अलीस"),
            (
                "email address",
                "Alice.Smith+tag@Example.COM",
                "alice.smith+tag@example.com",
            ),
            (
                "ascii punctuation",
                "a!#$%&'*-/=?^_`{|}~b",
                "a!#$%&'*-/=?^_`{|}~b",
            ),
            ("dotted capital I", "\u{130}", "i\u{307}"),
        ];
        for (name, raw, want) in cases {
            assert_eq!(ok(raw), *want, "{name}");
        }
    }

    #[test]
    fn refusals_are_typed() {
        use UsernameError as E;
        type Check = fn(&UsernameError) -> bool;
        let cases: &[(&str, &str, Check)] = &[
            ("empty", "", |e| matches!(e, E::Empty)),
            ("zero-width space", "al\u{200B}ice", |e| {
                matches!(
                    e,
                    E::Invisible {
                        ch: '\u{200B}',
                        at: 2
                    }
                )
            }),
            ("zero-width joiner", "ali\u{200D}ce", |e| {
                matches!(e, E::Invisible { .. })
            }),
            ("word joiner", "alice\u{2060}", |e| {
                matches!(e, E::Invisible { .. })
            }),
            ("byte order mark", "\u{FEFF}alice", |e| {
                matches!(e, E::Invisible { .. })
            }),
            ("soft hyphen", "al\u{AD}ice", |e| {
                matches!(e, E::Invisible { .. })
            }),
            ("combining grapheme joiner", "ali\u{34F}ce", |e| {
                matches!(e, E::Invisible { .. })
            }),
            ("mongolian vowel separator", "ali\u{180E}ce", |e| {
                matches!(e, E::Invisible { .. })
            }),
            ("variation selector", "alice\u{FE0F}", |e| {
                matches!(e, E::Invisible { .. })
            }),
            ("hangul filler", "\u{3164}", |e| {
                matches!(e, E::Invisible { .. })
            }),
            ("halfwidth hangul filler", "\u{FFA0}", |e| {
                matches!(e, E::Invisible { .. })
            }),
            ("tag character", "alice\u{E0041}", |e| {
                matches!(e, E::Invisible { .. })
            }),
            ("ascii space", "ali ce", |e| {
                matches!(e, E::Space { ch: ' ', at: 3 })
            }),
            ("ideographic space", "ali\u{3000}ce", |e| {
                matches!(e, E::Space { ch: ' ', .. })
            }),
            ("no-break space", "ali\u{A0}ce", |e| {
                matches!(e, E::Space { .. })
            }),
            ("em space", "ali\u{2003}ce", |e| {
                matches!(e, E::Space { .. })
            }),
            ("line separator", "ali\u{2028}ce", |e| {
                matches!(e, E::Space { .. })
            }),
            ("tab", "ali\tce", |e| {
                matches!(e, E::Control { ch: '\t', .. })
            }),
            ("newline", "alice\n", |e| matches!(e, E::Control { .. })),
            ("nul", "al\0ice", |e| matches!(e, E::Control { .. })),
            ("delete", "alice\u{7F}", |e| matches!(e, E::Control { .. })),
            ("c1 control", "alice\u{85}", |e| {
                matches!(e, E::Control { .. })
            }),
            ("right-to-left override", "alice\u{202E}", |e| {
                matches!(
                    e,
                    E::Bidi {
                        ch: '\u{202E}',
                        at: 5
                    }
                )
            }),
            ("left-to-right mark", "\u{200E}alice", |e| {
                matches!(e, E::Bidi { .. })
            }),
            ("right-to-left isolate", "alice\u{2067}", |e| {
                matches!(e, E::Bidi { .. })
            }),
            ("arabic letter mark", "alice\u{61C}", |e| {
                matches!(e, E::Bidi { .. })
            }),
            (
                "ligature fi",
                "\u{FB01}nn",
                |e| matches!(e, E::Compatibility { ch: '\u{FB01}', plain, .. } if plain == "fi"),
            ),
            ("superscript two", "alice\u{B2}", |e| {
                matches!(e, E::Compatibility { .. })
            }),
            (
                "modifier capital letters",
                "\u{1D2E}\u{1D35}\u{1D33}",
                |e| matches!(e, E::Compatibility { .. }),
            ),
            ("long s", "\u{17F}am", |e| {
                matches!(e, E::Compatibility { .. })
            }),
            ("micro sign", "\u{B5}", |e| {
                matches!(e, E::Compatibility { .. })
            }),
            ("circled digit", "\u{2460}", |e| {
                matches!(e, E::Compatibility { .. })
            }),
            ("roman numeral", "\u{216B}", |e| {
                matches!(e, E::Compatibility { .. })
            }),
            ("mathematical bold", "\u{1D41A}lice", |e| {
                matches!(e, E::Compatibility { .. })
            }),
            ("emoji", "alice\u{1F600}", |e| {
                matches!(e, E::Disallowed { .. })
            }),
            ("symbol", "alice\u{2665}", |e| {
                matches!(e, E::Disallowed { .. })
            }),
            ("non-ascii punctuation", "ali\u{2010}ce", |e| {
                matches!(e, E::Disallowed { .. })
            }),
            ("private use", "alice\u{E000}", |e| {
                matches!(e, E::Disallowed { .. })
            }),
            ("unassigned", "alice\u{378}", |e| {
                matches!(e, E::Disallowed { .. })
            }),
        ];
        for (name, raw, check) in cases {
            match canonicalize(raw) {
                Ok(u) => panic!("{name}: {raw:?} accepted as {u:?}"),
                Err(e) => {
                    assert!(check(&e), "{name}: unexpected error {e:?}");
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }

    #[test]
    fn length_is_measured_after_canonicalisation() {
        let at_limit = "a".repeat(MAX_USERNAME_BYTES);
        assert_eq!(ok(&at_limit).len(), MAX_USERNAME_BYTES);
        assert_eq!(
            canonicalize(&"a".repeat(MAX_USERNAME_BYTES + 1)),
            Err(UsernameError::TooLong {
                bytes: MAX_USERNAME_BYTES + 1
            })
        );
        // 256 fullwidth letters are 768 bytes typed and 256 canonical: accepted.
        let wide = "ａ".repeat(MAX_USERNAME_BYTES);
        assert_eq!(wide.len(), 3 * MAX_USERNAME_BYTES);
        assert_eq!(ok(&wide), at_limit);
        // Far too long input is refused before any work.
        assert!(matches!(
            canonicalize(&"a".repeat(100_000)),
            Err(UsernameError::TooLong { bytes: 100_000 })
        ));
    }

    #[test]
    fn messages_name_the_character() {
        let e = canonicalize("alice\u{202E}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "usernames cannot contain bidirectional controls (U+202E at position 5)"
        );
        let e = canonicalize("ali ce").unwrap_err();
        assert_eq!(
            e.to_string(),
            "usernames cannot contain spaces (U+0020 at position 3)"
        );
    }

    #[test]
    fn parse_and_display_round_trip() {
        let u: Username = "ＢＯＢ".parse().unwrap();
        assert_eq!(u.to_string(), "bob");
        assert_eq!(u.as_ref(), "bob");
        assert_eq!(canonicalize(u.as_str()).unwrap(), u);
    }

    proptest! {
        /// Canonicalising a canonical name changes nothing, and it is NFC, lower-case,
        /// short enough and free of refused characters.
        #[test]
        fn canonical_names_are_fixed_points(raw in "\\PC{0,40}") {
            if let Ok(u) = canonicalize(&raw) {
                let again = canonicalize(u.as_str());
                prop_assert_eq!(again.as_ref(), Ok(&u));
                prop_assert!(unicode_normalization::is_nfc(u.as_str()));
                prop_assert_eq!(u.as_str().to_lowercase(), u.as_str());
                prop_assert!(!u.as_str().is_empty() && u.as_str().len() <= MAX_USERNAME_BYTES);
                prop_assert!(!u.as_str().chars().any(|c| c.is_whitespace() || c.is_control()
                    || is_bidi_control(c) || is_invisible(c)));
            }
        }

        /// ASCII names differ only by case and width: one account.
        #[test]
        fn ascii_case_and_width_do_not_matter(raw in "[!-~]{1,40}") {
            let upper = raw.to_ascii_uppercase();
            let wide: String = raw.chars().map(|c| char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap()).collect();
            let want = canonicalize(&raw).unwrap();
            prop_assert_eq!(canonicalize(&upper).unwrap(), want.clone());
            prop_assert_eq!(canonicalize(&wide).unwrap(), want);
        }

        /// Inserting an invisible or bidi character anywhere is refused.
        #[test]
        fn hidden_characters_are_always_refused(
            raw in "[a-z0-9]{1,20}",
            at in 0usize..21,
            hidden in proptest::sample::select(vec![
                '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{2064}', '\u{FEFF}',
                '\u{AD}', '\u{34F}', '\u{180E}', '\u{61C}', '\u{200E}', '\u{200F}',
                '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}',
            ]),
        ) {
            let mut s: Vec<char> = raw.chars().collect();
            let at = at.min(s.len());
            s.insert(at, hidden);
            let s: String = s.into_iter().collect();
            prop_assert!(canonicalize(&s).is_err(), "{:?} accepted", s);
        }
    }
}
