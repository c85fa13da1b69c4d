//! Credentials: a [`Secret`] never shows in `Debug` or messages, and
//! [`redact_url`] hides the password of a URL before it is printed.

use serde::Deserialize;

/// A credential from the config: never shown by `Debug` or in messages.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `scheme://user:password@host…` with the password replaced by `***`, for
/// messages. Other strings come back unchanged.
pub fn redact_url(s: &str) -> String {
    let Some(start) = s.find("://").map(|i| i + 3) else {
        return s.to_string();
    };
    let authority_end = s[start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| start + i);
    match s[start..authority_end].rfind('@') {
        Some(at) => match s[start..start + at].find(':') {
            Some(colon) => format!("{}***{}", &s[..start + colon + 1], &s[start + at..]),
            None => s.to_string(),
        },
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        for (url, shown) in [
            ("http://u:pw@h:1/p", "http://u:***@h:1/p"),
            ("https://u:p@w@h/x?y#z", "https://u:***@h/x?y#z"),
            (
                "URL \"http://a:b@h\" has no host",
                "URL \"http://a:***@h\" has no host",
            ),
            ("http://u@h/p", "http://u@h/p"),
            ("http://h/p@q", "http://h/p@q"),
            ("s3://bucket/prefix", "s3://bucket/prefix"),
            ("no url", "no url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        assert_eq!(format!("{:?}", Secret("pw".into())), "Secret(***)");
    }
}
