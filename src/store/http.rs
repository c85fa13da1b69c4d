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
//! The client is hyper's, HTTP/1.1 over a pool of keep-alive connections per
//! store, TLS by rustls with the system's trust store plus a store's own
//! `ca_file`. Each connection reads into a buffer of at most 64 KiB
//! (`READ_BUFFER`), so the pool's memory is bounded by the requests in
//! flight, not by how fast the link is. Redirects are not followed: a `3xx`
//! is an error like any other unexpected status.
//!
//! Status codes map to [`ErrorKind`]s: 404/410 → `NotFound`; 5xx (but 507,
//! the store is full), 408, 429 and network trouble → `Temporary`; other 4xx
//! and 507 → `Permanent`. A 416 on a range
//! read means the range starts at or after the end: an empty result, as the
//! [`Store`] contract clamps ranges.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, HeaderValue, LAST_MODIFIED, RANGE, USER_AGENT,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{ErrorKind, ObjectMeta, Store, StoreError, check_key, clamp_range};
use crate::wire::date::parse_http_date;
use crate::wire::encoding::{decode, encode_path};
use crate::wire::listing::{ListPage, MAX_PAGE_BYTES, PAGE, list_path, parse_page};
use crate::wire::range::{parse_content_range, range_header};

/// Largest read buffer of one connection. hyper's default (about 400 KiB)
/// is reached within a few reads of a fast link, and every pooled
/// connection keeps it: with 32 requests in flight to each of three stores
/// that was 20 MiB of a mount daemon's memory. 64 KiB reads still move a
/// loopback link's gigabytes per second.
const READ_BUFFER: usize = 64 << 10;
/// Idle connections kept per store, and for how long.
const IDLE_PER_HOST: usize = 64;
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// An HTTP object store; one connection pool per store.
#[derive(Debug)]
pub struct HttpStore {
    name: String,
    /// Base URL without a trailing `/`, and without credentials.
    base: String,
    client: Client<Connector, Full<Bytes>>,
    /// The `Authorization` header sent with every request: basic auth from
    /// `http://user:password@host…`, or `Bearer TOKEN`.
    authorization: Option<HeaderValue>,
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

/// The client's TLS settings: the system's trust store (and its revocation
/// checks) plus the extra CAs of `ca_pem`, and the client certificate of
/// `identity_pem` for mutual TLS. Errors name the setting, never its bytes.
fn tls_config(opts: &HttpOptions) -> Result<rustls::ClientConfig, String> {
    use crate::wire::pem::{certs_from_pem, key_from_pem, provider};
    let verifier = match &opts.ca_pem {
        Some(pem) => rustls_platform_verifier::Verifier::new_with_extra_roots(
            certs_from_pem(pem).map_err(|_| "ca_file holds no readable PEM certificate")?,
            provider(),
        ),
        None => rustls_platform_verifier::Verifier::new(provider()),
    }
    .map_err(|e| format!("the system's certificate store: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    // ALPN (`http/1.1`) is set by the connector.
    Ok(match &opts.identity_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let bad = |_| "client_cert/client_key: not a readable PEM certificate and key";
            let certs = certs_from_pem(pem.0.as_bytes()).map_err(bad)?;
            let key = key_from_pem(pem.0.as_bytes()).map_err(bad)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client_cert/client_key do not fit ({e})"))?
        }
    })
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
        let parsed = url::Url::parse(base_url.trim_end_matches('/'));
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
        let basic = if !url.username().is_empty() || url.password().is_some() {
            use base64::Engine;
            let pair = format!(
                "{}:{}",
                decode(url.username())?,
                decode(url.password().unwrap_or(""))?
            );
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
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
        let authorization = match (&opts.token, basic) {
            (Some(t), _) => Some(format!("Bearer {}", t.0)),
            (None, basic) => basic,
        }
        .map(|v| {
            let mut v = HeaderValue::try_from(v)
                .map_err(|_| perm("the token or credentials are not a valid header".into()))?;
            v.set_sensitive(true);
            Ok::<_, StoreError>(v)
        })
        .transpose()?;
        let tls = tls_config(&opts).map_err(perm)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .http1_max_buf_size(READ_BUFFER)
            .build(connector);
        Ok(HttpStore {
            name: name.to_string(),
            base,
            client,
            authorization,
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

    /// Send `method url` with our headers, `range` and `body`.
    async fn send(
        &self,
        what: &str,
        method: Method,
        url: &str,
        range: Option<&Range<u64>>,
        body: Bytes,
    ) -> Result<Response<Incoming>, StoreError> {
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header(USER_AGENT, concat!("vmifs/", env!("CARGO_PKG_VERSION")));
        if let Some(a) = &self.authorization {
            req = req.header(AUTHORIZATION, a.clone());
        }
        if let Some(r) = range {
            req = req.header(RANGE, range_header(r));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| self.err(ErrorKind::Permanent, format!("{what}: {e}")))?;
        self.client
            .request(req)
            .await
            .map_err(|e| self.err(ErrorKind::Temporary, format!("{what}: {}", chain(&e))))
    }

    /// A plain `GET` of `url`.
    async fn get_url(&self, what: &str, url: &str) -> Result<Response<Incoming>, StoreError> {
        self.send(what, Method::GET, url, None, Bytes::new()).await
    }

    fn body_err(&self, what: &str, e: hyper::Error) -> StoreError {
        self.err(ErrorKind::Temporary, format!("{what}: {}", chain(&e)))
    }

    /// The error for an unexpected status, with the start of the body.
    async fn status_err(&self, what: &str, resp: Response<Incoming>) -> StoreError {
        let status = resp.status();
        let kind = kind_of(status);
        let first = resp.into_body().frame().await;
        let detail = match first.and_then(|f| f.ok()).and_then(|f| f.into_data().ok()) {
            Some(b) => {
                let text = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
                let line = text.lines().next().unwrap_or("").trim().to_string();
                if line.is_empty() {
                    String::new()
                } else {
                    format!(": {line}")
                }
            }
            None => String::new(),
        };
        let detail = match status.as_u16() {
            401 => " (token missing or refused)".to_string(),
            403 => " (token may not do this)".to_string(),
            _ => detail,
        };
        self.err(kind, format!("{what}: HTTP {status}{detail}"))
    }

    async fn body(&self, what: &str, resp: Response<Incoming>) -> Result<Bytes, StoreError> {
        Ok(resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.body_err(what, e))?
            .to_bytes())
    }

    /// The first `limit` bytes of a body (all of it if shorter); the rest is
    /// never read.
    async fn body_prefix(
        &self,
        what: &str,
        resp: Response<Incoming>,
        limit: u64,
    ) -> Result<Bytes, StoreError> {
        let cap = content_length(&resp)
            .unwrap_or(limit)
            .min(limit)
            .min(64 << 20);
        let mut out = bytes::BytesMut::with_capacity(cap as usize);
        let mut body = resp.into_body();
        while (out.len() as u64) < limit {
            match body.frame().await {
                Some(frame) => {
                    let frame = frame.map_err(|e| self.body_err(what, e))?;
                    if let Ok(piece) = frame.into_data() {
                        let room = (limit - out.len() as u64) as usize;
                        out.extend_from_slice(&piece[..piece.len().min(room)]);
                    }
                }
                None => break,
            }
        }
        Ok(out.freeze())
    }

    /// The whole body, refused past `max` bytes (announced or counted).
    async fn body_bounded(
        &self,
        what: &str,
        resp: Response<Incoming>,
        max: u64,
    ) -> Result<Bytes, StoreError> {
        if content_length(&resp).is_some_and(|n| n > max) {
            return Err(StoreError::too_large(&self.name, what, max));
        }
        let body = BodyDataStream::new(resp.into_body());
        super::collect_bounded(&self.name, what, max, body, |e| self.body_err(what, e)).await
    }
}

/// The announced `Content-Length` of an answer.
fn content_length(resp: &Response<Incoming>) -> Option<u64> {
    resp.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
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
        if let Some(r) = &range
            && r.start >= r.end
        {
            // Nothing to read, but a missing object must still be NotFound.
            return self.head(key).await.map(|_| Bytes::new());
        }
        let resp = self
            .send(key, Method::GET, &url, range.as_ref(), Bytes::new())
            .await?;
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
        let resp = self.get_url(key, &url).await?;
        if resp.status() != StatusCode::OK {
            return Err(self.status_err(key, resp).await);
        }
        self.body_bounded(key, resp, max).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let url = self.url(key)?;
        let resp = self.send(key, Method::PUT, &url, None, data).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.status_err(key, resp).await)
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let url = self.url(key)?;
        let resp = self
            .send(key, Method::HEAD, &url, None, Bytes::new())
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_err(key, resp).await);
        }
        let h = resp.headers();
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
        let resp = self
            .send(key, Method::DELETE, &url, None, Bytes::new())
            .await?;
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
        let resp = self.get_url(what, &url).await?;
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
        let body = self.body_bounded(what, resp, MAX_PAGE_BYTES).await?;
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
