//! Byte ranges: the `Range` header a client sends, what it selects on the
//! server, and the `Content-Range` of the answer.

use std::ops::Range;

/// The `Range` header for `r` (`r.end == u64::MAX`: to the end). `r` is not empty.
pub fn range_header(r: &Range<u64>) -> String {
    if r.end == u64::MAX {
        format!("bytes={}-", r.start)
    } else {
        format!("bytes={}-{}", r.start, r.end - 1)
    }
}

/// What a `Range` header selects of an object of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    /// No usable range: the whole object, `200`.
    Whole,
    /// Bytes `start..end`, `206`.
    Part(u64, u64),
    /// `416`.
    Unsatisfiable,
}

/// What the `Range` header `h` selects of an object of `len` bytes (the rules
/// are in the protocol table of [`crate::wire`]).
pub fn parse_range(h: &str, len: u64) -> Selection {
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Selection::Whole;
    };
    if spec.contains(',') {
        return Selection::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Selection::Whole;
    };
    if a.trim().is_empty() {
        let Some(n) = num(b) else {
            return Selection::Whole;
        };
        if n == 0 || len == 0 {
            return Selection::Unsatisfiable;
        }
        return Selection::Part(len - n.min(len), len);
    }
    let Some(a) = num(a) else {
        return Selection::Whole;
    };
    let end = if b.trim().is_empty() {
        len
    } else {
        let Some(b) = num(b) else {
            return Selection::Whole;
        };
        if b < a {
            return Selection::Whole;
        }
        b.saturating_add(1).min(len)
    };
    if a >= len {
        Selection::Unsatisfiable
    } else {
        Selection::Part(a, end)
    }
}

/// The `Content-Range` of a `206` answer with bytes `start..end` of `len`.
pub fn content_range(start: u64, end: u64, len: u64) -> String {
    format!("bytes {start}-{}/{len}", end - 1)
}

/// The `Content-Range` of a `416` answer for an object of `len` bytes.
pub fn unsatisfiable(len: u64) -> String {
    format!("bytes */{len}")
}

/// `Content-Range: bytes a-b/len` → `(a, b)`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (span, _) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Selection::*;
        assert_eq!(parse_range("bytes=2-5", 10), Part(2, 6));
        assert_eq!(parse_range("bytes=2-50", 10), Part(2, 10));
        assert_eq!(parse_range("bytes=7-", 10), Part(7, 10));
        assert_eq!(parse_range("bytes=-3", 10), Part(7, 10));
        assert_eq!(parse_range("bytes=-30", 10), Part(0, 10));
        assert_eq!(parse_range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 10), Whole);
        assert_eq!(parse_range("bytes=1-2,4-5", 10), Whole);
        assert_eq!(parse_range("items=1-2", 10), Whole);
        assert_eq!(parse_range("bytes=+1-2", 10), Whole);
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 2-5/10"), Some((2, 5)));
        assert_eq!(parse_content_range("bytes */10"), None);
    }

    #[test]
    fn headers() {
        assert_eq!(range_header(&(2..6)), "bytes=2-5");
        assert_eq!(range_header(&(7..u64::MAX)), "bytes=7-");
        assert_eq!(content_range(2, 6, 10), "bytes 2-5/10");
        assert_eq!(parse_content_range(&content_range(2, 6, 10)), Some((2, 5)));
        assert_eq!(unsatisfiable(10), "bytes */10");
    }
}
