//! The token file of `vmifs serve --tokens` (`vmifs::serve::tokens::Tokens::parse`)
//! on arbitrary UTF-8: no panic; an error is one line that names `FILE:LINE`
//! and never quotes the file's text; an accepted file grants each listed token
//! exactly what its line says (`write` over `read`), and nothing to a token it
//! does not list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmifs::serve::tokens::{Access, Tokens};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Tokens::parse(text, "F") {
        Err(e) => {
            assert!(!e.contains('\n'), "two lines: {e:?}");
            assert!(e.starts_with("F:"), "no FILE:LINE: {e:?}");
            for word in text.split_ascii_whitespace().filter(|w| w.len() >= 16) {
                assert!(!e.contains(word), "the error quotes the file: {e:?}");
            }
        }
        Ok(tokens) => {
            let mut listed = 0;
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut w = line.split_ascii_whitespace();
                let want = match w.next() {
                    Some("read") => Access::Read,
                    Some("write") => Access::Write,
                    other => panic!("accepted a line starting {other:?}"),
                };
                let token = w.next().expect("accepted a line without a token");
                assert_eq!(tokens.check(token), Some(want), "{line:?}");
                listed += 1;
            }
            assert_eq!(tokens.len(), listed);
            assert_eq!(tokens.check("not-a-listed-token-\u{0}"), None);
        }
    }
});
