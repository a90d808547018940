//! Constructors for the contract's typed errors, so plugin code reads
//! `Error::not_found(..)` instead of spelling out WIT variants.

use crate::bindings::sluice::storage::storage_types::{Error, Throttle};

impl Error {
    /// The object does not exist.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
    /// A put's precondition did not hold.
    pub fn precondition_failed(msg: impl Into<String>) -> Self {
        Error::PreconditionFailed(msg.into())
    }
    /// Credentials or permissions were refused.
    pub fn access_denied(msg: impl Into<String>) -> Self {
        Error::AccessDenied(msg.into())
    }
    /// The URL or a setting is wrong; say what is expected.
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Error::InvalidConfig(msg.into())
    }
    /// The operation or option is not supported.
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Error::Unsupported(msg.into())
    }
    /// A passing fault; a retry may succeed.
    pub fn transient(msg: impl Into<String>) -> Self {
        Error::Transient(msg.into())
    }
    /// The store asked to slow down.
    pub fn throttled(msg: impl Into<String>, retry_after_ms: Option<u64>) -> Self {
        Error::Throttled(Throttle { message: msg.into(), retry_after_ms })
    }
    /// Will fail the same way again.
    pub fn permanent(msg: impl Into<String>) -> Self {
        Error::Permanent(msg.into())
    }

    /// Whether retrying the same call can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Transient(_) | Error::Throttled(_))
    }

    /// The human-readable message, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::NotFound(m)
            | Error::PreconditionFailed(m)
            | Error::AccessDenied(m)
            | Error::InvalidConfig(m)
            | Error::Unsupported(m)
            | Error::Transient(m)
            | Error::Permanent(m) => m,
            Error::Throttled(t) => &t.message,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let msg = e.to_string();
        match e.kind() {
            K::NotFound => Error::NotFound(msg),
            K::PermissionDenied => Error::AccessDenied(msg),
            K::AlreadyExists => Error::PreconditionFailed(msg),
            K::Interrupted | K::TimedOut | K::WouldBlock => Error::Transient(msg),
            K::InvalidInput | K::InvalidFilename => Error::InvalidConfig(msg),
            K::Unsupported => Error::Unsupported(msg),
            _ => Error::Permanent(msg),
        }
    }
}
