//! The store conformance suite's model check
//! (`vmifs::store::conformance::replay`) on arbitrary sequences of puts, reads,
//! ranges, heads, deletes and listings: the memory store, the file store and
//! the standard wrapper stack over a memory store must each answer exactly as
//! a plain map does.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use vmifs::store::conformance::replay::{Op, replay};
use vmifs::store::file::FileStore;
use vmifs::store::memory::MemoryStore;
use vmifs::store::{DynStore, StoreOptions, layer};

struct Stores {
    rt: tokio::runtime::Runtime,
    all: Vec<DynStore>,
}

fn stores() -> &'static Stores {
    static STORES: OnceLock<Stores> = OnceLock::new();
    STORES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vmifs-fuzz-store-{}", std::process::id()));
        let file = FileStore::open("file", dir, false).expect("file store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let mem: DynStore = Arc::new(MemoryStore::new("layered"));
        let layered = rt.block_on(async { layer(mem, &StoreOptions::default()) });
        Stores {
            rt,
            all: vec![
                Arc::new(MemoryStore::new("memory")),
                Arc::new(Arc::new(file)),
                layered,
            ],
        }
    })
}

fn op(u: &mut Unstructured) -> Result<Op> {
    let key = (u.arbitrary()?, u.arbitrary()?);
    Ok(match u.int_in_range(0..=4u8)? {
        0 => Op::Put {
            key,
            len: u.int_in_range(0..=4096)?,
            seed: u.arbitrary()?,
        },
        1 => Op::Get {
            key,
            range: if u.arbitrary()? {
                Some(u.arbitrary::<u16>()?.into()..u.arbitrary::<u16>()?.into())
            } else {
                None
            },
        },
        2 => Op::Head { key },
        3 => Op::Delete { key },
        _ => Op::List {
            key,
            len: u.int_in_range(0..=5)?,
        },
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < 64 {
        match op(&mut u) {
            Ok(o) => ops.push(o),
            Err(_) => break,
        }
    }
    let s = stores();
    for store in &s.all {
        s.rt.block_on(replay(store.as_ref(), &ops));
    }
});
