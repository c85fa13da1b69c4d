//! `Manifest::from_bytes` and `TagRecord::from_bytes` on arbitrary bytes: no
//! panic, errors are one line, and whatever parses survives
//! `to_bytes -> from_bytes` unchanged with a stable id.
//!
//! Besides libFuzzer's byte-level mutations, one mutation in four parses the
//! input as JSON and sets one number in it to a boundary value (0, 1, 64, 2^30,
//! 2^64 - 1, ...): the checks of a manifest are mostly about its numbers, and
//! byte edits rarely turn `"parity":2` into a 20-digit number that still parses.
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};
use serde_json::Value;
use vmifs::core::manifest::Manifest;
use vmifs::core::tag::TagRecord;

const BOUNDARIES: [u64; 12] = [
    0,
    1,
    2,
    63,
    64,
    65,
    1 << 30,
    (1 << 30) + 1,
    u32::MAX as u64,
    u64::MAX - 3,
    u64::MAX - 1,
    u64::MAX,
];

/// Visit the `pick`-th number of `v` (counting from 0, depth first), if any.
fn nth_number<'a>(v: &'a mut Value, pick: &mut usize) -> Option<&'a mut Value> {
    if v.is_number() {
        if *pick == 0 {
            return Some(v);
        }
        *pick -= 1;
        return None;
    }
    match v {
        Value::Array(items) => items.iter_mut().find_map(|x| nth_number(x, pick)),
        Value::Object(map) => map.values_mut().find_map(|x| nth_number(x, pick)),
        _ => None,
    }
}

/// Set one number of a JSON input to a boundary value; `None` if the input is
/// not JSON with numbers, or the result does not fit.
fn set_boundary(data: &mut [u8], size: usize, max_size: usize, seed: u32) -> Option<usize> {
    let mut v: Value = serde_json::from_slice(&data[..size]).ok()?;
    let mut pick = (seed / 4) as usize % 16;
    *nth_number(&mut v, &mut pick)? = BOUNDARIES[(seed / 64) as usize % BOUNDARIES.len()].into();
    let out = serde_json::to_vec(&v).ok()?;
    (out.len() <= max_size).then(|| {
        data[..out.len()].copy_from_slice(&out);
        out.len()
    })
}

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    seed.is_multiple_of(4)
        .then(|| set_boundary(data, size, max_size, seed))
        .flatten()
        .unwrap_or_else(|| fuzzer_mutate(data, size, max_size))
});

fuzz_target!(|data: &[u8]| {
    match Manifest::from_bytes(data) {
        Ok(m) => {
            let bytes = m.to_bytes();
            let back = Manifest::from_bytes(&bytes).expect("a manifest's own bytes parse");
            assert_eq!(back, m, "manifest round trip");
            let again = back.to_bytes();
            assert_eq!(again, bytes, "to_bytes is canonical");
            assert_eq!(
                Manifest::id_of(&again),
                Manifest::id_of(&bytes),
                "stable id"
            );
            // What the rest of vmifs relies on once a manifest is accepted.
            assert!(m.chunk_size > 0);
            assert!(m.erasure.data >= 1);
            assert!(m.erasure.data + m.erasure.parity <= vmifs::core::erasure::MAX_SHARDS);
            assert_eq!(m.chunk_count(), m.size.div_ceil(m.chunk_size));
            let mut total = 0u64;
            for i in 0..m.chunk_count() {
                let len = m.chunk_len(i) as u64;
                assert!(len > 0 && len <= m.chunk_size, "chunk {i} length {len}");
                total += len;
            }
            assert_eq!(total, m.size, "chunk lengths add up to the size");
            assert!(m.stored_bytes() <= m.size);
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "multi-line error: {e}"),
    }
    match TagRecord::from_bytes(data) {
        Ok(t) => {
            let bytes = t.to_bytes();
            let back = TagRecord::from_bytes(&bytes).expect("a tag record's own bytes parse");
            assert_eq!(back, t, "tag record round trip");
            assert_eq!(back.to_bytes(), bytes, "to_bytes is canonical");
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "multi-line error: {e}"),
    }
});
