//! The read-ahead window of a sequential reader. Pure, table-tested.

/// A sequential reader's read-ahead window, in chunks. It starts at one chunk
/// and doubles each time the reader has used up half of what was asked
/// ahead, up to the configured maximum, so a boot's short runs of adjacent
/// reads pull one or two chunks they may not need while a long copy soon has
/// the whole window in flight (the way the kernel's on-demand read-ahead
/// ramps up). New chunks are asked for in batches (half the window once it is
/// full), so adjacent chunks can be fetched together: one range request per
/// store for the batch instead of one per chunk. Pure.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Current size (0: no sequential run yet).
    pub size: u64,
    /// Read-ahead has been started for the chunks below this index.
    pub until: u64,
}

impl Window {
    /// The reader has read up to chunk `from - 1` sequentially, the last read
    /// covering `read` chunks: the chunks to start fetching now (possibly
    /// none). A new run starts with a window as large as that read.
    pub fn advance(&mut self, from: u64, read: u64, max: u64) -> std::ops::Range<u64> {
        if max == 0 {
            return from..from;
        }
        // The caller has seen a sequential read; it may have read past the
        // window (reads larger than a chunk) and still be one run.
        let stale = self.size == 0 || from > self.until + max || self.until > from + 2 * max;
        if stale {
            // A new run (or a jump): start small.
            self.size = read.clamp(1, max);
            self.until = from + self.size;
            return from..self.until;
        }
        if self.until > from && self.until - from > self.size / 2 {
            // More than half of the window is still ahead: nothing new.
            return from..from;
        }
        self.size = (self.size * 2).min(max);
        let start = self.until.max(from);
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
        let mut step = |from| w.advance(from, 1, 8);
        // A run from chunk 10: 1, 2, 4, 8 chunks ahead, then batches of 4.
        assert_eq!(step(11), 11..12);
        assert_eq!(step(11), 11..11); // another read in chunk 10
        assert_eq!(step(12), 12..14);
        assert_eq!(step(12), 12..12);
        assert_eq!(step(13), 14..17);
        assert_eq!(step(14), 14..14);
        assert_eq!(step(15), 17..23);
        for from in 16..19 {
            assert_eq!(step(from), from..from);
        }
        assert_eq!(step(19), 23..27);
        assert_eq!(step(20), 20..20);
        assert_eq!(step(23), 27..31);
        // A jump forward past the window: small again.
        assert_eq!(step(100), 100..101);
        assert_eq!(step(101), 101..103);
        // A jump back far behind the window: small again.
        assert_eq!(step(5), 5..6);
        assert_eq!(Window::default().advance(3, 1, 0), 3..3);
        // Reads of four chunks each (1 MiB reads of 256 KiB chunks): the
        // window catches up with the reader and then stays ahead of it.
        let mut w = Window::default();
        let mut step = |from| w.advance(from, 1, 8);
        assert_eq!(step(8), 8..9);
        assert_eq!(step(12), 12..14);
        assert_eq!(step(16), 16..20);
        assert_eq!(step(20), 20..28);
        assert_eq!(step(24), 28..32);
        assert_eq!(step(28), 32..36);
        let mut w = Window::default();
        let mut asked = Vec::new();
        for from in 1..200 {
            asked.extend(w.advance(from, 1, 16));
        }
        // Every chunk is asked for once, in order, and the window stays
        // at least half its size ahead of the reader.
        let end = asked.last().unwrap() + 1;
        assert_eq!(asked, (1..end).collect::<Vec<_>>());
        assert!(end >= 200 + 8, "{end}");
    }
}
