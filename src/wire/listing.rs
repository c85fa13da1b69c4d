//! The answer to a listing, `GET /?list&prefix=P[&after=K][&limit=N]`: one
//! page, `{"entries": [...], "next": K}`, of at most `limit` entries (default
//! [`PAGE`], at most [`MAX_PAGE`]) whose keys start with `P` and sort after
//! `K`, in key order. `next` is set when the page is full: the client asks
//! again with `after=next` until a page comes without it.
//!
//! Servers from before pages answered a bare JSON array of every entry;
//! [`parse_page`] reads that as one last page.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Entries per page when the request names no limit.
pub const PAGE: usize = 1000;
/// Most entries a server puts in one page.
pub const MAX_PAGE: usize = 10_000;
/// Largest page body a client reads: [`MAX_PAGE`] entries with keys of the
/// longest length a key may have, and room to spare.
pub const MAX_PAGE_BYTES: u64 = 16 << 20;

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

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    pub entries: Vec<ListEntry>,
    /// The key to ask the next page after; absent on the last page.
    #[serde(default)]
    pub next: Option<String>,
}

/// Read a listing answer: a page, or the bare array of an older server.
pub fn parse_page(body: &[u8]) -> Result<ListPage, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Answer {
        Page(ListPage),
        All(Vec<ListEntry>),
    }
    Ok(match serde_json::from_slice(body)? {
        Answer::Page(p) => p,
        Answer::All(entries) => ListPage {
            entries,
            next: None,
        },
    })
}

/// The request path of the page of `prefix` after `after`.
pub fn list_path(prefix: &str, after: Option<&str>, limit: usize) -> String {
    use crate::wire::encoding::encode_path;
    let mut p = format!("/?list&prefix={}&limit={limit}", encode_path(prefix));
    if let Some(a) = after {
        p.push_str("&after=");
        p.push_str(&encode_path(a));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip_and_old_answers_parse() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let page = ListPage {
            entries: vec![ListEntry::new("a/b".into(), 5, Some(t))],
            next: Some("a/b".into()),
        };
        let json = serde_json::to_string(&page).unwrap();
        assert_eq!(
            json,
            r#"{"entries":[{"key":"a/b","size":5,"modified_ms":1700000000123}],"next":"a/b"}"#
        );
        let back = parse_page(json.as_bytes()).unwrap();
        assert_eq!(back, page);
        assert_eq!(back.entries[0].modified(), Some(t));
        let old = parse_page(br#"[{"key":"k","size":1}]"#).unwrap();
        assert_eq!((old.entries[0].modified(), old.next), (None, None));
        assert!(parse_page(b"{}").is_err());
        assert_eq!(list_path("a b/", None, 7), "/?list&prefix=a%20b/&limit=7");
        assert_eq!(
            list_path("", Some("x/y"), 1000),
            "/?list&prefix=&limit=1000&after=x/y"
        );
    }
}
