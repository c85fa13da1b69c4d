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
    /// The object is larger than the reader allows for its type (see
    /// [`crate::core::limits`]): the store is hostile or corrupt for this
    /// object. Never retried; the caller reads the object from another store.
    TooLarge,
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
    pub fn is_too_large(&self) -> bool {
        self.kind == ErrorKind::TooLarge
    }
    /// The error for `key` on `store` being larger than `max` bytes.
    pub fn too_large(store: &str, key: &str, max: u64) -> Self {
        StoreError::new(
            ErrorKind::TooLarge,
            store,
            format!(
                "object {key} on store {store} is larger than {max} bytes (hostile or corrupt store)"
            ),
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::NotFound => "not found",
            ErrorKind::Temporary => "temporary error",
            ErrorKind::Permanent => "error",
            // The message names the store and says what is wrong.
            ErrorKind::TooLarge => return f.write_str(&self.message),
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
