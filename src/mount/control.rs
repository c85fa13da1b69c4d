//! The mount daemon's control socket: the requests it takes, the answers it
//! gives, the server loop the daemon runs and the client the command line and
//! the tests use. Both sides share these types, so a field renamed on one side
//! is a parse error on the other, never a silent zero.
//!
//! Wire format: one request per connection. The client writes one line, the
//! server answers one line of JSON and closes.
//! - A request line is a [`Request`] as JSON (`"status"`,
//!   `{"profile":{"image":"debian:12","window_ms":60000}}`), or the same in
//!   words for a person at a shell: `status` (or an empty line) and
//!   `profile <name[:tag] | image-id> <window-ms>`.
//! - The answer is a [`Response`] as JSON: `{"status":{...}}` with the
//!   [`Status`] document, `{"profile":{...}}` with the boot profile recorded so
//!   far, or `{"error":"..."}`.
//!
//! The server reads at most [`MAX_REQUEST`] bytes of a request and waits at
//! most [`READ_TIMEOUT`] for it; whatever arrived by then is the request.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::cache::CacheUsage;
use crate::config::Config;
use crate::core::profile::Profile;
use crate::fetch::stats::StoreSnapshot;
use crate::mount::image::ImageStats;

/// The longest request the server reads, in bytes.
pub const MAX_REQUEST: u64 = 4096;
/// How long the server waits for a request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the client waits for an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One request to the mount daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The [`Status`] document.
    Status,
    /// The boot profile recorded so far for `image` (`name[:tag]` as the
    /// mount shows it, or an image id): the chunks first read within
    /// `window_ms` of its first read.
    Profile { image: String, window_ms: u64 },
}

/// The daemon's answer to one [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Status(Box<Status>),
    Profile(Box<Profile>),
    Error(String),
}

/// The status document: what `vmifs status` prints and `--json` shows as is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub mountpoint: PathBuf,
    /// One entry per tag the mount shows.
    pub images: Vec<ImageStatus>,
    pub stores: Vec<StoreSnapshot>,
    pub chunks_fetched: u64,
    /// Data shards fetched and served alone (a small read inside one).
    pub pieces_fetched: u64,
    pub degraded_reads: u64,
    pub cache: CacheUsage,
    pub open_files: usize,
    /// Of those, files the kernel reads straight from the disk cache
    /// (FUSE passthrough).
    #[serde(default)]
    pub passthrough_files: usize,
    /// Boot profiles read from the stores and refused: for another image,
    /// unreadable, or (with `[trust] keys`) not signed by a trusted key.
    #[serde(default)]
    pub profiles_refused: u64,
    /// This host's peers (`[peers]`), when chunk sharing is on.
    #[serde(default)]
    pub site: Option<crate::peers::node::SiteStatus>,
}

/// One tag of the mount and the figures of the version it points at. In
/// JSON the figures sit beside `name` and `tag`, in one flat object.
#[derive(Debug, Clone, Serialize)]
pub struct ImageStatus {
    pub name: String,
    pub tag: String,
    #[serde(flatten)]
    pub stats: ImageStats,
}

// By hand, because serde's `flatten` cannot refuse unknown fields: `name` and
// `tag` are taken out, and the rest must be exactly an `ImageStats`.
impl<'de> Deserialize<'de> for ImageStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::deserialize(d)?;
        let mut take = |key: &'static str| match map.remove(key) {
            Some(serde_json::Value::String(s)) => Ok(s),
            Some(other) => Err(D::Error::custom(format!(
                "{key}: expected a string, got {other}"
            ))),
            None => Err(D::Error::missing_field(key)),
        };
        let name = take("name")?;
        let tag = take("tag")?;
        let stats =
            ImageStats::deserialize(serde_json::Value::Object(map)).map_err(D::Error::custom)?;
        Ok(ImageStatus { name, tag, stats })
    }
}

impl Request {
    /// A request line: JSON, or the words form (see the module docs).
    pub fn parse(line: &str) -> Result<Request, String> {
        let line = line.trim();
        if line.starts_with(['{', '"']) {
            return serde_json::from_str(line).map_err(|e| format!("bad request {line:?}: {e}"));
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] | ["status"] => Ok(Request::Status),
            ["profile", image, window_ms] => Ok(Request::Profile {
                image: image.to_string(),
                window_ms: window_ms
                    .parse()
                    .map_err(|_| format!("bad window {window_ms:?}"))?,
            }),
            _ => Err(format!("unknown request {line:?}")),
        }
    }
}

/// What answers requests: the daemon.
pub trait Handler: Send + Sync + 'static {
    fn answer(&self, request: Request) -> Response;
}

/// Where the control socket lives: `mount.socket`, else `vmifs.sock` in the
/// cache directory.
pub fn socket_path(cfg: &Config) -> PathBuf {
    cfg.mount
        .socket
        .clone()
        .unwrap_or_else(|| cfg.cache.dir.join("vmifs.sock"))
}

/// Listen at `path`, replacing a socket file a previous daemon left there.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    UnixListener::bind(path)
}

/// Answer connections on `listener` with `handler` until the listener fails;
/// each connection in its own task.
pub async fn serve<H: Handler>(listener: UnixListener, handler: Arc<H>) {
    while let Ok((conn, _)) = listener.accept().await {
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = answer_one(conn, &*handler).await;
        });
    }
}

async fn answer_one<H: Handler>(conn: UnixStream, handler: &H) -> std::io::Result<()> {
    let (rd, mut wr) = conn.into_split();
    let mut line = String::new();
    let mut rd = tokio::io::BufReader::new(rd.take(MAX_REQUEST));
    let _ = tokio::time::timeout(READ_TIMEOUT, rd.read_line(&mut line)).await;
    let response = match Request::parse(&line) {
        Ok(request) => handler.answer(request),
        Err(e) => Response::Error(e),
    };
    let mut body = serde_json::to_vec(&response)
        .unwrap_or_else(|e| serde_json::to_vec(&Response::Error(e.to_string())).unwrap());
    body.push(b'\n');
    wr.write_all(&body).await?;
    wr.shutdown().await
}

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the mount daemon at {} (is `vmifs mount` running?)", socket.display())]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount daemon at {}", socket.display())]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad answer from the mount daemon at {}", socket.display())]
    BadAnswer {
        socket: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("mount daemon: {0}")]
    Daemon(String),
    #[error("mount daemon answered {got} to a {asked} request")]
    Unexpected {
        asked: &'static str,
        got: &'static str,
    },
}

/// Send one request to the daemon listening at `socket` and read its answer.
/// Blocking. An [`Response::Error`] is returned as an answer, not an error.
pub fn query(socket: &Path, request: &Request) -> Result<Response, ControlError> {
    let io = |source| ControlError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|source| {
        ControlError::Unreachable {
            socket: socket.to_path_buf(),
            source,
        }
    })?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request).expect("a request always serializes");
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    s.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(io)?;
    serde_json::from_slice(&buf).map_err(|source| ControlError::BadAnswer {
        socket: socket.to_path_buf(),
        source,
    })
}

/// The status document of the daemon at `socket`.
pub fn status(socket: &Path) -> Result<Status, ControlError> {
    match query(socket, &Request::Status)? {
        Response::Status(st) => Ok(*st),
        other => Err(unexpected("status", other)),
    }
}

/// The boot profile the daemon at `socket` has recorded so far for `image`.
pub fn profile(socket: &Path, image: &str, window: Duration) -> Result<Profile, ControlError> {
    let request = Request::Profile {
        image: image.to_string(),
        window_ms: window.as_millis().min(u64::MAX as u128) as u64,
    };
    match query(socket, &request)? {
        Response::Profile(p) => Ok(*p),
        other => Err(unexpected("profile", other)),
    }
}

fn unexpected(asked: &'static str, got: Response) -> ControlError {
    match got {
        Response::Error(e) => ControlError::Daemon(e),
        Response::Status(_) => ControlError::Unexpected {
            asked,
            got: "status",
        },
        Response::Profile(_) => ControlError::Unexpected {
            asked,
            got: "profile",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::id::ImageId;

    #[test]
    fn requests_parse_as_json_or_words() {
        let profile = |image: &str, window_ms| {
            Ok(Request::Profile {
                image: image.to_string(),
                window_ms,
            })
        };
        let cases: Vec<(&str, Result<Request, ()>)> = vec![
            ("", Ok(Request::Status)),
            ("\n", Ok(Request::Status)),
            ("status", Ok(Request::Status)),
            ("  status \n", Ok(Request::Status)),
            ("\"status\"", Ok(Request::Status)),
            ("profile deb:12 60000", profile("deb:12", 60000)),
            (
                r#"{"profile":{"image":"deb:12","window_ms":5}}"#,
                profile("deb:12", 5),
            ),
            ("profile deb:12", Err(())),
            ("profile deb:12 soon", Err(())),
            ("profile deb:12 -1", Err(())),
            ("status now", Err(())),
            ("stats", Err(())),
            ("\"stats\"", Err(())),
            (r#"{"profile":{"image":"deb:12"}}"#, Err(())),
            (
                r#"{"profile":{"image":"deb:12","window_ms":5,"x":1}}"#,
                Err(()),
            ),
            ("{", Err(())),
        ];
        for (line, want) in cases {
            assert_eq!(Request::parse(line).map_err(|_| ()), want, "{line:?}");
        }
        // What the client sends is what the server reads.
        for r in [Request::Status, profile("a:b", 7).unwrap()] {
            assert_eq!(Request::parse(&serde_json::to_string(&r).unwrap()), Ok(r));
        }
    }

    fn sample_status() -> Status {
        Status {
            mountpoint: "/var/lib/vmi".into(),
            images: vec![ImageStatus {
                name: "deb".into(),
                tag: "12".into(),
                stats: ImageStats {
                    id: ImageId::of(b"an image"),
                    size: 1 << 30,
                    reads: 3,
                    bytes_read: 4 << 20,
                    bytes_fetched: 5 << 20,
                    bytes_from_cache: 0,
                    bytes_from_peers: 0,
                    bytes_cached: 5 << 20,
                    profile_chunks: 0,
                    traced_chunks: 20,
                    prefetched_chunks: 0,
                    data_bytes: 600 << 20,
                    hydration: crate::mount::image::Hydration::Running,
                    hydrated_ms: None,
                    profile_published: true,
                },
            }],
            stores: vec![],
            chunks_fetched: 20,
            pieces_fetched: 3,
            degraded_reads: 1,
            cache: CacheUsage {
                dir: "/var/cache/vmifs".into(),
                used_bytes: 5 << 20,
                max_bytes: 20 << 30,
                chunks: 20,
                hits: 2,
                misses: 20,
                corrupt_dropped: 0,
                evictions: 0,
            },
            open_files: 1,
            passthrough_files: 0,
            site: None,
            profiles_refused: 0,
        }
    }

    #[test]
    fn the_status_document_is_flat_and_strict() {
        let st = sample_status();
        let mut v = serde_json::to_value(&st).unwrap();
        // Image figures sit beside name and tag (scripts read them there).
        assert_eq!(v["images"][0]["name"], "deb");
        assert_eq!(v["images"][0]["bytes_fetched"], 5 << 20);
        let back: Status = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), v);

        // A renamed, unknown or missing field anywhere is an error, not a zero.
        type Edit = (&'static str, fn(&mut serde_json::Value));
        let edits: Vec<Edit> = vec![
            ("unknown top", |v| v["extra"] = 1.into()),
            ("unknown image", |v| v["images"][0]["extra"] = 1.into()),
            ("missing image", |v| {
                v["images"][0].as_object_mut().unwrap().remove("reads");
            }),
            ("missing name", |v| {
                v["images"][0].as_object_mut().unwrap().remove("name");
            }),
            ("name not a string", |v| v["images"][0]["name"] = 1.into()),
            ("renamed cache", |v| {
                let c = v["cache"].as_object_mut().unwrap();
                let hits = c.remove("hits").unwrap();
                c.insert("cache_hits".into(), hits);
            }),
            ("unknown store", |v| {
                v["stores"] = serde_json::json!([{
                    "name": "a", "requests": 1, "errors": 0, "corrupt_shards": 0,
                    "hedges": 0, "bytes": 1, "latency_ms": 1.5, "demoted": false, "x": 0
                }]);
            }),
        ];
        for (what, edit) in edits {
            let mut bad = v.clone();
            edit(&mut bad);
            assert!(serde_json::from_value::<Status>(bad).is_err(), "{what}");
        }
        // A complete store entry parses.
        v["stores"] = serde_json::json!([{
            "name": "a", "requests": 1, "errors": 0, "corrupt_shards": 0,
            "hedges": 0, "bytes": 1, "latency_ms": 1.5, "demoted": false
        }]);
        assert_eq!(
            serde_json::from_value::<Status>(v).unwrap().stores[0].requests,
            1
        );
    }

    struct Echo;

    impl Handler for Echo {
        fn answer(&self, request: Request) -> Response {
            match request {
                Request::Status => Response::Status(Box::new(sample_status())),
                Request::Profile { image, window_ms } => {
                    Response::Error(format!("no {image} in {window_ms}"))
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_and_server_speak_over_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run/vmifs.sock");
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        std::fs::write(&sock, b"stale").unwrap();
        let listener = bind(&sock).unwrap();
        tokio::spawn(serve(listener, Arc::new(Echo)));
        let s = sock.clone();
        tokio::task::spawn_blocking(move || {
            let st = status(&s).unwrap();
            assert_eq!(st.images[0].stats.bytes_cached, 5 << 20);
            let e = profile(&s, "deb:12", Duration::from_secs(3)).unwrap_err();
            assert_eq!(e.to_string(), "mount daemon: no deb:12 in 3000");

            // Words, as a person would type them; and an oversized request.
            use std::os::unix::net::UnixStream;
            let ask = |body: &[u8]| -> std::io::Result<Response> {
                let mut c = UnixStream::connect(&s)?;
                c.write_all(body)?;
                c.shutdown(std::net::Shutdown::Write)?;
                let mut out = String::new();
                c.read_to_string(&mut out)?;
                assert!(out.ends_with('\n'), "{out:?}");
                Ok(serde_json::from_str::<Response>(&out).unwrap())
            };
            assert!(matches!(ask(b"status\n"), Ok(Response::Status(_))));
            // The server reads no further than the cap and answers an error,
            // which the kernel may discard with the unread rest (a reset).
            let big = format!("profile {} 1\n", "x".repeat(MAX_REQUEST as usize));
            match ask(big.as_bytes()) {
                Ok(r) => assert!(matches!(r, Response::Error(_)), "{r:?}"),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
            }
            assert!(matches!(ask(b"status"), Ok(Response::Status(_))));
        })
        .await
        .unwrap();

        let gone = dir.path().join("nobody.sock");
        let e = status(&gone).unwrap_err();
        assert!(matches!(e, ControlError::Unreachable { .. }), "{e}");
    }
}
