//! The TOML configuration: erasure code, stores, cache, mount and fetch tuning.
//!
//! Path: `--config FILE`, else `$VMIFS_CONFIG`, else `/etc/vmifs/config.toml`.
//! Unknown keys are errors (a typo must not silently fall back to a default).
//! Sizes are written `"256KiB"`, `"20GiB"`, `"1MB"` or as plain byte counts;
//! durations as `"250ms"`, `"10s"`, `"5m"`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::core::secret::{Secret, redact_url};
use crate::core::units::{parse_duration, parse_size};
use crate::error::Error;

mod credentials;
pub mod location;

pub use location::{Location, scheme_of};

pub const DEFAULT_PATH: &str = "/etc/vmifs/config.toml";

/// How long a lock stays valid after it was last written, unless configured
/// otherwise (`[locks] lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub erasure: ErasureConfig,
    #[serde(default)]
    pub push: PushConfig,
    #[serde(default)]
    pub gc: GcConfig,
    #[serde(default, rename = "store")]
    pub stores: Vec<StoreConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub mount: MountConfig,
    #[serde(default)]
    pub fetch: FetchConfig,
    #[serde(default)]
    pub trust: TrustConfig,
    #[serde(default)]
    pub locks: LockConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub peers: PeersConfig,
}

/// Chunk sharing among the hosts of a site (see [`crate::peers`]). Off
/// unless `listen` is set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersConfig {
    /// The UDP address (QUIC) this host answers its peers on, e.g.
    /// `"10.77.0.11:7070"`: an address the other hosts of the site reach.
    #[serde(default, deserialize_with = "peers_listen")]
    pub listen: Option<std::net::SocketAddr>,
    /// The site: hosts of one site find each other through records in the
    /// stores (`sites/<site>/hosts/`).
    #[serde(default)]
    pub site: Option<crate::core::id::Name>,
    /// Peers named here (`"<node id>@IP:PORT"`), live whatever the stores say.
    #[serde(default)]
    pub hosts: Vec<PeerAddr>,
    /// Only these node ids may fetch chunks from this host (default: every
    /// live host of the site).
    #[serde(default)]
    pub allow: Vec<crate::peers::HostId>,
    /// A host's record in the stores lives this long unless renewed (it is
    /// renewed every third of it).
    #[serde(default = "d_peer_lease", deserialize_with = "duration")]
    pub lease: Duration,
    /// The longest a read waits for peers before it asks the stores.
    #[serde(default = "d_peer_budget", deserialize_with = "duration")]
    pub budget: Duration,
    /// The node's secret key (made on first start; default `peer.key` in
    /// the cache directory). Its public half is the host's node id.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            listen: None,
            site: None,
            hosts: Vec::new(),
            allow: Vec::new(),
            lease: d_peer_lease(),
            budget: d_peer_budget(),
            key: None,
        }
    }
}

fn d_peer_lease() -> Duration {
    Duration::from_secs(30)
}

fn d_peer_budget() -> Duration {
    crate::peers::Timing::default().budget
}

/// A peer named in the config: its node id and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    pub host: crate::peers::HostId,
    pub addr: std::net::SocketAddr,
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "peers.hosts: {s:?} is not NODE_ID@IP:PORT (64 hex digits, then an address)"
            ))
        };
        let (id, addr) = s.split_once('@').ok_or_else(bad)?;
        Ok(PeerAddr {
            host: id.parse().map_err(|_| bad())?,
            addr: addr.parse().map_err(|_| bad())?,
        })
    }
}

fn peers_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "peers.listen: {s:?} is not an address (IP:PORT, e.g. \"10.77.0.11:7070\")"
        ))
    })
}

/// The Prometheus endpoint of the mount daemon (see [`crate::metrics`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` on this address, e.g. `"127.0.0.1:9100"`
    /// (default: no endpoint). The figures are not secret but tell what is
    /// being booted: keep it on loopback or a management network.
    #[serde(default, deserialize_with = "listen_addr")]
    pub listen: Option<std::net::SocketAddr>,
}

fn listen_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "metrics.listen: {s:?} is not an address (IP:PORT, e.g. \"127.0.0.1:9100\")"
        ))
    })
}

/// How `push` lays out what it writes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Manifest format of new versions: 2 (shards in packs, the default) or 1
    /// (one object per shard, for hosts running an older vmifs).
    #[serde(default = "d_push_format")]
    pub format: u32,
    /// Size a pack grows to before it is uploaded (format 2). A push holds
    /// about `data + parity` packs in memory at once.
    #[serde(default = "d_pack_size", deserialize_with = "size")]
    pub pack_size: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            format: d_push_format(),
            pack_size: d_pack_size(),
        }
    }
}

fn d_push_format() -> u32 {
    crate::core::manifest::VERSION
}
fn d_pack_size() -> u64 {
    16 << 20
}

/// How `gc` treats packs that are partly live.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// A pack some version still needs is rewritten when its live bytes are
    /// below this share of its size (0 never rewrites; 1 rewrites every pack
    /// with any dead byte). Repacking reads the pack from its store and
    /// writes the live part back, so it trades transfer for space.
    #[serde(default = "d_repack_below")]
    pub repack_below: f64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            repack_below: d_repack_below(),
        }
    }
}

fn d_repack_below() -> f64 {
    0.5
}

/// Bounds on what is read from a store (see [`crate::core::limits`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest manifest read from a store; a larger one counts as hostile or
    /// corrupt on that store. 64 MiB holds about a million chunks.
    #[serde(default = "d_manifest_size", deserialize_with = "size")]
    pub manifest_size: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            manifest_size: d_manifest_size(),
        }
    }
}

fn d_manifest_size() -> u64 {
    crate::core::limits::DEFAULT_MANIFEST_SIZE
}

/// Whose tags a host accepts (see [`crate::core::sign`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Public keys (`ed25519:<hex>`). When any is set, only tags and boot
    /// profiles signed by one of them are used.
    #[serde(default)]
    pub keys: Vec<crate::core::key::PublicKey>,
    /// Secret key file (`vmifs keygen`) the mount daemon signs the boot
    /// profiles it publishes with (`mount.auto_profiles`).
    #[serde(default)]
    pub profile_key: Option<PathBuf>,
}

/// The locks that keep `push` and `gc` apart (see [`crate::repo`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// A lock not renewed for this long belongs to a process that died. Its
    /// holder renews it every eighth of this and stops (push: before it
    /// publishes; gc: before it deletes) when it could not renew it for half.
    #[serde(default = "d_lease", deserialize_with = "duration")]
    pub lease: Duration,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig { lease: d_lease() }
    }
}

fn d_lease() -> Duration {
    DEFAULT_LEASE
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
    /// `file:///path`, `http://host:port[/prefix]`, `https://…`, `s3://bucket[/prefix]`,
    /// `gs://bucket[/prefix]`, `az://container[/prefix]`.
    pub url: String,
    /// S3: endpoint URL of an S3-compatible server (else AWS); GCS: base URL
    /// of an emulator (else Google's); Azure: the account's blob URL (else
    /// `https://ACCOUNT.blob.core.windows.net`; Azurite: `http://host:port/ACCOUNT`).
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
    /// S3: static credentials (else from the environment). A config holding
    /// them should be readable by its owner only.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// GCS: a service-account key file (else `$GOOGLE_APPLICATION_CREDENTIALS`,
    /// `$GOOGLE_SERVICE_ACCOUNT`…).
    #[serde(default)]
    pub service_account: Option<PathBuf>,
    /// Azure: the storage account (else `$AZURE_STORAGE_ACCOUNT_NAME`).
    #[serde(default)]
    pub account: Option<String>,
    /// Azure: the account's access key (else `$AZURE_STORAGE_ACCOUNT_KEY`…).
    /// A config holding it should be readable by its owner only.
    #[serde(default)]
    pub access_key: Option<Secret>,
    /// http(s)://: bearer token sent to `vmifs serve --tokens` (or `token_file`).
    #[serde(default)]
    pub token: Option<Secret>,
    /// http(s)://: file holding the bearer token (first line).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// https://: PEM file of extra CAs to trust (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// https://: PEM client certificate for mutual TLS (with `client_key`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// https://: PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Send credentials over plain http:// to a host other than loopback.
    #[serde(default)]
    pub allow_plain_http: bool,
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
    /// Verified chunks (three quarters) and pieces (one quarter) kept in the
    /// mount daemon's memory, most recently used, beside the disk cache.
    #[serde(default = "d_cache_memory", deserialize_with = "size")]
    pub memory: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: d_cache_dir(),
            max_size: d_cache_max(),
            memory: d_cache_memory(),
        }
    }
}

fn d_cache_memory() -> u64 {
    64 << 20
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
    /// Largest read-ahead window, in chunks, of a sequential reader (it starts
    /// at one chunk and doubles while the reader keeps up).
    #[serde(default = "d_window")]
    pub readahead_chunks: usize,
    /// Status socket (default: `<cache dir>/vmifs.sock`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Files readable only by this group (mode 0440), e.g. the group QEMU runs
    /// as; needs `allow_other` for users other than the daemon's own.
    #[serde(default)]
    pub group: Option<String>,
    /// On the first open of an image, prefetch its boot profile.
    #[serde(default = "d_true")]
    pub boot_profiles: bool,
    /// Open an image whose every chunk is cached with FUSE passthrough: the
    /// kernel reads the cache's file directly (Linux ≥ 6.9; ignored where
    /// the kernel does not offer it).
    #[serde(default = "d_true")]
    pub passthrough: bool,
    /// On the first open of an image whose data fits in `hydrate_share` of
    /// the cache, fetch all of it in the background, paced against each
    /// store's latency so that reads are never slowed (see
    /// [`crate::store::pace`]).
    #[serde(default)]
    pub hydrate: bool,
    /// Largest share of `cache.max_size` an image's data (its non-zero
    /// chunks) may take to be hydrated: above 0, at most 1.
    #[serde(default = "d_hydrate_share")]
    pub hydrate_share: f64,
    /// When an image opened here has no boot profile, record its first
    /// reads for `profile_window` and publish them as its profile (with
    /// `[trust] keys`, signed by `[trust] profile_key`).
    #[serde(default = "d_true")]
    pub auto_profiles: bool,
    /// How long after an image's first read automatic profiles record.
    #[serde(default = "d_profile_window", deserialize_with = "duration")]
    pub profile_window: Duration,
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
            group: None,
            boot_profiles: true,
            passthrough: true,
            hydrate: false,
            hydrate_share: d_hydrate_share(),
            auto_profiles: true,
            profile_window: d_profile_window(),
        }
    }
}

fn d_hydrate_share() -> f64 {
    0.5
}
fn d_profile_window() -> Duration {
    Duration::from_secs(60)
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
    /// Whether the config itself holds credentials (S3 or Azure keys, a
    /// password in a URL).
    pub fn holds_secrets(&self) -> bool {
        self.stores.iter().any(|s| {
            s.secret_access_key.is_some()
                || s.access_key.is_some()
                || s.token.is_some()
                || redact_url(&s.url) != s.url
        })
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
        crate::core::erasure::Codec::new(e.data, e.parity)?;
        use crate::core::limits::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
        if e.chunk_size < MIN_CHUNK_SIZE
            || e.chunk_size > MAX_CHUNK_SIZE
            || e.chunk_size % MIN_CHUNK_SIZE != 0
        {
            return Err(Error::Config(format!(
                "erasure.chunk_size {} must be a multiple of 4KiB between 4KiB and 64MiB",
                e.chunk_size
            )));
        }
        let p = &self.push;
        if !(1..=crate::core::manifest::VERSION).contains(&p.format) {
            return Err(Error::Config(format!(
                "push.format {} must be 1 or 2",
                p.format
            )));
        }
        if !(1 << 20..=256 << 20).contains(&p.pack_size) {
            return Err(Error::Config(format!(
                "push.pack_size {} must be between 1MiB and 256MiB (the largest object vmifs serve takes)",
                p.pack_size
            )));
        }
        if !(0.0..=1.0).contains(&self.gc.repack_below) {
            return Err(Error::Config(format!(
                "gc.repack_below {} must be between 0 and 1 (a share of a pack's size)",
                self.gc.repack_below
            )));
        }
        let peers = &self.peers;
        if peers.listen.is_some() != peers.site.is_some() {
            return Err(Error::Config(
                "peers.listen and peers.site go together: set both to share chunks with a site, or neither"
                    .into(),
            ));
        }
        if peers.lease < Duration::from_secs(1) || peers.budget > Duration::from_secs(60) {
            return Err(Error::Config(format!(
                "peers.lease {:?} must be at least 1s and peers.budget {:?} at most 60s",
                peers.lease, peers.budget
            )));
        }
        if self.limits.manifest_size < 4096 {
            return Err(Error::Config(format!(
                "limits.manifest_size {} must be at least 4KiB",
                self.limits.manifest_size
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
            let location = location::scheme_of(&s.url)
                .map_err(|m| Error::Config(format!("store {}: {}", s.name, redact_url(&m))))?;
            let s3 = matches!(location, Location::S3 { .. });
            if s.access_key_id.is_some() != s.secret_access_key.is_some()
                || (!s3 && s.access_key_id.is_some())
            {
                return Err(Error::Config(format!(
                    "store {}: access_key_id and secret_access_key go together, on s3:// stores only",
                    s.name
                )));
            }
            let gcs = matches!(location, Location::Gcs { .. });
            let azure = matches!(location, Location::Azure { .. });
            if !gcs && s.service_account.is_some() {
                return Err(Error::Config(format!(
                    "store {}: service_account is for gs:// stores only",
                    s.name
                )));
            }
            if !azure && (s.account.is_some() || s.access_key.is_some()) {
                return Err(Error::Config(format!(
                    "store {}: account and access_key are for az:// stores only",
                    s.name
                )));
            }
            if !(s3 || gcs || azure) && s.endpoint.is_some() {
                return Err(Error::Config(format!(
                    "store {}: endpoint is for s3://, gs:// and az:// stores only",
                    s.name
                )));
            }
            credentials::check(s, &location).map_err(Error::Config)?;
            if s.concurrency == 0 {
                return Err(Error::Config(format!(
                    "store {}: concurrency must be >= 1",
                    s.name
                )));
            }
        }
        let share = self.mount.hydrate_share;
        if !(share > 0.0 && share <= 1.0) {
            return Err(Error::Config(format!(
                "mount.hydrate_share {share} must be above 0 and at most 1 (a share of cache.max_size)"
            )));
        }
        if self.mount.profile_window < Duration::from_secs(1) {
            return Err(Error::Config(
                "mount.profile_window must be at least 1s".into(),
            ));
        }
        if self.locks.lease < Duration::from_secs(5) {
            return Err(Error::Config("locks.lease must be at least 5s".into()));
        }
        if self.cache.max_size < 16 << 20 {
            return Err(Error::Config(
                "cache.max_size must be at least 16MiB".into(),
            ));
        }
        if !(4 << 20..=64 << 30).contains(&self.cache.memory) {
            return Err(Error::Config(
                "cache.memory must be between 4MiB and 64GiB".into(),
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
    fn inline_keys_are_checked_and_never_shown() {
        let base = "[[store]]\nname = \"a\"\n";
        let c = Config::parse(&format!(
            "{base}url = \"s3://b\"\naccess_key_id = \"AK\"\nsecret_access_key = \"SK\"\n"
        ))
        .unwrap();
        assert!(c.holds_secrets());
        assert!(!format!("{c:?}").contains("SK"));
        assert!(
            Config::parse(&format!("{base}url = \"https://u:p@h\"\n"))
                .unwrap()
                .holds_secrets()
        );
        assert!(
            !Config::parse(&format!("{base}url = \"http://h\"\n"))
                .unwrap()
                .holds_secrets()
        );
        assert!(
            Config::parse(&format!(
                "{base}url = \"az://c\"\naccount = \"acct\"\naccess_key = \"AZKEY\"\n"
            ))
            .unwrap()
            .holds_secrets()
        );
        let e = Config::parse(&format!(
            "{base}url = \"s3://b\"\naccount = \"acct\"\naccess_key = \"AZKEY\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("az:// stores only") && !e.contains("AZKEY"),
            "{e}"
        );
        for bad in [
            "url = \"s3://b\"\naccess_key_id = \"AK\"\n",
            "url = \"http://h\"\naccess_key_id = \"AK\"\nsecret_access_key = \"SK\"\n",
        ] {
            let e = Config::parse(&format!("{base}{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("go together") && !e.contains("SK"), "{e}");
        }
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
            memory = "16MiB"
            [mount]
            prefetch = "open"
            hydrate = true
            hydrate_share = 0.25
            auto_profiles = false
            profile_window = "30s"
            [trust]
            profile_key = "/etc/vmifs/host.key"
            [locks]
            lease = "2m"
            [metrics]
            listen = "127.0.0.1:9100"
            "#,
        )
        .unwrap();
        assert_eq!(c.stores.len(), 2);
        assert_eq!(c.stores[1].timeout, Duration::from_secs(2));
        assert_eq!(c.cache.max_size, 1 << 30);
        assert_eq!(c.cache.memory, 16 << 20);
        assert_eq!(Config::parse("").unwrap().cache.memory, 64 << 20);
        assert_eq!(c.mount.prefetch, Prefetch::Open);
        assert!(c.mount.hydrate && !c.mount.auto_profiles);
        assert_eq!(c.mount.hydrate_share, 0.25);
        assert_eq!(c.mount.profile_window, Duration::from_secs(30));
        assert!(c.trust.profile_key.is_some());
        let d = Config::parse("").unwrap().mount;
        assert!(!d.hydrate && d.auto_profiles && d.hydrate_share == 0.5);
        assert_eq!(c.locks.lease, Duration::from_secs(120));
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(Config::parse("").unwrap().locks.lease, DEFAULT_LEASE);
        assert_eq!(Config::parse("").unwrap().metrics.listen, None);
    }

    #[test]
    fn a_site_is_joined_with_listen_and_site() {
        let id = "ab".repeat(32);
        let c = Config::parse(&format!(
            "[peers]\nlisten = \"10.77.0.11:7070\"\nsite = \"dc1\"\nhosts = [\"{id}@10.77.0.12:7070\"]\nallow = [\"{id}\"]\nbudget = \"500ms\""
        ))
        .unwrap();
        assert_eq!(c.peers.listen, Some("10.77.0.11:7070".parse().unwrap()));
        assert_eq!(c.peers.site.as_ref().unwrap().as_str(), "dc1");
        assert_eq!(c.peers.hosts[0].addr, "10.77.0.12:7070".parse().unwrap());
        assert_eq!(c.peers.hosts[0].host.to_string(), id);
        assert_eq!(c.peers.allow, vec![c.peers.hosts[0].host]);
        assert_eq!(c.peers.budget, Duration::from_millis(500));
        assert_eq!(c.peers.lease, Duration::from_secs(30));
        // Off by default.
        assert_eq!(Config::parse("").unwrap().peers.listen, None);
    }

    #[test]
    fn bad_configs_say_why() {
        let cases = [
            ("[erasure]\ndata = 0", "erasure"),
            ("[erasure]\nchunk_size = \"3KiB\"", "chunk_size"),
            ("[push]\nformat = 3", "push.format"),
            ("[push]\npack_size = \"4KiB\"", "push.pack_size"),
            ("[gc]\nrepack_below = 1.5", "gc.repack_below"),
            ("[[store]]\nname = \"a\"\nurl = \"ftp://x\"", "ftp"),
            ("[[store]]\nname = \"a\"\nurl = \"gs://\"", "has no bucket"),
            (
                "[[store]]\nname = \"a\"\nurl = \"az:///p\"",
                "has no container",
            ),
            (
                "[[store]]\nname = \"a\"\nurl = \"s3://b\"\nservice_account = \"/k.json\"",
                "gs:// stores only",
            ),
            (
                "[[store]]\nname = \"a\"\nurl = \"file:///a\"\nendpoint = \"http://h\"",
                "endpoint is for",
            ),
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
            ("[cache]\nmemory = \"1MiB\"", "cache.memory"),
            ("[locks]\nlease = \"1s\"", "locks.lease"),
            ("[mount]\nhydrate_share = 0", "mount.hydrate_share"),
            ("[mount]\nhydrate_share = 1.5", "mount.hydrate_share"),
            ("[mount]\nhydrate_share = nan", "mount.hydrate_share"),
            ("[mount]\nhydrate_share = \"half\"", "line 2"),
            ("[mount]\nprofile_window = \"10ms\"", "mount.profile_window"),
            ("[metrics]\nlisten = \"localhost\"", "metrics.listen"),
            ("[metrics]\nlisten = \"[::1]:9100\"\nport = 1", "port"),
            ("[peers]\nsite = \"dc1\"", "go together"),
            (
                "[peers]\nlisten = \"10.0.0.1\"\nsite = \"dc1\"",
                "peers.listen",
            ),
            ("[peers]\nhosts = [\"10.0.0.2:7070\"]", "peers.hosts"),
            ("[peers]\nhosts = [\"ab@10.0.0.2:7070\"]", "NODE_ID@IP:PORT"),
            ("[peers]\nallow = [\"nope\"]", "line 2"),
            ("[peers]\nlease = \"100ms\"", "peers.lease"),
            ("[peers]\nbudget = \"2m\"", "peers.budget"),
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
