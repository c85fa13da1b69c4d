//! Caps the requests in flight to one store, and decides who goes next.
//!
//! A store has `cap` request slots. Waiting requests are served highest
//! [`Priority`] first, in arrival order within a class. The last `reserved`
//! free slots are for on-demand requests alone: a request of any other class
//! gets a slot only while fewer than `cap - reserved` are in use. So however
//! much read-ahead and prefetch is queued, an on-demand read finds a free slot
//! at once unless on-demand reads themselves hold `reserved` or more.
//!
//! The class of a request is the class of the calling task
//! ([`priority::current`]), read when it starts waiting and again whenever
//! that class is raised, so a raised download's queued requests move up
//! without waiting for a slot to be released. The rule itself ([`pick`]) is
//! pure and table-tested; [`Slots`] applies it under a lock.
//!
//! Background requests (whole-image hydration) have one more bound: the
//! store's [`Pacer`] window, which grows while the store's latency stays at
//! its base and halves as soon as it rises. Every small request the store
//! answers (of any class) is a latency sample for it, timed from the moment
//! it held a slot; a request answered with more than [`SAMPLE_MAX`] bytes
//! is not (its time is transfer, not queueing).

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::pace::{PaceSnapshot, Pacer};
use super::priority::{self, Class, Priority};
use super::{DynStore, ObjectMeta, Store, StoreError};

/// Largest answer whose duration is a latency sample for the pacer.
pub const SAMPLE_MAX: usize = 256 * 1024;

/// The store wrapper: every call holds one of the store's slots.
#[derive(Debug)]
pub struct Limit {
    inner: DynStore,
    slots: Arc<Slots>,
}

impl Limit {
    /// `max_in_flight` slots (at least 1), of which `reserved` are kept for
    /// on-demand requests (at most `max_in_flight - 1`, so every class can run).
    pub fn new(inner: DynStore, max_in_flight: usize, reserved: usize) -> Self {
        Self::with_slots(inner, Arc::new(Slots::new(max_in_flight, reserved)))
    }

    /// Over `slots` made (and kept, to read their state) by the caller.
    pub fn with_slots(inner: DynStore, slots: Arc<Slots>) -> Self {
        Limit { inner, slots }
    }

    pub fn slots(&self) -> &Arc<Slots> {
        &self.slots
    }
}

#[async_trait]
impl Store for Limit {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn get_range(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let _s = self.slots.acquire(&priority::current()).await;
        let start = Instant::now();
        let got = self.inner.get_range(key, range).await;
        if let Ok(b) = &got
            && b.len() <= SAMPLE_MAX
        {
            self.slots.observe(start.elapsed());
        }
        got
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let _s = self.slots.acquire(&priority::current()).await;
        self.inner.put(key, data).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let _s = self.slots.acquire(&priority::current()).await;
        let start = Instant::now();
        let got = self.inner.head(key).await;
        if got.is_ok() {
            self.slots.observe(start.elapsed());
        }
        got
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _s = self.slots.acquire(&priority::current()).await;
        self.inner.delete(key).await
    }
    async fn get_bounded(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        let _s = self.slots.acquire(&priority::current()).await;
        self.inner.get_bounded(key, max).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let _s = self.slots.acquire(&priority::current()).await;
        self.inner.list(prefix).await
    }
}

/// How many slots may be in use for a request of class `p` to get one.
pub fn ceiling(p: Priority, cap: usize, reserved: usize) -> usize {
    match p {
        Priority::OnDemand => cap,
        _ => cap - reserved,
    }
}

/// The waiter that gets the next slot, if any may: the highest class, the
/// earliest arrival (`seq`) within it, if its class is below its ceiling
/// and, for a background request, `background_room` (the pacer's window is
/// not full). `waiting` yields `(class, seq)` per waiter; the result
/// indexes it.
pub fn pick(
    in_use: usize,
    cap: usize,
    reserved: usize,
    background_room: bool,
    waiting: impl IntoIterator<Item = (Priority, u64)>,
) -> Option<usize> {
    let (i, (p, _)) = waiting
        .into_iter()
        .enumerate()
        .max_by(|(_, (pa, sa)), (_, (pb, sb))| pa.cmp(pb).then(sb.cmp(sa)))?;
    let paced = p == Priority::Background && !background_room;
    (in_use < ceiling(p, cap, reserved) && !paced).then_some(i)
}

/// A priority-ordered counting semaphore with slots reserved for on-demand
/// requests and a paced share for background ones; see the module
/// documentation.
#[derive(Debug)]
pub struct Slots {
    cap: usize,
    reserved: usize,
    epoch: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    in_use: usize,
    next_seq: u64,
    waiting: Vec<Waiter>,
    /// Whether background requests are paced (else the window is ignored).
    paced: bool,
    /// Slots granted to background requests (by their `seq`), still held.
    background: HashSet<u64>,
    /// Most background requests ever in flight at once.
    background_peak: usize,
    pacer: Pacer,
}

#[derive(Debug)]
struct Waiter {
    seq: u64,
    class: Class,
    wake: oneshot::Sender<()>,
}

impl Slots {
    pub fn new(cap: usize, reserved: usize) -> Self {
        let cap = cap.max(1);
        let reserved = reserved.min(cap - 1);
        Slots {
            cap,
            reserved,
            epoch: Instant::now(),
            state: Mutex::new(State {
                in_use: 0,
                next_seq: 0,
                waiting: Vec::new(),
                paced: false,
                background: HashSet::new(),
                background_peak: 0,
                pacer: Pacer::new(1, ceiling(Priority::Background, cap, reserved)),
            }),
        }
    }

    /// Pace background requests from now on (off at first: background
    /// requests are then bounded by the slots alone).
    pub fn set_paced(&self, paced: bool) {
        let mut st = self.state.lock().unwrap();
        st.paced = paced;
        self.dispatch(&mut st);
    }

    pub fn paced(&self) -> bool {
        self.state.lock().unwrap().paced
    }

    /// Background requests in flight now.
    pub fn background_in_use(&self) -> usize {
        self.state.lock().unwrap().background.len()
    }

    /// The most background requests that were ever in flight at once.
    pub fn background_peak(&self) -> usize {
        self.state.lock().unwrap().background_peak
    }

    /// The pacer's state.
    pub fn pace(&self) -> PaceSnapshot {
        self.state.lock().unwrap().pacer.snapshot()
    }

    /// A request that held a slot was answered after `took`: a latency
    /// sample for the pacer. A grown window lets waiting background
    /// requests go.
    pub fn observe(&self, took: std::time::Duration) {
        let now = self.epoch.elapsed().as_micros() as u64;
        let mut st = self.state.lock().unwrap();
        let bg = st.background.len();
        let step = st.pacer.observe(now, took.as_micros() as u64, bg);
        if step == super::pace::Step::Grow {
            self.dispatch(&mut st);
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// Slots held now.
    pub fn in_use(&self) -> usize {
        self.state.lock().unwrap().in_use
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap().waiting.len()
    }

    /// Wait for a slot for a request of `class`; it is released on drop.
    pub async fn acquire(&self, class: &Class) -> Slot<'_> {
        // Subscribe before queueing, so no raise is missed.
        let mut changes = class.watch();
        let (wake, mut granted) = oneshot::channel();
        let seq = {
            let mut st = self.state.lock().unwrap();
            let seq = st.next_seq;
            st.next_seq += 1;
            st.waiting.push(Waiter {
                seq,
                class: class.clone(),
                wake,
            });
            self.dispatch(&mut st);
            seq
        };
        let mut queued = Queued {
            slots: self,
            seq,
            done: false,
        };
        loop {
            tokio::select! {
                biased;
                // The sender is dropped unsent only by `Queued::drop`.
                _ = &mut granted => break,
                r = changes.changed() => match r {
                    Ok(()) => self.dispatch(&mut self.state.lock().unwrap()),
                    Err(_) => {
                        let _ = (&mut granted).await;
                        break;
                    }
                },
            }
        }
        queued.done = true;
        Slot { slots: self, seq }
    }

    /// Grant slots to waiters as long as [`pick`] allows.
    fn dispatch(&self, st: &mut State) {
        while let Some(i) = pick(
            st.in_use,
            self.cap,
            self.reserved,
            !st.paced || st.background.len() < st.pacer.window(),
            st.waiting.iter().map(|w| (w.class.get(), w.seq)),
        ) {
            let w = st.waiting.swap_remove(i);
            st.in_use += 1;
            if w.class.get() == Priority::Background {
                st.background.insert(w.seq);
                st.background_peak = st.background_peak.max(st.background.len());
            }
            // A waiter that went away meanwhile gives the slot back in `Queued::drop`.
            let _ = w.wake.send(());
        }
    }

    fn release(&self, seq: u64) {
        let mut st = self.state.lock().unwrap();
        st.in_use -= 1;
        st.background.remove(&seq);
        self.dispatch(&mut st);
    }
}

/// A held slot.
#[derive(Debug)]
pub struct Slot<'a> {
    slots: &'a Slots,
    seq: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.release(self.seq);
    }
}

/// A waiter's place in the queue while it waits: if the waiting future is
/// dropped, it leaves the queue, or gives back the slot it was just granted.
struct Queued<'a> {
    slots: &'a Slots,
    seq: u64,
    done: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.slots.state.lock().unwrap();
        match st.waiting.iter().position(|w| w.seq == self.seq) {
            Some(i) => {
                st.waiting.swap_remove(i);
            }
            None => {
                st.in_use -= 1;
                st.background.remove(&self.seq);
                self.slots.dispatch(&mut st);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    #[test]
    fn the_highest_class_goes_first_then_the_earliest() {
        // (in use, cap, reserved, waiting, picked)
        type Case<'a> = (usize, usize, usize, &'a [(Priority, u64)], Option<usize>);
        let cases: &[Case] = &[
            (0, 4, 1, &[], None),
            (0, 4, 1, &[(Background, 0)], Some(0)),
            (0, 4, 1, &[(Background, 0), (OnDemand, 1)], Some(1)),
            (
                0,
                4,
                1,
                &[(ReadAhead, 3), (Profile, 5), (Background, 1)],
                Some(1),
            ),
            (
                0,
                4,
                1,
                &[(Profile, 7), (Profile, 2), (Profile, 9)],
                Some(1),
            ),
            // Background classes stop below cap - reserved ...
            (2, 4, 1, &[(Profile, 0)], Some(0)),
            (3, 4, 1, &[(Profile, 0)], None),
            (3, 4, 1, &[(Background, 0), (Profile, 1)], None),
            // ... on-demand requests use the reserved slots ...
            (3, 4, 1, &[(Background, 0), (OnDemand, 1)], Some(1)),
            (3, 4, 2, &[(OnDemand, 4)], Some(0)),
            // ... but not more than there are.
            (4, 4, 1, &[(OnDemand, 0)], None),
            // Without a reservation every class may fill every slot.
            (3, 4, 0, &[(Background, 0)], Some(0)),
            (4, 4, 0, &[(Background, 0)], None),
        ];
        for &(in_use, cap, reserved, waiting, want) in cases {
            let got = pick(in_use, cap, reserved, true, waiting.iter().copied());
            assert_eq!(
                got, want,
                "{in_use} of {cap} (reserve {reserved}) {waiting:?}"
            );
        }
    }

    #[test]
    fn a_full_pacer_window_holds_back_background_requests_only() {
        // (waiting, picked) with the window full, 1 of 8 slots in use.
        type Case<'a> = (&'a [(Priority, u64)], Option<usize>);
        let cases: &[Case] = &[
            (&[(Background, 0)], None),
            (&[(Background, 0), (ReadAhead, 1)], Some(1)),
            (&[(Profile, 3), (Background, 0)], Some(0)),
            (&[(Background, 0), (OnDemand, 9)], Some(1)),
        ];
        for &(waiting, want) in cases {
            assert_eq!(
                pick(1, 8, 2, false, waiting.iter().copied()),
                want,
                "{waiting:?}"
            );
            // With room, the first waiter in service order goes.
            assert!(pick(1, 8, 2, true, waiting.iter().copied()).is_some());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn background_requests_stay_within_the_window_and_samples_move_it() {
        let slots = Slots::new(8, 2);
        slots.set_paced(true);
        let bg = Class::new(Background);
        let first = slots.acquire(&bg).await;
        // The window starts at one request.
        let second = slots.acquire(&bg);
        tokio::pin!(second);
        assert!(futures::poll!(second.as_mut()).is_pending());
        // Read-ahead is not paced.
        let ra = slots.acquire(&Class::new(ReadAhead)).await;
        assert_eq!((slots.in_use(), slots.background_in_use()), (2, 1));
        // A sample at base latency with the window used grows it: the
        // waiting request goes.
        slots.observe(std::time::Duration::from_millis(50));
        assert_eq!(slots.pace().window, 2);
        let second = second.await;
        assert_eq!(slots.background_in_use(), 2);
        assert_eq!(slots.background_peak(), 2);
        drop((first, second, ra));
        assert_eq!((slots.in_use(), slots.background_in_use()), (0, 0));
        // Unpaced, the window does not matter.
        let unpaced = Slots::new(8, 2);
        let held: Vec<_> = futures::future::join_all((0..6).map(|_| unpaced.acquire(&bg))).await;
        assert_eq!(unpaced.background_in_use(), 6);
        drop(held);
    }

    #[test]
    fn ceilings() {
        assert_eq!(ceiling(OnDemand, 32, 8), 32);
        for p in [Profile, ReadAhead, Background] {
            assert_eq!(ceiling(p, 32, 8), 24);
        }
        // The reservation never shuts a class out.
        assert_eq!(Slots::new(1, 5).reserved(), 0);
        assert_eq!(Slots::new(0, 0).cap(), 1);
        assert_eq!(Slots::new(4, 9).reserved(), 3);
    }

    #[tokio::test]
    async fn slots_are_granted_by_class_and_returned() {
        let slots = Slots::new(2, 1);
        let bg = Class::new(Background);
        let a = slots.acquire(&bg).await;
        assert_eq!(slots.in_use(), 1);
        // A second background request waits: the last slot is reserved.
        let waiting = slots.acquire(&bg);
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        assert_eq!(slots.waiting(), 1);
        // An on-demand one does not.
        let od = slots.acquire(&Class::new(OnDemand)).await;
        assert_eq!(slots.in_use(), 2);
        drop(a);
        drop(od);
        let b = waiting.await;
        assert_eq!((slots.in_use(), slots.waiting()), (1, 0));
        drop(b);
        assert_eq!(slots.in_use(), 0);
    }

    #[tokio::test]
    async fn a_raised_class_takes_a_reserved_slot_at_once() {
        let slots = Slots::new(2, 1);
        let _held = slots.acquire(&Class::new(Background)).await;
        let class = Class::new(ReadAhead);
        let waiting = slots.acquire(&class);
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        class.raise(OnDemand);
        assert!(futures::poll!(waiting.as_mut()).is_ready());
        assert_eq!(slots.in_use(), 1);
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_the_queue() {
        let slots = Slots::new(1, 0);
        let held = slots.acquire(&Class::new(OnDemand)).await;
        let od = Class::new(OnDemand);
        {
            let w = slots.acquire(&od);
            tokio::pin!(w);
            assert!(futures::poll!(w.as_mut()).is_pending());
            assert_eq!(slots.waiting(), 1);
        }
        assert_eq!(slots.waiting(), 0);
        // Granted, then dropped before it ran: the slot comes back.
        {
            let w = slots.acquire(&od);
            tokio::pin!(w);
            assert!(futures::poll!(w.as_mut()).is_pending());
            drop(held);
            assert_eq!(slots.in_use(), 1);
        }
        assert_eq!((slots.in_use(), slots.waiting()), (0, 0));
    }
}
