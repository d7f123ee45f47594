//! Values that must never be printed.

use std::fmt;

/// Holds a secret (a password, a key, a URL with credentials). `Debug` and `Display`
/// print `[redacted]`; the value is reached only through [`Secret::expose`], so every
/// place that uses it is easy to find.
///
/// ```
/// use portcullis_core::Secret;
/// let s = Secret::new(String::from("hunter2"));
/// assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself. Call it only where the value is used, never to log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
