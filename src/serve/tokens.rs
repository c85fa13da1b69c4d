//! The token file of `vmifs serve --tokens FILE`: who may read and who may
//! write.
//!
//! One token a line, `read TOKEN` or `write TOKEN` (`write` implies read);
//! blank lines and lines starting with `#` are ignored. A token is 16 to 512
//! visible ASCII characters (no spaces), so a short guessable word cannot
//! slip in by mistake; `openssl rand -hex 32` makes a good one. Any other line
//! is an error naming `FILE:LINE` (never the line itself: it may hold a
//! secret), and the server does not start.
//!
//! Only the blake3 hash of each token is kept. A presented token is hashed
//! and compared with every known hash, each comparison in constant time
//! (`blake3::Hash`'s `==`) and without stopping at the first match, so the
//! time taken says nothing about which bytes or which entry matched.

use std::path::Path;

use crate::Error;

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// `GET` and `HEAD`.
    Read,
    /// Everything: `GET`, `HEAD`, `PUT`, `DELETE`.
    Write,
}

/// Shortest accepted token.
pub const MIN_TOKEN: usize = 16;
/// Longest accepted token.
pub const MAX_TOKEN: usize = 512;

/// The hashed tokens of a token file.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(blake3::Hash, Access)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} entries)", self.entries.len())
    }
}

impl Tokens {
    /// Parse the text of a token file; `file` names it in errors
    /// (`FILE:LINE: …`).
    pub fn parse(text: &str, file: &str) -> Result<Tokens, String> {
        let mut entries: Vec<(blake3::Hash, Access)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let at = || format!("{file}:{}", i + 1);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_ascii_whitespace();
            let access = match words.next() {
                Some("read") => Access::Read,
                Some("write") => Access::Write,
                _ => {
                    return Err(format!("{}: expected `read TOKEN` or `write TOKEN`", at()));
                }
            };
            let (Some(token), None) = (words.next(), words.next()) else {
                return Err(format!(
                    "{}: expected `read TOKEN` or `write TOKEN` (one token, no spaces)",
                    at()
                ));
            };
            if !(MIN_TOKEN..=MAX_TOKEN).contains(&token.len())
                || !token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "{}: a token must be {MIN_TOKEN} to {MAX_TOKEN} visible ASCII characters",
                    at()
                ));
            }
            let hash = blake3::hash(token.as_bytes());
            if entries.iter().any(|(h, _)| *h == hash) {
                return Err(format!("{}: this token appears twice", at()));
            }
            entries.push((hash, access));
        }
        Ok(Tokens { entries })
    }

    /// Read and parse a token file.
    pub fn load(path: &Path) -> Result<Tokens, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read token file {}", path.display()), e))?;
        Tokens::parse(&text, &path.display().to_string()).map_err(Error::Config)
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What `presented` allows, or `None` for an unknown token. Every entry
    /// is compared, in constant time each.
    pub fn check(&self, presented: &str) -> Option<Access> {
        let hash = blake3::hash(presented.as_bytes());
        let mut found = None;
        for (h, access) in &self.entries {
            // `blake3::Hash` compares in constant time.
            if *h == hash {
                found = Some(*access);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "reader-token-0123456789";
    const W: &str = "writer-token-0123456789";

    #[test]
    fn read_and_write_tokens() {
        let t = Tokens::parse(
            &format!("# who may do what\n\nread {R}\n  write\t{W}  \n"),
            "t",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.check(R), Some(Access::Read));
        assert_eq!(t.check(W), Some(Access::Write));
        assert_eq!(t.check("writer-token-012345678"), None);
        assert_eq!(t.check(""), None);
        assert!(Access::Write > Access::Read);
        assert!(!format!("{t:?}").contains("token-0"));
        assert!(Tokens::parse("", "t").unwrap().is_empty());
    }

    #[test]
    fn bad_lines_name_file_and_line_but_not_the_token() {
        let cases = [
            (format!("admin {W}"), "f:1: expected"),
            (format!("\n# c\nread {R} extra"), "f:3: expected"),
            ("write".to_string(), "f:1: expected"),
            ("read short".to_string(), "f:1: a token must be"),
            (format!("read {}", "x".repeat(513)), "f:1: a token must be"),
            (format!("read {R}é"), "f:1: a token must be"),
            (
                format!("read {R}\nwrite {R}"),
                "f:2: this token appears twice",
            ),
            (format!("Read {R}"), "f:1: expected"),
        ];
        for (text, want) in cases {
            let e = Tokens::parse(&text, "f").unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
            assert!(!e.contains("token-0"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
