//! Warnings that a hostile or broken store could repeat without end (3,000
//! spam tags, a store that answers every read with garbage) are rate-limited:
//! the first occurrence of a kind of warning is logged, later ones of the same
//! kind are counted, and the count is logged with the next occurrence once
//! [`INTERVAL`] has passed. A flood of bad objects costs one log line per
//! kind and interval, not one per object.
//!
//! Callers that meet many objects of one kind in one pass (a listing, a mount
//! refresh) also gather them into one summary warning ([`summary`]) before it
//! goes through the limiter.
//!
//! [`RateLimit`] is the pure state machine (time passed in); [`warn`] is the
//! process-wide limiter over it.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a repeated kind of warning is logged at most.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Kinds of warnings remembered at once; beyond that the memory is cleared
/// (kinds are few and chosen by the code, so this never happens in practice).
const MAX_KINDS: usize = 4096;

/// Whether to log a warning now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` warnings of its kind were dropped since the last
    /// one logged.
    Log { suppressed: u64 },
    /// Drop it (counted).
    Quiet,
}

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

/// Per-kind rate limit: first occurrence logged, then at most one per
/// `interval`, carrying the count of those dropped in between.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    seen: HashMap<String, Seen>,
}

impl RateLimit {
    pub fn new(interval: Duration) -> Self {
        RateLimit {
            interval,
            seen: HashMap::new(),
        }
    }

    /// A warning of kind `kind` at `now`: log it or not.
    pub fn check(&mut self, kind: &str, now: Instant) -> Verdict {
        if self.seen.len() >= MAX_KINDS && !self.seen.contains_key(kind) {
            self.seen.clear();
        }
        match self.seen.get_mut(kind) {
            None => {
                self.seen.insert(
                    kind.to_string(),
                    Seen {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Verdict::Log { suppressed: 0 }
            }
            Some(s) if now.saturating_duration_since(s.logged_at) >= self.interval => {
                let suppressed = s.suppressed;
                s.logged_at = now;
                s.suppressed = 0;
                Verdict::Log { suppressed }
            }
            Some(s) => {
                s.suppressed += 1;
                Verdict::Quiet
            }
        }
    }
}

static LIMIT: Mutex<Option<RateLimit>> = Mutex::new(None);

/// Log `message` as a warning unless a warning of `kind` was logged less than
/// [`INTERVAL`] ago (then it is only counted).
pub fn warn(kind: &str, message: impl Display) {
    let verdict = {
        let mut g = LIMIT.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert_with(|| RateLimit::new(INTERVAL))
            .check(kind, Instant::now())
    };
    match verdict {
        Verdict::Log { suppressed: 0 } => tracing::warn!("{message}"),
        Verdict::Log { suppressed } => tracing::warn!(
            "{message} ({suppressed} more like it in the last {} s)",
            INTERVAL.as_secs()
        ),
        Verdict::Quiet => {}
    }
}

/// One line for many items of one kind: `"<count> <what>: a, b, c and 7 more"`
/// (at most `shown` items named).
pub fn summary(what: &str, items: &[String], shown: usize) -> String {
    let named: Vec<&str> = items.iter().take(shown).map(String::as_str).collect();
    let mut s = format!("{} {what}: {}", items.len(), named.join(", "));
    if items.len() > shown {
        s.push_str(&format!(" and {} more", items.len() - shown));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_is_logged_then_counted_then_logged_with_the_count() {
        let mut r = RateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(r.check("a", t0), Verdict::Log { suppressed: 0 });
        for i in 1..3000 {
            assert_eq!(r.check("a", t0 + Duration::from_millis(i)), Verdict::Quiet);
        }
        // Another kind is not held back by the first.
        assert_eq!(r.check("b", t0), Verdict::Log { suppressed: 0 });
        let later = t0 + Duration::from_secs(61);
        assert_eq!(r.check("a", later), Verdict::Log { suppressed: 2999 });
        assert_eq!(r.check("a", later + Duration::from_secs(1)), Verdict::Quiet);
        assert_eq!(
            r.check("a", later + Duration::from_secs(60)),
            Verdict::Log { suppressed: 1 }
        );
    }

    #[test]
    fn the_memory_of_kinds_stays_bounded() {
        let mut r = RateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_KINDS * 2) {
            r.check(&format!("k{i}"), t0);
        }
        assert!(r.seen.len() <= MAX_KINDS);
    }

    #[test]
    fn summaries_name_a_few() {
        let items: Vec<String> = (0..3000).map(|i| format!("spam:{i}")).collect();
        let s = summary("dangling tags skipped", &items, 3);
        assert_eq!(
            s,
            "3000 dangling tags skipped: spam:0, spam:1, spam:2 and 2997 more"
        );
        assert_eq!(summary("x", &items[..1], 3), "1 x: spam:0");
    }
}
