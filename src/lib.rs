//! vmifs: boot virtual machines from images kept in a federation of object
//! stores, before the image has finished downloading.
//!
//! Layers (a module uses only layers below it):
//!
//! | layer | modules |
//! |---|---|
//! | pure core | [`id`], [`chunk`], [`chunker`], [`manifest`], [`erasure`], [`placement`], [`layout`], [`config`], [`error`] |
//! | I/O adapters | [`store`] |
//! | orchestration | [`repo`], [`fetch`], [`publish`], [`download`] |
//! | edges | `serve`, the CLI in `main.rs` |

pub mod chunk;
pub mod chunker;
pub mod config;
pub mod erasure;
pub mod error;
pub mod id;
pub mod layout;
pub mod manifest;
pub mod placement;
pub mod serve;
pub mod store;

pub use error::{Error, Result};
