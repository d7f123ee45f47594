//! Response bodies that a protection can build its refusals in.

use bytes::Bytes;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full};

use crate::BoxError;

/// A response body type that can hold a refusal's bytes.
///
/// Layers are generic over the inner service's response body; when they refuse, they
/// build the refusal in that same type through this trait. It is implemented for the
/// common body types; implement it for your own.
pub trait RejectionBody: http_body::Body + Sized {
    /// A body holding exactly `bytes`.
    fn from_bytes(bytes: Bytes) -> Self;
}

impl RejectionBody for Full<Bytes> {
    fn from_bytes(bytes: Bytes) -> Self {
        Full::new(bytes)
    }
}

impl RejectionBody for UnsyncBoxBody<Bytes, BoxError> {
    fn from_bytes(bytes: Bytes) -> Self {
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    }
}

impl RejectionBody for BoxBody<Bytes, BoxError> {
    fn from_bytes(bytes: Bytes) -> Self {
        Full::new(bytes).map_err(|never| match never {}).boxed()
    }
}
