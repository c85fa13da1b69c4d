//! The `Range` header handling of `vmifs serve` (`vmifs::wire::range::parse_range`):
//! no panic; a selection is never empty and lies within the object
//! (`start < end <= len`); and single ranges agree with a reference model of
//! RFC 9110 byte ranges written here, both on arbitrary header strings and on
//! headers generated from numbers (with leading zeros, blanks, overflow).
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use vmifs::wire::range::{Selection, parse_range};

/// A single byte range, as numbers.
#[derive(Debug, Clone, Copy)]
enum Spec {
    /// `bytes=first-last`
    Closed(u64, u64),
    /// `bytes=first-`
    From(u64),
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

/// The reference model: what a single range selects of `len` bytes.
fn model(spec: Spec, len: u64) -> Selection {
    match spec {
        // An invalid range (last < first) makes the header ignorable.
        Spec::Closed(first, last) if last < first => Selection::Whole,
        Spec::Closed(first, _) | Spec::From(first) if first >= len => Selection::Unsatisfiable,
        Spec::Closed(first, last) => Selection::Part(first, len.min(last.saturating_add(1))),
        Spec::From(first) => Selection::Part(first, len),
        Spec::Suffix(0) => Selection::Unsatisfiable,
        Spec::Suffix(_) if len == 0 => Selection::Unsatisfiable,
        Spec::Suffix(n) => Selection::Part(len - n.min(len), len),
    }
}

/// A strict reading of `bytes=a-b`, `bytes=a-`, `bytes=-n` (digits only, no
/// blanks); `None` for anything else.
fn strict(h: &str) -> Option<Spec> {
    let spec = h.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (digits(a), digits(b)) {
        (true, true) => Some(Spec::Closed(a.parse().ok()?, b.parse().ok()?)),
        (true, false) if b.is_empty() => Some(Spec::From(a.parse().ok()?)),
        (false, true) if a.is_empty() => Some(Spec::Suffix(b.parse().ok()?)),
        _ => None,
    }
}

/// Invariants of any answer.
fn check(h: &str, len: u64, got: &Selection) {
    match *got {
        Selection::Part(start, end) => {
            assert!(start < end && end <= len, "{h:?} of {len}: {got:?}");
            // The server answers `Content-Range: bytes start-(end-1)/len`; asking
            // for exactly that gives the same bytes.
            let again = parse_range(&format!("bytes={start}-{}", end - 1), len);
            assert_eq!(again, Selection::Part(start, end), "{h:?} of {len}");
        }
        Selection::Unsatisfiable => {
            assert!(
                h.trim().starts_with("bytes="),
                "{h:?} of {len}: 416 for a non-byte range"
            )
        }
        Selection::Whole => {}
    }
}

fn number(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => u64::from(u.arbitrary::<u8>()?),
        1 => u64::MAX - u64::from(u.arbitrary::<u8>()?),
        _ => u.arbitrary()?,
    })
}

fn blank(u: &mut Unstructured) -> Result<&'static str> {
    u.choose(&["", "", "", " ", "\t", "  "]).copied()
}

fn render(u: &mut Unstructured, n: u64) -> Result<String> {
    let zeros = "0".repeat(u.int_in_range(0..=2usize)?);
    Ok(format!("{}{zeros}{n}{}", blank(u)?, blank(u)?))
}

/// A header generated from numbers, and what the model says of it.
fn generated(u: &mut Unstructured) -> Result<(String, u64, Selection)> {
    let len = number(u)?;
    let spec = match u.int_in_range(0..=2u8)? {
        0 => Spec::Closed(number(u)?, number(u)?),
        1 => Spec::From(number(u)?),
        _ => Spec::Suffix(number(u)?),
    };
    let mut body = match spec {
        Spec::Closed(a, b) => format!("{}-{}", render(u, a)?, render(u, b)?),
        Spec::From(a) => format!("{}-{}", render(u, a)?, blank(u)?),
        Spec::Suffix(n) => format!("{}-{}", blank(u)?, render(u, n)?),
    };
    let mut want = model(spec, len);
    match u.int_in_range(0..=5u8)? {
        // A second range: multi-range requests are answered whole.
        0 => {
            body.push_str(",0-0");
            want = Selection::Whole;
        }
        // A number past u64: not a usable range.
        1 => {
            body = format!("{}-", "9".repeat(20 + u.int_in_range(0..=5usize)?));
            want = Selection::Whole;
        }
        _ => {}
    }
    let unit = if u.ratio(1, 16)? { "items=" } else { "bytes=" };
    if unit != "bytes=" {
        want = Selection::Whole;
    }
    Ok((format!("{}{unit}{body}{}", blank(u)?, blank(u)?), len, want))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let mut u = Unstructured::new(rest);
        let Ok((h, len, want)) = generated(&mut u) else {
            return;
        };
        let got = parse_range(&h, len);
        check(&h, len, &got);
        assert_eq!(got, want, "{h:?} of {len} bytes");
    } else {
        // Raw header text; the object length from the first 8 bytes.
        if rest.len() < 8 {
            return;
        }
        let (l, h) = rest.split_at(8);
        let len = u64::from_le_bytes(l.try_into().unwrap()) >> (mode >> 1 & 63);
        let Ok(h) = std::str::from_utf8(h) else {
            return;
        };
        let got = parse_range(h, len);
        check(h, len, &got);
        if let Some(spec) = strict(h) {
            assert_eq!(got, model(spec, len), "{h:?} of {len} bytes");
        }
    }
});
