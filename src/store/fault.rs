//! Fault injection, for tests and the fault benchmarks.
//!
//! [`Faulty`] wraps any store and misbehaves on demand. A cloneable
//! [`FaultControl`] switches its [`FaultMode`] at run time, from another task
//! if need be, and counts the calls that reached the wrapper:
//!
//! * `Healthy`: forward every call.
//! * `Down`: every call fails with a temporary "injected outage" error.
//! * `Hang`: calls wait until the mode changes, then behave as the new mode
//!   says (a hung call resumes when set `Healthy`, fails when set `Down`).
//!   Stack a [`Timeout`](super::timeout::Timeout) above to turn hangs into errors.
//! * `Corrupt`: `get_range` returns the bytes with one byte flipped.
//! * `Truncate`: `get_range` returns the first half of the bytes.
//! * `Delay(d)`: every call waits `d` first.
//!
//! `Corrupt` and `Truncate` leave the other methods alone. The control also
//! reports how many calls are inside the wrapper at once, and the most there
//! have ever been ([`FaultControl::max_in_flight`]), to check concurrency caps.
//!
//! ```
//! # async fn demo() {
//! use std::sync::Arc;
//! use vmifs::store::{fault::{FaultMode, Faulty}, memory::MemoryStore, Store};
//! let faulty = Faulty::new(Arc::new(MemoryStore::new("m")));
//! let ctl = faulty.control();
//! ctl.set(FaultMode::Down);
//! assert!(faulty.head("k").await.unwrap_err().is_temporary());
//! ctl.set(FaultMode::Healthy);
//! assert!(faulty.head("k").await.unwrap_err().is_not_found());
//! assert_eq!(ctl.calls().head, 2);
//! # }
//! ```

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use super::{DynStore, ErrorKind, ObjectMeta, Store, StoreError};

/// How a [`Faulty`] store behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FaultMode {
    #[default]
    Healthy,
    Down,
    Hang,
    Corrupt,
    Truncate,
    Delay(Duration),
}

/// How many calls of each method reached a [`Faulty`] store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub get_range: u64,
    pub put: u64,
    pub head: u64,
    pub delete: u64,
    pub list: u64,
}

impl CallCounts {
    pub fn total(&self) -> u64 {
        self.get_range + self.put + self.head + self.delete + self.list
    }
}

#[derive(Debug, Default)]
struct Counters {
    get_range: AtomicU64,
    put: AtomicU64,
    head: AtomicU64,
    delete: AtomicU64,
    list: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// Switches a [`Faulty`] store's mode and reads its counters. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FaultControl {
    mode: Arc<watch::Sender<FaultMode>>,
    counters: Arc<Counters>,
}

impl FaultControl {
    /// Switch mode; calls hung in `Hang` wake up and follow the new mode.
    pub fn set(&self, mode: FaultMode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> FaultMode {
        *self.mode.borrow()
    }

    /// Calls per method so far (counted on entry, whatever their outcome).
    pub fn calls(&self) -> CallCounts {
        let c = &self.counters;
        CallCounts {
            get_range: c.get_range.load(Ordering::SeqCst),
            put: c.put.load(Ordering::SeqCst),
            head: c.head.load(Ordering::SeqCst),
            delete: c.delete.load(Ordering::SeqCst),
            list: c.list.load(Ordering::SeqCst),
        }
    }

    /// Calls currently inside the wrapper (waiting, delayed or in the inner store).
    pub fn in_flight(&self) -> u64 {
        self.counters.in_flight.load(Ordering::SeqCst)
    }

    /// The most calls that were ever inside the wrapper at once.
    pub fn max_in_flight(&self) -> u64 {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// Zero the call counts and the in-flight high-water mark.
    pub fn reset_counts(&self) {
        let c = &self.counters;
        for a in [&c.get_range, &c.put, &c.head, &c.delete, &c.list] {
            a.store(0, Ordering::SeqCst);
        }
        c.max_in_flight
            .store(c.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// A store wrapper that injects faults; see the module documentation.
#[derive(Debug)]
pub struct Faulty {
    inner: DynStore,
    control: FaultControl,
}

/// Keeps the in-flight count for the duration of one call.
struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Faulty {
    /// Wrap `inner`, initially `Healthy`.
    pub fn new(inner: DynStore) -> Self {
        Faulty {
            inner,
            control: FaultControl {
                mode: Arc::new(watch::Sender::new(FaultMode::Healthy)),
                counters: Arc::default(),
            },
        }
    }

    /// A handle that switches this store's mode and reads its counters.
    pub fn control(&self) -> FaultControl {
        self.control.clone()
    }

    fn enter(&self, counter: &AtomicU64) -> InFlight<'_> {
        let c = &*self.control.counters;
        counter.fetch_add(1, Ordering::SeqCst);
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(c)
    }

    /// Apply the current mode before a call: wait out `Hang` and `Delay`, fail
    /// on `Down`. Returns the mode the call then runs under.
    async fn gate(&self, what: &str) -> Result<FaultMode, StoreError> {
        let mut rx = self.control.mode.subscribe();
        loop {
            let mode = *rx.borrow_and_update();
            match mode {
                FaultMode::Hang => {
                    if rx.changed().await.is_err() {
                        // The sender lives as long as `self`; never reached.
                        std::future::pending::<()>().await;
                    }
                }
                FaultMode::Down => {
                    return Err(StoreError::new(
                        ErrorKind::Temporary,
                        self.inner.name(),
                        format!("{what}: injected outage"),
                    ));
                }
                FaultMode::Delay(d) => {
                    tokio::time::sleep(d).await;
                    return Ok(mode);
                }
                _ => return Ok(mode),
            }
        }
    }
}

#[async_trait]
impl Store for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn get_range(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let _g = self.enter(&self.control.counters.get_range);
        let mode = self.gate(key).await?;
        let data = self.inner.get_range(key, range).await?;
        Ok(mangle(mode, data))
    }

    async fn get_bounded(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        let _g = self.enter(&self.control.counters.get_range);
        let mode = self.gate(key).await?;
        let data = self.inner.get_bounded(key, max).await?;
        Ok(mangle(mode, data))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let _g = self.enter(&self.control.counters.put);
        self.gate(key).await?;
        self.inner.put(key, data).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let _g = self.enter(&self.control.counters.head);
        self.gate(key).await?;
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _g = self.enter(&self.control.counters.delete);
        self.gate(key).await?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let _g = self.enter(&self.control.counters.list);
        self.gate(prefix).await?;
        self.inner.list(prefix).await
    }
}

/// What a read returns under `mode`.
fn mangle(mode: FaultMode, data: Bytes) -> Bytes {
    match mode {
        FaultMode::Corrupt if !data.is_empty() => {
            let mut v = data.to_vec();
            let i = v.len() / 2;
            v[i] ^= 0xff;
            Bytes::from(v)
        }
        FaultMode::Truncate => data.slice(..data.len() / 2),
        _ => data,
    }
}
