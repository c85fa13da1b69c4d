//! vmifs: boot virtual machines from images kept in a federation of object
//! stores, before the image has finished downloading.
//!
//! The folders are the layers. A module uses only modules of its own layer
//! or below; nothing imports upwards, and there are no import circles.
//!
//! | layer | modules | what lives there |
//! |---|---|---|
//! | L0 pure | [`core`], [`wire`], [`config`], [`error`] | ids, chunks, manifests, tag records, keys and signatures, the erasure code, placement, packs and their indexes, shard proofs, moved records, the key layout of a store, boot profiles, catalog terms, units, sample data for tests and benchmarks; the HTTP store protocol; the parsed configuration. No tokio, no disk, no network. |
//! | L1 I/O adapters | [`store`], [`cache`], [`sys`] | the store trait, its backends (file, http, s3, memory), wrappers (retry, timeout, limit, fault), request priorities, and the conformance suite every one of them passes; the disk cache of verified chunks; the few system calls without a safe wrapper |
//! | L2 orchestration | [`fetch`], [`repo`], [`peers`] | one chunk from any `k` of its shards (hedged, verified; the shard race a pure state machine), one data shard alone (a piece, proved), whole columns of a run of chunks by coalesced range reads, the pack table of a v2 image, store rankings, the chunk scheduler (hot set, single-flight, priorities); the repository seen as one: tags, manifests, locks, publish (v1 shard objects, v2 packs), download, migrate, gc, and opening stores from the config; peer-to-peer sharing within a site: host records and live membership, rendezvous choice of each chunk's fetcher, the per-chunk fetcher choice and serving decision, peer health, and the node that drives them: the QUIC endpoint (iroh), the host record in the stores, asking and answering peers |
//! | L3 images | [`mount`] (`image`, `span`, `readahead`, `namespace`) | an image version readable at any offset, the tree the mount shows; no FUSE |
//! | L4 edges | [`mount`] (`fuse`, `daemon`, `control`, `mountinfo`), [`serve`], [`metrics`], and the command line (`src/cli/`, in the binary) | the FUSE adapter, the mount daemon and its control socket (typed requests and status document, server and client), `vmifs serve`, the Prometheus `/metrics` endpoints of both; anyhow only here |

#![deny(unsafe_code)]

pub mod cache;
pub mod config;
pub mod core;
pub mod error;
pub mod fetch;
pub mod metrics;
pub mod mount;
pub mod peers;
pub mod repo;
pub mod serve;
pub mod store;
pub mod sys;
pub mod wire;

pub use error::{Error, Result};
