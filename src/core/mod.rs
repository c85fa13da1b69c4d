//! The pure core: identifiers, chunks, the manifest and tag records, the
//! erasure code, placement, the key layout of a store, image formats, boot
//! profiles, catalog search and signatures; and the deterministic sample data
//! ([`sample`]) the tests, fuzz targets and benchmarks share.
//!
//! Nothing here touches tokio, the disk or the network; every function is
//! tested with tables, and every on-disk format has golden values.

pub mod catalog;
pub mod chunk;
pub mod chunker;
pub mod erasure;
pub mod format;
pub mod id;
pub mod key;
pub mod layout;
pub mod limits;
pub mod manifest;
pub mod moved;
pub mod pack;
pub mod pack_table;
pub mod placement;
pub mod profile;
pub mod sample;
pub mod secret;
pub mod shard_proof;
pub mod sign;
pub mod tag;
pub mod units;
pub mod view;
