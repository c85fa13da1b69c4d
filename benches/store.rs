//! Store operations through the conformance suite: the whole suite, and its
//! model check over a fixed mixed workload of 1,000 operations (puts of 0–64
//! KiB, reads, ranges, heads, deletes, listings), on the memory store, the
//! file store and the standard wrapper stack. The file store's numbers are
//! the local file system's cost per operation; the stack's, against the bare
//! memory store, are what retry, time-out and the priority slots add.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmifs::store::conformance::{self, replay};
use vmifs::store::file::FileStore;
use vmifs::store::memory::MemoryStore;
use vmifs::store::{DynStore, StoreOptions, layer};

fn stores(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Vec<DynStore> {
    let file = FileStore::open("file", dir, false).expect("file store");
    let stacked: DynStore = Arc::new(MemoryStore::new("layered"));
    let stacked = rt.block_on(async { layer(stacked, &StoreOptions::default()) });
    vec![
        Arc::new(MemoryStore::new("memory")),
        Arc::new(Arc::new(file)),
        stacked,
    ]
}

fn suite(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let all = stores(&rt, dir.path());
    let ops = replay::workload(1000);

    let mut g = c.benchmark_group("store");
    g.sample_size(10);
    for s in &all {
        g.bench_function(format!("conformance suite, {}", s.name()), |b| {
            b.iter(|| rt.block_on(conformance::run(s.as_ref())))
        });
    }
    g.throughput(Throughput::Elements(ops.len() as u64));
    for s in &all {
        g.bench_function(format!("1000 mixed ops, {}", s.name()), |b| {
            b.iter(|| rt.block_on(replay::replay(s.as_ref(), &ops)))
        });
    }
    g.finish();
}

criterion_group!(benches, suite);
criterion_main!(benches);
