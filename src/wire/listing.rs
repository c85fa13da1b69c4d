//! The answer to a listing, `GET /?list&prefix=P`: a JSON array of entries,
//! sorted by key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch (absent: unknown).
    #[serde(default)]
    pub modified_ms: Option<u64>,
}

impl ListEntry {
    pub fn new(key: String, size: u64, modified: Option<SystemTime>) -> Self {
        let modified_ms = modified
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        ListEntry {
            key,
            size,
            modified_ms,
        }
    }

    pub fn modified(&self) -> Option<SystemTime> {
        self.modified_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }
}

/// The request path of a listing of `prefix`.
pub fn list_path(prefix: &str) -> String {
    format!(
        "/?list&prefix={}",
        crate::wire::encoding::encode_path(prefix)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_old_answers_parse() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let e = ListEntry::new("a/b".into(), 5, Some(t));
        let json = serde_json::to_string(&[&e]).unwrap();
        assert_eq!(
            json,
            r#"[{"key":"a/b","size":5,"modified_ms":1700000000123}]"#
        );
        let back: Vec<ListEntry> = serde_json::from_str(&json).unwrap();
        assert_eq!(back[0].modified(), Some(t));
        let old: Vec<ListEntry> = serde_json::from_str(r#"[{"key":"k","size":1}]"#).unwrap();
        assert_eq!(old[0].modified(), None);
        assert_eq!(list_path("a b/"), "/?list&prefix=a%20b/");
    }
}
