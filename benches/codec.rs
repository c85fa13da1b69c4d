//! Publish and read CPU paths: chunk+hash+encode, and verify+decode.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmifs::core::chunk::VerifiedChunk;
use vmifs::core::chunker::{Chunker, Piece};
use vmifs::core::erasure::{Codec, open_shard, shard_payload};
use vmifs::core::id::ChunkId;

fn data(len: usize) -> Vec<u8> {
    vmifs::core::sample::random(len, 1)
}

fn publish(c: &mut Criterion) {
    let input = data(16 << 20);
    let mut g = c.benchmark_group("publish");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.sample_size(10);
    for (k, m, cs) in [
        (4usize, 2usize, 256usize << 10),
        (4, 2, 1 << 20),
        (2, 1, 256 << 10),
    ] {
        let codec = Codec::new(k, m).unwrap();
        g.bench_function(format!("chunk+hash+encode {k}+{m} {}KiB", cs >> 10), |b| {
            b.iter(|| {
                let mut n = 0;
                for p in Chunker::new(&input[..], cs) {
                    if let Piece::Data { chunk, .. } = p.unwrap() {
                        n += codec.encode_objects(chunk.id(), chunk.bytes()).len();
                    }
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let cs = 256 << 10;
    let chunk = data(cs);
    let id = ChunkId::of(&chunk);
    let codec = Codec::new(4, 2).unwrap();
    let objs: Vec<Bytes> = codec.encode_objects(id, &chunk);
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Bytes(cs as u64));
    // The read path: headers checked, payloads left to the chunk hash.
    g.bench_function("header+verify 4+2 data shards 256KiB", |b| {
        b.iter(|| {
            let mut v = Vec::with_capacity(cs);
            for (i, o) in objs.iter().enumerate().take(4) {
                v.extend_from_slice(&shard_payload(o, id, i, &codec, cs).unwrap());
            }
            black_box(VerifiedChunk::verify(id, Bytes::from(v)).unwrap());
        })
    });
    // With every shard's payload checksum too (the recovery path).
    g.bench_function("checksum+verify 4+2 data shards 256KiB", |b| {
        b.iter(|| {
            let mut v = Vec::with_capacity(cs);
            for (i, o) in objs.iter().enumerate().take(4) {
                v.extend_from_slice(&open_shard(o, id, i, &codec, cs).unwrap());
            }
            black_box(VerifiedChunk::verify(id, Bytes::from(v)).unwrap());
        })
    });
    g.bench_function("header+decode+verify 4+2 two parity 256KiB", |b| {
        b.iter(|| {
            let slots: Vec<Option<Vec<u8>>> = objs
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    (i >= 2).then(|| shard_payload(o, id, i, &codec, cs).unwrap().to_vec())
                })
                .collect();
            let out = codec.decode(slots, cs).unwrap();
            black_box(VerifiedChunk::verify(id, Bytes::from(out)).unwrap());
        })
    });
    g.finish();
}

criterion_group!(benches, publish, read);
criterion_main!(benches);
