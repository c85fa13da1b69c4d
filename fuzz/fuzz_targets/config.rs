//! `Config::parse` on arbitrary UTF-8, and `parse_size` / `parse_duration` on
//! the same text: no panic, errors are one line, and an accepted config holds
//! every invariant `Config::check` promises.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use vmifs::config::Config;
use vmifs::core::units::{parse_duration, parse_size};

/// The digits and unit of a size or duration, as the parsers read them.
fn split(s: &str) -> (&str, &str) {
    let t = s.trim();
    let i = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    t.split_at(i)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(c) => {
            assert!(c.erasure.data >= 1);
            assert!(c.erasure.data + c.erasure.parity <= vmifs::core::erasure::MAX_SHARDS);
            let cs = c.erasure.chunk_size;
            assert!(
                (4096..=64 << 20).contains(&cs) && cs % 4096 == 0,
                "chunk_size {cs}"
            );
            assert!(c.cache.max_size >= 16 << 20);
            let mut names = HashSet::new();
            for s in &c.stores {
                assert!(!s.name.is_empty());
                assert!(
                    s.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                );
                assert!(names.insert(s.name.clone()), "duplicate store {:?}", s.name);
                assert!(s.concurrency >= 1);
                vmifs::config::scheme_of(&s.url).expect("an accepted store URL has a scheme");
            }
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "multi-line error: {e}"),
    }

    // Reference model: digits, then a known unit; never wraps around.
    let (num, unit) = split(text);
    let n: Option<u64> = num.parse().ok();
    let want_size = n.and_then(|n| {
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1024,
            "M" | "MiB" => 1024 * 1024,
            "G" | "GiB" => 1024 * 1024 * 1024,
            "T" | "TiB" => 1024 * 1024 * 1024 * 1024,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return None,
        };
        (u128::from(n) * u128::from(mult)).try_into().ok()
    });
    match parse_size(text) {
        Ok(v) => assert_eq!(Some(v), want_size, "size {text:?}"),
        Err(e) => {
            assert_eq!(want_size, None, "size {text:?} refused: {e}");
            assert!(!e.contains('\n'), "multi-line error: {e}");
        }
    }
    let want_ms: Option<u128> = n.and_then(|n| {
        let n = u128::from(n);
        match unit {
            "ms" => Some(n),
            "" | "s" => Some(n * 1000),
            "m" => Some(n * 60_000),
            "h" => Some(n * 3_600_000),
            _ => None,
        }
    });
    match parse_duration(text) {
        Ok(d) => assert_eq!(Some(d.as_millis()), want_ms, "duration {text:?}"),
        Err(e) => {
            // Refused: malformed, or beyond what a Duration holds.
            if let Some(ms) = want_ms {
                assert!(
                    ms / 1000 > u128::from(u64::MAX),
                    "duration {text:?} refused: {e}"
                );
            }
            assert!(!e.contains('\n'), "multi-line error: {e}");
        }
    }
});
