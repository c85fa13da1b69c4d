//! `vmifs mount`: image files readable at any offset, their format views,
//! the tree the mount shows, the FUSE adapter and the daemon around them, and the daemon's control
//! socket.

pub mod control;
pub mod daemon;
pub mod fuse;
pub mod image;
pub mod mountinfo;
pub mod namespace;
pub mod readahead;
pub mod site;
pub mod span;
pub mod view;
