//! vmifs: boot virtual machines from images kept in a federation of object
//! stores, before the image has finished downloading.
//!
//! Layers (a module uses only layers below it):
//!
//! | layer | modules |
//! |---|---|
//! | pure core | [`id`], [`chunk`], [`chunker`], [`manifest`], [`erasure`], [`placement`], [`layout`], [`format`], [`catalog`], [`config`], [`error`] |
//! | I/O adapters | [`store`], [`cache`] |
//! | trust | [`sign`] (Ed25519 tag signatures) |
//! | orchestration | [`repo`], [`stats`], [`fetch`], [`publish`], [`download`], [`gc`] |
//! | images | [`image`] (`ImageReader::read_at`; no FUSE), [`profile`] (boot profiles), [`namespace`] (the mount's tree, pure) |
//! | edges | `serve`, [`fs`] (fuser adapter), [`daemon`] (`vmifs mount`), the CLI in `main.rs` |

pub mod cache;
pub mod catalog;
pub mod chunk;
pub mod chunker;
pub mod config;
pub mod daemon;
pub mod download;
pub mod erasure;
pub mod error;
pub mod fetch;
pub mod format;
pub mod fs;
pub mod gc;
pub mod id;
pub mod image;
pub mod layout;
pub mod manifest;
pub mod namespace;
pub mod placement;
pub mod profile;
pub mod publish;
pub mod repo;
pub mod serve;
pub mod sign;
pub mod stats;
pub mod store;

pub use error::{Error, Result};
