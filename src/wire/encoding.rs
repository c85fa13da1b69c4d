//! Percent-encoding of keys in request paths, of names in index links, and of
//! query strings.

/// Percent-encode everything but unreserved characters and `/`.
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decode; `None` on a malformed escape.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The `key=value` pairs of a query string, percent-decoded.
pub fn query_params(q: &str) -> Result<Vec<(String, String)>, String> {
    let dec = |s: &str| {
        decode(s)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| format!("bad query {q:?}"))
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((dec(k)?, dec(v)?))
        })
        .collect()
}

/// Percent-encode a name for a relative link (a trailing `/` is kept).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && i == s.len() - 1);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(encode_path("a/b-c_d.e~f"), "a/b-c_d.e~f");
        assert_eq!(encode_path("a?b#c%d+e&f=g"), "a%3Fb%23c%25d%2Be%26f%3Dg");
    }

    #[test]
    fn decoding_and_queries() {
        assert_eq!(decode("a%2Fb%20c").unwrap(), b"a/b c");
        assert_eq!(decode("a%2"), None);
        assert_eq!(decode("%zz"), None);
        assert_eq!(encode_segment("a b/"), "a%20b/");
        assert_eq!(encode_segment("a/b"), "a%2Fb");
        assert_eq!(
            query_params("list&prefix=a%2Fb").unwrap(),
            vec![
                ("list".into(), String::new()),
                ("prefix".into(), "a/b".into())
            ]
        );
    }
}
