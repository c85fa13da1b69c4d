//! Sizes and durations as people write them in configs and on the command
//! line: `"256KiB"`, `"20GiB"`, `"1MB"`, byte counts; `"250ms"`, `"10s"`,
//! `"5m"`, `"1h"`.

use std::time::Duration;

/// Parse `"256KiB"`, `"1MB"`, `"20GiB"`, `"4096"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(format!("invalid size {s:?}: unknown unit")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// Parse `"250ms"`, `"10s"`, `"5m"`, `"1h"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("duration {s:?} too large"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(format!("invalid duration {s:?}: use ms, s, m or h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        for (s, n) in [
            ("4096", 4096),
            ("256KiB", 262_144),
            ("1MB", 1_000_000),
            ("20GiB", 20 << 30),
        ] {
            assert_eq!(parse_size(s).unwrap(), n, "{s}");
        }
        for bad in ["", "KiB", "12 parsecs", "-1", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5 fortnights").is_err());
        // Minutes and hours past what a Duration holds are refused, not wrapped.
        assert!(parse_duration("307445734561825861m").is_err());
        assert!(parse_duration("5124095576030432h").is_err());
        assert_eq!(
            parse_duration("307445734561825860m").unwrap(),
            Duration::from_secs(307_445_734_561_825_860 * 60)
        );
    }
}
