//! The TOML configuration: erasure code, stores, cache, mount and fetch tuning.
//!
//! Path: `--config FILE`, else `$VMIFS_CONFIG`, else `/etc/vmifs/config.toml`.
//! Unknown keys are errors (a typo must not silently fall back to a default).
//! Sizes are written `"256KiB"`, `"20GiB"`, `"1MB"` or as plain byte counts;
//! durations as `"250ms"`, `"10s"`, `"5m"`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::Error;

pub const DEFAULT_PATH: &str = "/etc/vmifs/config.toml";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub erasure: ErasureConfig,
    #[serde(default, rename = "store")]
    pub stores: Vec<StoreConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub mount: MountConfig,
    #[serde(default)]
    pub fetch: FetchConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureConfig {
    #[serde(default = "d_data")]
    pub data: usize,
    #[serde(default = "d_parity")]
    pub parity: usize,
    #[serde(default = "d_chunk", deserialize_with = "size")]
    pub chunk_size: u64,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        ErasureConfig {
            data: d_data(),
            parity: d_parity(),
            chunk_size: d_chunk(),
        }
    }
}

fn d_data() -> usize {
    4
}
fn d_parity() -> usize {
    2
}
fn d_chunk() -> u64 {
    256 * 1024
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub name: String,
    /// `file:///path`, `http://host:port[/prefix]`, `https://…`, `s3://bucket[/prefix]`.
    pub url: String,
    /// S3: endpoint URL of an S3-compatible server (else AWS).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3: region (default `$AWS_REGION`, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Per-request time-out.
    #[serde(default = "d_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Retries of temporary errors.
    #[serde(default = "d_retries")]
    pub retries: u32,
    /// Requests in flight at once.
    #[serde(default = "d_concurrency")]
    pub concurrency: usize,
    /// file://: fsync each object before it becomes visible.
    #[serde(default = "d_true")]
    pub fsync: bool,
}

fn d_timeout() -> Duration {
    Duration::from_secs(10)
}
fn d_retries() -> u32 {
    3
}
fn d_concurrency() -> usize {
    32
}
fn d_true() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default = "d_cache_dir")]
    pub dir: PathBuf,
    #[serde(default = "d_cache_max", deserialize_with = "size")]
    pub max_size: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: d_cache_dir(),
            max_size: d_cache_max(),
        }
    }
}

fn d_cache_dir() -> PathBuf {
    PathBuf::from("/var/cache/vmifs")
}
fn d_cache_max() -> u64 {
    20 << 30
}

/// When to fetch a whole image in the background.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prefetch {
    #[default]
    Off,
    /// When a file of the image is first opened.
    Open,
    /// As soon as the mount is up.
    Mount,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// Let other users (QEMU under libvirt) read the mount.
    #[serde(default)]
    pub allow_other: bool,
    #[serde(default)]
    pub prefetch: Prefetch,
    /// How often tags are re-read (also on SIGHUP).
    #[serde(default = "d_refresh", deserialize_with = "duration")]
    pub refresh: Duration,
    /// FUSE worker threads.
    #[serde(default = "d_threads")]
    pub threads: usize,
    /// Kernel read-ahead of the mount (bdi read_ahead_kb).
    #[serde(default = "d_readahead", deserialize_with = "size")]
    pub kernel_readahead: u64,
    /// Chunks read ahead when a file is read sequentially.
    #[serde(default = "d_window")]
    pub readahead_chunks: usize,
    /// Status socket (default: `<cache dir>/vmifs.sock`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            allow_other: false,
            prefetch: Prefetch::Off,
            refresh: d_refresh(),
            threads: d_threads(),
            kernel_readahead: d_readahead(),
            readahead_chunks: d_window(),
            socket: None,
        }
    }
}

fn d_refresh() -> Duration {
    Duration::from_secs(30)
}
fn d_threads() -> usize {
    4
}
fn d_readahead() -> u64 {
    1 << 20
}
fn d_window() -> usize {
    8
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    /// Chunks fetched at once by `get` and prefetch.
    #[serde(default = "d_parallel")]
    pub parallel_chunks: usize,
    /// Send a hedge request when a shard is this late; `None` = adaptive.
    #[serde(default, deserialize_with = "opt_duration")]
    pub hedge_after: Option<Duration>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            parallel_chunks: d_parallel(),
            hedge_after: None,
        }
    }
}

fn d_parallel() -> usize {
    16
}

impl Config {
    /// The config file to use: explicit, `$VMIFS_CONFIG`, or the default path.
    pub fn locate(explicit: Option<&Path>) -> PathBuf {
        explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("VMIFS_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read config {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::Config(format!("config {}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Self, Error> {
        let c: Config = toml::from_str(text).map_err(|e| {
            // The message may quote a key as written (`"a\nb" = 1`): control
            // characters are escaped so the error stays one line.
            let mut msg = String::new();
            for c in e.message().trim().chars() {
                if c.is_control() {
                    msg.extend(c.escape_default());
                } else {
                    msg.push(c);
                }
            }
            Error::Config(match e.span() {
                Some(span) => format!(
                    "line {}: {msg}",
                    1 + text[..span.start].matches('\n').count()
                ),
                None => msg,
            })
        })?;
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), Error> {
        let e = &self.erasure;
        crate::erasure::Codec::new(e.data, e.parity)?;
        if e.chunk_size < 4096 || e.chunk_size > (64 << 20) || e.chunk_size % 4096 != 0 {
            return Err(Error::Config(format!(
                "erasure.chunk_size {} must be a multiple of 4KiB between 4KiB and 64MiB",
                e.chunk_size
            )));
        }
        let mut names = HashSet::new();
        for s in &self.stores {
            if s.name.is_empty()
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(Error::Config(format!(
                    "store name {:?} must be non-empty [A-Za-z0-9._-]",
                    s.name
                )));
            }
            if !names.insert(&s.name) {
                return Err(Error::Config(format!(
                    "store name {:?} appears twice",
                    s.name
                )));
            }
            crate::store::scheme_of(&s.url)
                .map_err(|m| Error::Config(format!("store {}: {m}", s.name)))?;
            if s.concurrency == 0 {
                return Err(Error::Config(format!(
                    "store {}: concurrency must be >= 1",
                    s.name
                )));
            }
        }
        if self.cache.max_size < 16 << 20 {
            return Err(Error::Config(
                "cache.max_size must be at least 16MiB".into(),
            ));
        }
        Ok(())
    }

    /// Stores are required by every command that reads or writes images.
    pub fn require_stores(&self) -> Result<(), Error> {
        if self.stores.is_empty() {
            Err(Error::Config("no [[store]] configured".into()))
        } else {
            Ok(())
        }
    }
}

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

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(Duration::from_secs(n)),
        NumOrStr::Str(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
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

    #[test]
    fn full_config() {
        let c = Config::parse(
            r#"
            [erasure]
            data = 4
            parity = 2
            chunk_size = "256KiB"
            [[store]]
            name = "eu-west"
            url = "http://127.0.0.1:9001"
            [[store]]
            name = "s3"
            url = "s3://bucket/prefix"
            endpoint = "http://127.0.0.1:9000"
            timeout = "2s"
            [cache]
            dir = "/tmp/x"
            max_size = "1GiB"
            [mount]
            prefetch = "open"
            "#,
        )
        .unwrap();
        assert_eq!(c.stores.len(), 2);
        assert_eq!(c.stores[1].timeout, Duration::from_secs(2));
        assert_eq!(c.cache.max_size, 1 << 30);
        assert_eq!(c.mount.prefetch, Prefetch::Open);
    }

    #[test]
    fn bad_configs_say_why() {
        let cases = [
            ("[erasure]\ndata = 0", "erasure"),
            ("[erasure]\nchunk_size = \"3KiB\"", "chunk_size"),
            ("[[store]]\nname = \"a\"\nurl = \"ftp://x\"", "ftp"),
            (
                "[[store]]\nname = \"a\"\nurl = \"file:///a\"\n[[store]]\nname = \"a\"\nurl = \"file:///b\"",
                "twice",
            ),
            (
                "[[store]]\nname = \"a/b\"\nurl = \"file:///a\"",
                "store name",
            ),
            ("[erasure]\ndatta = 3", "datta"),
            ("[cache]\nmax_size = \"lots\"", "lots"),
            ("not toml", "line 1"),
            // A quoted key with a newline is named escaped, on one line.
            ("\"a\\nb\" = 1", "line 1: unknown field `a\\nb`"),
        ];
        for (text, want) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{text:?}: {err}");
        }
    }
}
