//! What a reader believes about a lock it finds on a store (see [`crate::repo`]
//! for how locks keep `push` and `gc` apart).
//!
//! A lock is written by another host through a store that may be hostile, so
//! its claims are bounded by what this host is configured to accept:
//!
//! - Its lease is at most the local `[locks] lease` ([`believed_lease`]): a
//!   lock claiming `lease_ms = u64::MAX` lives no longer than one of ours.
//! - Its age is measured on its store's clock, against the reader's own lock
//!   just written there. A lock whose time lies more than [`MAX_SKEW`] in the
//!   future of that is not believed at all: no renewal can have happened
//!   after the reader's own write plus the listing, so the time is forged (or
//!   the store's clock jumped back). Such a lock counts as expired: believing
//!   it would let it block gc for as long as the store keeps lying. Another
//!   store's honest copy of the same lock still counts (the youngest copy
//!   wins), so a running push is not exposed by one lying store.
//! - Waiting for a lock ends: a push waits for a running gc at most
//!   [`wait_limit`] (twice its lease), then gives up with one clear error and
//!   removes its own lock.

use std::time::{Duration, SystemTime};

/// How far in the future of the reader's own lock another lock's time may be
/// and still be believed.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// The lease believed for a lock that claims `claimed_ms` (None: the lock
/// does not say, or does not parse): the claim, at most `local`.
pub fn believed_lease(claimed_ms: Option<u64>, local: Duration) -> Duration {
    match claimed_ms {
        Some(ms) => Duration::from_millis(ms).min(local),
        None => local,
    }
}

/// How old a lock looks, measured on its store's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    /// Written this long before `now` (zero when the store keeps no times).
    Known(Duration),
    /// Written more than [`MAX_SKEW`] after `now`: not believed.
    Future(Duration),
}

/// The age of a lock last written at `modified`, with `now` the store's own
/// time of the reader's lock.
pub fn age(now: SystemTime, modified: Option<SystemTime>) -> Age {
    let Some(t) = modified else {
        return Age::Known(Duration::ZERO);
    };
    match now.duration_since(t) {
        Ok(d) => Age::Known(d),
        Err(e) if e.duration() > MAX_SKEW => Age::Future(e.duration()),
        Err(_) => Age::Known(Duration::ZERO),
    }
}

/// How long a push waits for a gc lock of `lease` (the believed lease) to go.
pub fn wait_limit(lease: Duration) -> Duration {
    lease.saturating_mul(2).max(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_capped_at_ours() {
        let ours = Duration::from_secs(300);
        assert_eq!(believed_lease(Some(u64::MAX), ours), ours);
        assert_eq!(believed_lease(Some(1000), ours), Duration::from_secs(1));
        assert_eq!(believed_lease(None, ours), ours);
        assert_eq!(believed_lease(Some(0), ours), Duration::ZERO);
    }

    #[test]
    fn future_locks_are_not_believed_beyond_the_skew() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        assert_eq!(age(now, Some(now - s(10))), Age::Known(s(10)));
        assert_eq!(age(now, None), Age::Known(Duration::ZERO));
        // A little ahead: clocks and listing order, believed as just written.
        assert_eq!(age(now, Some(now + s(30))), Age::Known(Duration::ZERO));
        assert_eq!(age(now, Some(now + s(3600))), Age::Future(s(3600)));
        assert_eq!(
            age(now, Some(now + s(100 * 365 * 86_400))),
            Age::Future(s(100 * 365 * 86_400))
        );
    }

    #[test]
    fn waits_end() {
        assert_eq!(
            wait_limit(Duration::from_secs(300)),
            Duration::from_secs(600)
        );
        assert_eq!(wait_limit(Duration::MAX), Duration::MAX);
        assert_eq!(wait_limit(Duration::ZERO), Duration::from_secs(2));
    }
}
