//! The read-ahead window of a sequential reader. Pure, table-tested.

/// A sequential reader's read-ahead window, in chunks. It starts at one chunk
/// and doubles each time the reader moves on to a chunk inside it, up to the
/// configured maximum, so a boot's short runs of adjacent reads pull one or two
/// chunks they may not need while a long copy soon has the whole window in
/// flight (the way the kernel's on-demand read-ahead ramps up). Pure.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Current size (0: no sequential run yet).
    pub size: u64,
    /// Read-ahead has been started for the chunks below this index.
    pub until: u64,
}

impl Window {
    /// The reader has read up to chunk `from - 1` sequentially: the chunks to
    /// start fetching now (possibly none).
    pub fn advance(&mut self, from: u64, max: u64) -> std::ops::Range<u64> {
        if max == 0 {
            return from..from;
        }
        let stale = self.size == 0 || from > self.until || self.until > from + 2 * max;
        if stale {
            // A new run (or a jump): start small.
            self.size = 1;
            self.until = from + 1;
            return from..self.until;
        }
        if from + self.size <= self.until {
            // Still in the part of the window read before: nothing new.
            return from..from;
        }
        self.size = (self.size * 2).min(max);
        let start = self.until;
        self.until = self.until.max(from + self.size);
        start..self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_window_ramps_up_and_restarts_after_a_jump() {
        let mut w = Window::default();
        let mut step = |from| w.advance(from, 8);
        // A run from chunk 10: 1, 2, 4, 8 chunks ahead, then one per chunk read.
        assert_eq!(step(11), 11..12);
        assert_eq!(step(11), 11..11); // another read in chunk 10
        assert_eq!(step(12), 12..14);
        assert_eq!(step(12), 12..12);
        assert_eq!(step(13), 14..17);
        assert_eq!(step(14), 17..22);
        assert_eq!(step(15), 22..23);
        assert_eq!(step(16), 23..24);
        // A jump forward past the window: small again.
        assert_eq!(step(100), 100..101);
        assert_eq!(step(101), 101..103);
        // A jump back far behind the window: small again.
        assert_eq!(step(5), 5..6);
        assert_eq!(Window::default().advance(3, 0), 3..3);
        // Every chunk is asked for once along a long run.
        let mut w = Window::default();
        let mut asked = Vec::new();
        for from in 1..200 {
            asked.extend(w.advance(from, 16));
        }
        assert_eq!(asked, (1..215).collect::<Vec<_>>());
    }
}
