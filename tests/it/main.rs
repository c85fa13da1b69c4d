//! The integration tests: one test binary (`cargo test --test it`), one module
//! per subject, all sharing one harness ([`harness`]): real `vmifs` processes,
//! real `vmifs serve` and S3-compatible servers on loopback, real FUSE mounts,
//! and QEMU for the boot test. Filter by module: `cargo test --test it mount::`.
//!
//! Each module that mounts uses its own mount-point root (moved under
//! `$VMIFS_TEST_MOUNTS` when set), so modules never share a mount point.

mod harness;

mod auth;
mod boot;
mod cli_errors;
mod control;
mod crash;
mod federation;
mod formats;
mod hardening;
mod hostile_store;
mod hydrate;
mod load;
mod manifest_golden;
mod metrics;
mod mount;
mod peering;
mod peers;
mod roundtrip;
mod sched;
mod serve;
mod serve_hostile;
mod store_conformance;
mod trust;
mod views;
