//! A store behind an HTTP endpoint (`http(s)://host[:port][/prefix]`), spoken to
//! with the protocol of `vmifs serve` (see [`crate::serve`]): object `K` lives at
//! `<base>/K`; `GET` (with `Range`), `HEAD`, `PUT`, `DELETE`, and
//! `GET <base>/?list&prefix=P` answering JSON pages that the client follows.
//!
//! `get_range` and `head` also work against plain static web servers: a server
//! that ignores `Range` and answers `200` with the whole object gets its body
//! sliced here.
//!
//! `get_bounded` never holds more than its bound: the announced length is
//! checked first and the body is counted while it streams.
//!
//! Status codes map to [`ErrorKind`]s: 404/410 → `NotFound`; 5xx (but 507,
//! the store is full), 408, 429 and network trouble → `Temporary`; other 4xx
//! and 507 → `Permanent`. A 416 on a range
//! read means the range starts at or after the end: an empty result, as the
//! [`Store`] contract clamps ranges.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, LAST_MODIFIED, RANGE};

use super::{ErrorKind, ObjectMeta, Store, StoreError, check_key, clamp_range};
use crate::wire::date::parse_http_date;
use crate::wire::encoding::{decode, encode_path};
use crate::wire::listing::{ListPage, MAX_PAGE_BYTES, PAGE, list_path, parse_page};
use crate::wire::range::{parse_content_range, range_header};

/// An HTTP object store; one connection pool per store.
#[derive(Debug)]
pub struct HttpStore {
    name: String,
    /// Base URL without a trailing `/`, and without credentials.
    base: String,
    client: reqwest::Client,
    /// Basic-auth user and password, from `http://user:password@host…`.
    auth: Option<(String, crate::core::secret::Secret)>,
    /// Bearer token for `vmifs serve --tokens`.
    token: Option<crate::core::secret::Secret>,
}

/// Credentials and TLS settings of an HTTP store (from its `[[store]]` entry).
#[derive(Debug, Default)]
pub struct HttpOptions {
    /// Sent as `Authorization: Bearer TOKEN`.
    pub token: Option<crate::core::secret::Secret>,
    /// PEM certificates of extra CAs to trust.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and its key, concatenated (mutual TLS).
    pub identity_pem: Option<crate::core::secret::Secret>,
}

impl HttpStore {
    /// A store at `base_url` (`http://host:port[/prefix]` or `https://…`).
    /// Credentials in the URL (`http://user:password@host`) are sent as HTTP
    /// basic auth and never appear in messages.
    pub fn new(name: &str, base_url: &str) -> Result<Self, StoreError> {
        Self::with_options(name, base_url, HttpOptions::default())
    }

    /// Like [`HttpStore::new`], with a bearer token and TLS settings.
    pub fn with_options(name: &str, base_url: &str, opts: HttpOptions) -> Result<Self, StoreError> {
        let perm = |m: String| StoreError::new(ErrorKind::Permanent, name, m);
        let parsed = reqwest::Url::parse(base_url.trim_end_matches('/'));
        // From here on only the redacted form appears in messages.
        let shown = crate::core::secret::redact_url(base_url);
        let base_url = shown.as_str();
        let mut url = parsed.map_err(|e| perm(format!("bad URL {base_url:?}: {e}")))?;
        let decode = |s: &str| {
            decode(s)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    perm(format!(
                        "bad percent-encoding in the credentials of {base_url:?}"
                    ))
                })
        };
        let auth = if !url.username().is_empty() || url.password().is_some() {
            Some((
                decode(url.username())?,
                crate::core::secret::Secret(decode(url.password().unwrap_or(""))?),
            ))
        } else {
            None
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let base = url.as_str().trim_end_matches('/').to_string();
        if !matches!(url.scheme(), "http" | "https") {
            return Err(perm(format!("URL {base_url:?} is not http:// or https://")));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(perm(format!("URL {base_url:?} has no host")));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(perm(format!(
                "URL {base_url:?} must not have a query or fragment"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("vmifs/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &opts.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| perm("ca_file holds no readable PEM certificate".into()))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let Some(pem) = &opts.identity_pem {
            let id = reqwest::Identity::from_pem(pem.0.as_bytes()).map_err(|_| {
                perm("client_cert/client_key: not a readable PEM certificate and key".into())
            })?;
            builder = builder.identity(id);
        }
        let client = builder
            .build()
            .map_err(|e| perm(format!("HTTP client: {}", chain(&e))))?;
        Ok(HttpStore {
            name: name.to_string(),
            base,
            client,
            auth,
            token: opts.token,
        })
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn err(&self, kind: ErrorKind, msg: String) -> StoreError {
        StoreError::new(kind, &self.name, msg)
    }

    fn url(&self, key: &str) -> Result<String, StoreError> {
        check_key(&self.name, key)?;
        Ok(format!("{}/{}", self.base, encode_path(key)))
    }

    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, StoreError> {
        let req = match (&self.token, &self.auth) {
            (Some(t), _) => req.bearer_auth(&t.0),
            (None, Some((user, pass))) => req.basic_auth(user, Some(&pass.0)),
            (None, None) => req,
        };
        req.send().await.map_err(|e| self.net_err(what, e))
    }

    fn net_err(&self, what: &str, e: reqwest::Error) -> StoreError {
        let kind = if e.is_builder() {
            ErrorKind::Permanent
        } else {
            ErrorKind::Temporary
        };
        self.err(kind, format!("{what}: {}", chain(&e)))
    }

    /// The error for an unexpected status, with the start of the body.
    async fn status_err(&self, what: &str, resp: reqwest::Response) -> StoreError {
        let status = resp.status();
        let kind = kind_of(status);
        let mut resp = resp;
        let detail = match resp.chunk().await {
            Ok(Some(b)) => {
                let text = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
                let line = text.lines().next().unwrap_or("").trim().to_string();
                if line.is_empty() {
                    String::new()
                } else {
                    format!(": {line}")
                }
            }
            _ => String::new(),
        };
        let detail = match status.as_u16() {
            401 => " (token missing or refused)".to_string(),
            403 => " (token may not do this)".to_string(),
            _ => detail,
        };
        self.err(kind, format!("{what}: HTTP {status}{detail}"))
    }

    async fn body(&self, what: &str, resp: reqwest::Response) -> Result<Bytes, StoreError> {
        resp.bytes().await.map_err(|e| self.net_err(what, e))
    }

    /// The first `limit` bytes of a body (all of it if shorter); the rest is
    /// never read.
    async fn body_prefix(
        &self,
        what: &str,
        resp: reqwest::Response,
        limit: u64,
    ) -> Result<Bytes, StoreError> {
        use futures::StreamExt;
        let cap = resp
            .content_length()
            .unwrap_or(limit)
            .min(limit)
            .min(64 << 20);
        let mut out = bytes::BytesMut::with_capacity(cap as usize);
        let mut body = resp.bytes_stream();
        while (out.len() as u64) < limit {
            match body.next().await {
                Some(piece) => {
                    let piece = piece.map_err(|e| self.net_err(what, e))?;
                    let room = (limit - out.len() as u64) as usize;
                    out.extend_from_slice(&piece[..piece.len().min(room)]);
                }
                None => break,
            }
        }
        Ok(out.freeze())
    }
}

/// The error kind a non-success status stands for.
fn kind_of(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        404 | 410 => ErrorKind::NotFound,
        408 | 429 => ErrorKind::Temporary,
        // The store is full: retrying soon will not help.
        507 => ErrorKind::Permanent,
        s if s >= 500 => ErrorKind::Temporary,
        _ => ErrorKind::Permanent,
    }
}

/// An error with its chain of causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[async_trait]
impl Store for HttpStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get_range(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let url = self.url(key)?;
        let mut req = self.client.get(&url);
        if let Some(r) = &range {
            if r.start >= r.end {
                // Nothing to read, but a missing object must still be NotFound.
                return self.head(key).await.map(|_| Bytes::new());
            }
            req = req.header(RANGE, range_header(r));
        }
        let resp = self.send(key, req).await?;
        match resp.status() {
            StatusCode::OK => {
                // Whole object: a plain server ignoring `Range`, or no range
                // asked. With a range, nothing past its end is read.
                let body = match &range {
                    None => self.body(key, resp).await?,
                    Some(r) => self.body_prefix(key, resp, r.end).await?,
                };
                let r = clamp_range(range, body.len() as u64);
                Ok(body.slice(r.start as usize..r.end as usize))
            }
            StatusCode::PARTIAL_CONTENT => {
                let Some(r) = range else {
                    return Err(self.err(
                        ErrorKind::Permanent,
                        format!("{key}: 206 to a request without Range"),
                    ));
                };
                let start = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range)
                    .map(|(a, _)| a);
                if let Some(a) = start.filter(|&a| a != r.start) {
                    return Err(self.err(
                        ErrorKind::Permanent,
                        format!(
                            "{key}: asked for bytes from {}, server sent from {a}",
                            r.start
                        ),
                    ));
                }
                // A server that sends more than the range is cut off there.
                self.body_prefix(key, resp, r.end - r.start).await
            }
            StatusCode::RANGE_NOT_SATISFIABLE if range.is_some() => Ok(Bytes::new()),
            _ => Err(self.status_err(key, resp).await),
        }
    }

    /// Asks for the whole object (a plain server may ignore `Range`), refuses
    /// an announced `Content-Length` over `max` before reading any of the
    /// body, and counts the body's bytes as they arrive: a server that lies
    /// about the length or sends no length is cut off after `max` bytes.
    async fn get_bounded(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        let url = self.url(key)?;
        let resp = self.send(key, self.client.get(&url)).await?;
        if resp.status() != StatusCode::OK {
            return Err(self.status_err(key, resp).await);
        }
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(StoreError::too_large(&self.name, key, max));
        }
        super::collect_bounded(&self.name, key, max, resp.bytes_stream(), |e| {
            self.net_err(key, e)
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let url = self.url(key)?;
        let resp = self.send(key, self.client.put(&url).body(data)).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.status_err(key, resp).await)
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let url = self.url(key)?;
        let resp = self.send(key, self.client.head(&url)).await?;
        if !resp.status().is_success() {
            return Err(self.status_err(key, resp).await);
        }
        let h = resp.headers();
        // Not `resp.content_length()`: that is the (empty) body's length for HEAD.
        let size = h
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                self.err(
                    ErrorKind::Permanent,
                    format!("{key}: HEAD answer has no Content-Length"),
                )
            })?;
        let modified = h
            .get(LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            modified,
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let url = self.url(key)?;
        let resp = self.send(key, self.client.delete(&url)).await?;
        let status = resp.status();
        if status.is_success() || kind_of(status) == ErrorKind::NotFound {
            Ok(())
        } else {
            Err(self.status_err(key, resp).await)
        }
    }

    /// Follows the pages of the listing ([`crate::wire::listing`]), each
    /// read with a bound. A page must move forward: a server whose `next`
    /// does not sort after the last one asked, or whose listing runs past
    /// [`crate::core::limits::MAX_LISTING`] objects, is refused.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let what = format!("list {prefix:?}");
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list_page(&what, prefix, after.as_deref()).await?;
            out.extend(
                page.entries
                    .into_iter()
                    .filter(|e| e.key.starts_with(prefix))
                    .filter(|e| after.as_deref().is_none_or(|a| e.key.as_str() > a))
                    .map(|e| ObjectMeta {
                        modified: e.modified(),
                        key: e.key,
                        size: e.size,
                    }),
            );
            if out.len() > crate::core::limits::MAX_LISTING {
                return Err(self.err(
                    ErrorKind::Permanent,
                    format!(
                        "{what}: more than {} objects",
                        crate::core::limits::MAX_LISTING
                    ),
                ));
            }
            match page.next {
                None => return Ok(out),
                Some(n) if after.as_deref().is_some_and(|a| n.as_str() <= a) => {
                    return Err(self.err(
                        ErrorKind::Permanent,
                        format!("{what}: the server's next page {n:?} does not move forward"),
                    ));
                }
                Some(n) => after = Some(n),
            }
        }
    }
}

impl HttpStore {
    async fn list_page(
        &self,
        what: &str,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        let url = format!("{}{}", self.base, list_path(prefix, after, PAGE));
        let resp = self.send(what, self.client.get(&url)).await?;
        if !resp.status().is_success() {
            let mut e = self.status_err(what, resp).await;
            if e.kind == ErrorKind::NotFound {
                // Listing an empty prefix is not an error: the server cannot list.
                e.kind = ErrorKind::Permanent;
                e.message
                    .push_str(" (listing needs a `vmifs serve` endpoint)");
            }
            return Err(e);
        }
        if resp.content_length().is_some_and(|n| n > MAX_PAGE_BYTES) {
            return Err(StoreError::too_large(&self.name, what, MAX_PAGE_BYTES));
        }
        let body =
            super::collect_bounded(&self.name, what, MAX_PAGE_BYTES, resp.bytes_stream(), |e| {
                self.net_err(what, e)
            })
            .await?;
        parse_page(&body).map_err(|e| {
            self.err(
                ErrorKind::Permanent,
                format!(
                    "{what}: answer is not a vmifs listing ({e}); is this a `vmifs serve` endpoint?"
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credentials in the URL go out as basic auth and nowhere else: not in
    /// the base URL, `Debug`, or an error message.
    #[tokio::test]
    async fn url_credentials_become_basic_auth_and_stay_out_of_messages() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let n = conn.read(&mut buf).unwrap();
            conn.write_all(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).to_lowercase()
        });
        let s = HttpStore::new(
            "h",
            &format!("http://op%40x:pa%3Ass-word@127.0.0.1:{port}/p"),
        )
        .unwrap();
        assert_eq!(s.base_url(), format!("http://127.0.0.1:{port}/p"));
        assert!(!format!("{s:?}").contains("ss-word"), "{s:?}");
        let e = crate::store::StoreExt::get(&s, "k")
            .await
            .unwrap_err()
            .to_string();
        let request = server.join().unwrap();
        // base64("op@x:pa:ss-word")
        assert!(
            request.contains("authorization: basic b3baedpwytpzcy13b3jk"),
            "{request}"
        );
        assert!(!e.contains("pa:ss") && !e.contains("pa%3Ass"), "{e}");
        let e = HttpStore::new("h", "http://u:topsecret@")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn bad_urls() {
        assert!(HttpStore::new("h", "ftp://x").is_err());
        assert!(HttpStore::new("h", "http://").is_err());
        assert!(HttpStore::new("h", "http://h:1/p?q").is_err());
        let s = HttpStore::new("h", "http://h:1/p/").unwrap();
        assert_eq!(s.base_url(), "http://h:1/p");
    }
}
