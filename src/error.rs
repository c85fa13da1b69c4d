//! The library's error type. Store errors carry whether retrying can help
//! ([`ErrorKind`]); the retry wrapper reads only that.

use std::fmt;

/// Whether an operation that failed may succeed if repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist. Never retried.
    NotFound,
    /// Network trouble, time-outs, 5xx, throttling: retrying may help.
    Temporary,
    /// Bad request, refused credentials, bad key: retrying will not help.
    Permanent,
}

/// An error from a store, with the store's name.
#[derive(Debug, Clone)]
pub struct StoreError {
    pub kind: ErrorKind,
    pub store: String,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: ErrorKind, store: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            store: store.into(),
            message: message.into(),
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
    pub fn is_temporary(&self) -> bool {
        self.kind == ErrorKind::Temporary
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::NotFound => "not found",
            ErrorKind::Temporary => "temporary error",
            ErrorKind::Permanent => "error",
        };
        write!(f, "store {}: {kind}: {}", self.store, self.message)
    }
}

impl std::error::Error for StoreError {}

/// Everything the library can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Corrupt(String),
    /// Not signed by a trusted key (see [`crate::core::sign`]).
    #[error("{0}")]
    Untrusted(String),
    /// A chunk could not be rebuilt: fewer than k good shards were reachable.
    #[error("{0}")]
    Unavailable(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
