//! The identifier parsers of `src/id.rs` (`Name`, `Tag`, `ImageRef`, and the hex
//! of `ChunkId` / `ImageId`) on arbitrary UTF-8: no panic, errors are one line,
//! an accepted name is one safe path component, `Display` round-trips, and the
//! serde form (used in manifests) accepts exactly what `FromStr` accepts.
#![no_main]

use std::fmt::Display;
use std::path::{Component, Path};
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use vmifs::core::id::{ChunkId, ImageId, ImageRef, Name, Tag};

/// An accepted name or tag: usable as one directory entry and object-key segment.
fn check_component(s: &str) {
    assert!(!s.is_empty(), "empty");
    assert!(s.len() <= 128, "{s:?} too long");
    assert!(s != "." && s != "..", "{s:?}");
    assert!(
        !s.contains('/') && !s.contains('\0') && !s.contains(':'),
        "{s:?}"
    );
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "{s:?}"
    );
    let parts: Vec<_> = Path::new(s).components().collect();
    assert!(
        matches!(parts.as_slice(), [Component::Normal(c)] if c.to_str() == Some(s)),
        "{s:?} is not one plain path component"
    );
}

/// Parse `s` as `T`; when accepted, `Display` gives `s` back, and the JSON
/// string form deserialises to the same value. Returns whether it was accepted.
fn round_trip<T>(s: &str) -> Option<T>
where
    T: FromStr<Err = vmifs::Error> + Display + PartialEq + std::fmt::Debug,
    T: serde::de::DeserializeOwned,
{
    let json = serde_json::to_string(s).unwrap();
    let via_serde = serde_json::from_str::<T>(&json);
    match s.parse::<T>() {
        Ok(v) => {
            assert_eq!(v.to_string(), s, "Display round trip");
            assert_eq!(v.to_string().parse::<T>().unwrap(), v);
            assert_eq!(via_serde.expect("serde accepts what FromStr accepts"), v);
            Some(v)
        }
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
            assert!(via_serde.is_err(), "serde accepts {s:?}, FromStr does not");
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(n) = round_trip::<Name>(s) {
        check_component(n.as_str());
    }
    if let Some(t) = round_trip::<Tag>(s) {
        check_component(t.as_str());
    }
    for id in [
        round_trip::<ChunkId>(s).map(|c| c.0),
        round_trip::<ImageId>(s).map(|i| i.0),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(s.len(), 64);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(id.to_hex(), s);
    }
    match s.parse::<ImageRef>() {
        Ok(r) => {
            check_component(r.name.as_str());
            check_component(r.tag.as_str());
            let shown = r.to_string();
            assert_eq!(shown.parse::<ImageRef>().unwrap(), r, "ImageRef round trip");
            // `NAME:TAG` is shown as typed; a bare `NAME` gains `:latest`.
            if s.contains(':') {
                assert_eq!(shown, s);
            } else {
                assert_eq!(shown, format!("{s}:latest"));
            }
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "multi-line error: {e}"),
    }
});
