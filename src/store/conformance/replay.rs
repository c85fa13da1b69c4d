//! A model check: any sequence of store operations, replayed against a store
//! and against a plain map, gives the same answers.
//!
//! The fixed checks of the suite pick their cases by hand; this one takes the
//! cases from the caller — a fuzz target feeds it arbitrary sequences, a
//! benchmark a fixed mixed workload. Keys are `conf/ops/<a>/<b>`, two segments
//! from a small alphabet, so that sequences hit the same keys and prefixes
//! often, and no key is a directory of another (which a file system store
//! could not hold).

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;

use super::{ErrorKind, Store, pattern};
use crate::store::clamp_range;

/// Where the replayed keys live.
pub const ROOT: &str = "conf/ops/";

/// The segments keys are made of.
const SEGMENTS: [&str; 4] = ["a", "ab", "b", "c"];

/// One operation on `conf/ops/<SEGMENTS[a]>/<SEGMENTS[b]>`.
#[derive(Clone, Debug)]
pub enum Op {
    /// Put `len` bytes of the pattern `seed`.
    Put {
        key: (u8, u8),
        len: u32,
        seed: u8,
    },
    /// Read the whole object, or a range of it.
    Get {
        key: (u8, u8),
        range: Option<Range<u64>>,
    },
    Head {
        key: (u8, u8),
    },
    Delete {
        key: (u8, u8),
    },
    /// List the keys starting with `conf/ops/` and the first `len` bytes of
    /// the key's name (a prefix may end inside a segment).
    List {
        key: (u8, u8),
        len: u8,
    },
}

/// The key an operation names.
pub fn key_of((a, b): (u8, u8)) -> String {
    let seg = |i: u8| SEGMENTS[usize::from(i) % SEGMENTS.len()];
    format!("{ROOT}{}/{}", seg(a), seg(b))
}

/// Replay `ops` against `store` and a map, asserting after each operation
/// that the store answered as the map says (bytes, sizes, `NotFound`, listed
/// keys). Clears `conf/ops/` before and after. Panics naming the store, the
/// operation's index and what differed.
pub async fn replay(store: &dyn Store, ops: &[Op]) {
    let n = store.name().to_string();
    clear(store).await;
    let mut model: BTreeMap<String, Bytes> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let at = format!("{n}: op {i} {op:?}");
        match op {
            Op::Put { key, len, seed } => {
                let key = key_of(*key);
                let data = pattern(*len as usize, *seed);
                store
                    .put(&key, data.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                model.insert(key, data);
            }
            Op::Get { key, range } => {
                let key = key_of(*key);
                let got = store.get_range(&key, range.clone()).await;
                match model.get(&key) {
                    Some(data) => {
                        let got = got.unwrap_or_else(|e| panic!("{at}: {e}"));
                        let want = clamp_range(range.clone(), data.len() as u64);
                        let want = data.slice(want.start as usize..want.end as usize);
                        assert!(
                            got == want,
                            "{at}: got {} bytes, want {}",
                            got.len(),
                            want.len()
                        );
                    }
                    None => expect_not_found(got.map(|b| b.len()), &at),
                }
            }
            Op::Head { key } => {
                let key = key_of(*key);
                let got = store.head(&key).await;
                match model.get(&key) {
                    Some(data) => {
                        let meta = got.unwrap_or_else(|e| panic!("{at}: {e}"));
                        assert_eq!(
                            (meta.key.as_str(), meta.size),
                            (key.as_str(), data.len() as u64),
                            "{at}"
                        );
                    }
                    None => expect_not_found(got.map(|m| m.size), &at),
                }
            }
            Op::Delete { key } => {
                let key = key_of(*key);
                store
                    .delete(&key)
                    .await
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                model.remove(&key);
            }
            Op::List { key, len } => {
                let full = key_of(*key);
                let name = &full[ROOT.len()..];
                let cut = usize::from(*len).min(name.len());
                let prefix = format!("{ROOT}{}", &name[..cut]);
                let mut got: Vec<(String, u64)> = store
                    .list(&prefix)
                    .await
                    .unwrap_or_else(|e| panic!("{at}: {e}"))
                    .into_iter()
                    .map(|m| (m.key, m.size))
                    .collect();
                got.sort();
                let want: Vec<(String, u64)> = model
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, v)| (k.clone(), v.len() as u64))
                    .collect();
                assert_eq!(got, want, "{at}: list {prefix:?}");
            }
        }
    }
    clear(store).await;
}

fn expect_not_found<T: std::fmt::Debug>(got: Result<T, super::StoreError>, at: &str) {
    match got {
        Ok(v) => panic!("{at}: a missing key answered {v:?}"),
        Err(e) => assert_eq!(e.kind, ErrorKind::NotFound, "{at}: {e}"),
    }
}

async fn clear(store: &dyn Store) {
    let n = store.name();
    for m in store
        .list(ROOT)
        .await
        .unwrap_or_else(|e| panic!("{n}: list {ROOT}: {e}"))
    {
        store
            .delete(&m.key)
            .await
            .unwrap_or_else(|e| panic!("{n}: delete {}: {e}", m.key));
    }
}

/// A fixed mixed workload of `count` operations (puts of 0–64 KiB, reads and
/// ranges, heads, deletes, listings), the same on every call: for benchmarks.
pub fn workload(count: usize) -> Vec<Op> {
    let rnd = crate::core::sample::random(count * 8, 0x0b5);
    rnd.chunks_exact(8)
        .map(|r| {
            let key = (r[1], r[2]);
            let n = u64::from(u16::from_le_bytes([r[3], r[4]]));
            match r[0] % 8 {
                0 | 1 => Op::Put {
                    key,
                    len: u32::from(u16::from_le_bytes([r[3], r[4]])),
                    seed: r[5],
                },
                2 | 3 => Op::Get { key, range: None },
                4 => Op::Get {
                    key,
                    range: Some(n..n + u64::from(r[5]) * 64),
                },
                5 => Op::Head { key },
                6 => Op::Delete { key },
                _ => Op::List { key, len: r[5] % 5 },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn a_memory_store_agrees_with_the_model() {
        replay(&MemoryStore::new("mem"), &workload(2000)).await;
    }

    #[test]
    fn keys_are_two_segments_and_never_a_directory_of_another() {
        let keys: Vec<String> = (0..8)
            .flat_map(|a| (0..8).map(move |b| key_of((a, b))))
            .collect();
        for k in &keys {
            assert_eq!(k[ROOT.len()..].split('/').count(), 2, "{k}");
            assert!(!keys.iter().any(|o| o.starts_with(&format!("{k}/"))), "{k}");
        }
    }

    /// The model check catches a store that answers wrong bytes.
    #[tokio::test]
    #[should_panic(expected = "op 1")]
    async fn a_corrupting_store_is_caught() {
        use crate::store::fault::{FaultMode, Faulty};
        let store = Faulty::new(std::sync::Arc::new(MemoryStore::new("m")));
        let ops = [
            Op::Put {
                key: (0, 0),
                len: 3,
                seed: 1,
            },
            Op::Get {
                key: (0, 0),
                range: None,
            },
        ];
        store.control().set(FaultMode::Corrupt);
        replay(&store, &ops).await;
    }
}
