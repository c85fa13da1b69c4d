//! A store on an S3-compatible bucket (`s3://bucket/prefix`): AWS S3, Garage,
//! MinIO, Ceph RGW, s3s-fs…
//!
//! Built on `object_store`'s S3 client with path-style addressing (what
//! self-hosted servers expect) and with the client's own retries switched off:
//! the [`Retry`](super::retry::Retry) layer above decides. Credentials come from
//! the standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//! `AWS_SESSION_TOKEN` variables (or [`S3Store::with_keys`]); the region from
//! the configuration, else `$AWS_REGION`, else `us-east-1`.
//!
//! Keys live under `prefix/` when a prefix is configured. Errors are mapped to
//! [`ErrorKind`]s: 404 → `NotFound`; network trouble, 5xx, 408 and 429 →
//! `Temporary`; refused credentials, other 4xx and bad paths → `Permanent`.
//! Credentials never appear in `Debug` output or in error messages.
//! `get_bounded` refuses an object whose announced size is over the bound
//! and counts the body as it streams. Objects over [`MULTIPART_OVER`] (packs)
//! are written as multipart uploads.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    RetryConfig, StaticCredentialProvider,
};

use super::{ErrorKind, ObjectMeta, Store, StoreError, check_key};

/// Objects larger than this (packs) go up as multipart uploads, in parts of
/// [`PART_SIZE`], [`PARTS_IN_FLIGHT`] at a time: a failed part is retried
/// alone, not the whole object, and parts travel in parallel.
pub const MULTIPART_OVER: usize = 16 << 20;
/// The size of each part but the last (S3 needs at least 5 MiB, and some
/// servers equal sizes).
pub const PART_SIZE: usize = 8 << 20;
pub const PARTS_IN_FLIGHT: usize = 4;

pub struct S3Store {
    name: String,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    region: String,
    client: AmazonS3,
    /// Credential strings scrubbed from every error message.
    secrets: Vec<String>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("name", &self.name)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A store on `bucket` (under `prefix/` when non-empty), with credentials
    /// from the environment. `endpoint` selects an S3-compatible server
    /// (`http://` is allowed); without it, AWS.
    pub fn new(
        name: &str,
        bucket: &str,
        prefix: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Self, StoreError> {
        // Without credentials in the environment the S3 client would ask the
        // cloud instance-metadata endpoint (a link-local address) for them; a
        // host that is not a cloud VM must get a clear error instead.
        let has = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
        let env_keys = has("AWS_ACCESS_KEY_ID") && has("AWS_SECRET_ACCESS_KEY");
        let other_source = has("AWS_WEB_IDENTITY_TOKEN_FILE")
            || has("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            || has("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            || std::env::var("VMIFS_S3_INSTANCE_CREDENTIALS").is_ok_and(|v| v == "1");
        if !env_keys && !other_source {
            return Err(StoreError::new(
                ErrorKind::Permanent,
                name,
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                 (or VMIFS_S3_INSTANCE_CREDENTIALS=1 to use the cloud instance's role)",
            ));
        }
        Self::build(name, bucket, prefix, endpoint, region, None)
    }

    /// Like [`S3Store::new`] but with the given static access key and secret
    /// instead of the environment's credentials.
    pub fn with_keys(
        name: &str,
        bucket: &str,
        prefix: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<Self, StoreError> {
        let cred = AwsCredential {
            key_id: access_key_id.to_string(),
            secret_key: secret_access_key.to_string(),
            token: None,
        };
        Self::build(name, bucket, prefix, endpoint, region, Some(cred))
    }

    fn build(
        name: &str,
        bucket: &str,
        prefix: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        cred: Option<AwsCredential>,
    ) -> Result<Self, StoreError> {
        let region = region
            .map(str::to_string)
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
            .unwrap_or_else(|| "us-east-1".to_string());
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            check_key(name, &prefix).map_err(|_| {
                StoreError::new(
                    ErrorKind::Permanent,
                    name,
                    format!("invalid S3 prefix {prefix:?}"),
                )
            })?;
        }

        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&region)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            });
        if let Some(ep) = endpoint {
            builder = builder.with_endpoint(ep);
            if ep.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        let mut secrets = Vec::new();
        match cred {
            Some(c) => {
                secrets.extend([c.key_id.clone(), c.secret_key.clone()]);
                builder = builder.with_credentials(Arc::new(StaticCredentialProvider::new(c)));
            }
            None => {
                for k in [
                    AmazonS3ConfigKey::AccessKeyId,
                    AmazonS3ConfigKey::SecretAccessKey,
                    AmazonS3ConfigKey::Token,
                ] {
                    secrets.extend(builder.get_config_value(&k));
                }
            }
        }
        // Very short strings would redact ordinary words; real keys are long.
        secrets.retain(|s| s.len() >= 4);

        let client = builder.build().map_err(|e| {
            let msg = format!("configuration: {}", redact(&secrets, &e.to_string()));
            StoreError::new(ErrorKind::Permanent, name, msg)
        })?;
        Ok(S3Store {
            name: name.to_string(),
            bucket: bucket.to_string(),
            prefix,
            endpoint: endpoint.map(str::to_string),
            region,
            client,
            secrets,
        })
    }

    /// The object path of `key`, which must be a valid key.
    fn path(&self, key: &str) -> Result<Path, StoreError> {
        check_key(&self.name, key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Path::parse(&full).map_err(|e| self.err(ErrorKind::Permanent, key, &e.to_string()))
    }

    fn err(&self, kind: ErrorKind, what: &str, msg: &str) -> StoreError {
        StoreError::new(
            kind,
            &self.name,
            format!("{what}: {}", redact(&self.secrets, msg)),
        )
    }

    fn map_err(&self, key: &str, e: object_store::Error) -> StoreError {
        self.err(kind_of(&e), key, &e.to_string())
    }

    fn meta(&self, key: String, m: &object_store::ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            key,
            size: m.size,
            modified: Some(SystemTime::from(m.last_modified)),
        }
    }
}

fn redact(secrets: &[String], msg: &str) -> String {
    let mut m = msg.to_string();
    for s in secrets {
        if m.contains(s.as_str()) {
            m = m.replace(s.as_str(), "[REDACTED]");
        }
    }
    m
}

/// The HTTP status an object_store error message reports, if any.
fn status_of(msg: &str) -> Option<u16> {
    let i = msg.find("status code: ")? + "status code: ".len();
    msg.get(i..i + 3)?.parse().ok()
}

fn kind_of(e: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::JoinError { .. } => ErrorKind::Temporary,
        // Network errors, 5xx, throttling and unparsable replies end up here;
        // so do the 4xx statuses object_store has no variant for.
        E::Generic { .. } => {
            let msg = e.to_string();
            match status_of(&msg) {
                Some(408 | 429) => ErrorKind::Temporary,
                Some(s) if (400..500).contains(&s) => ErrorKind::Permanent,
                _ if msg.contains("redirect without LOCATION") => ErrorKind::Permanent,
                _ => ErrorKind::Temporary,
            }
        }
        _ => ErrorKind::Permanent,
    }
}

impl S3Store {
    /// Upload `data` to `path` in parts; nothing is visible until the
    /// upload completes, and a failed upload is aborted (its parts deleted).
    async fn put_multipart(&self, key: &str, path: &Path, data: Bytes) -> Result<(), StoreError> {
        use futures::StreamExt;
        let mut upload = self
            .client
            .put_multipart_opts(path, PutMultipartOptions::default())
            .await
            .map_err(|e| self.map_err(key, e))?;
        let parts: Vec<_> = (0..data.len())
            .step_by(PART_SIZE)
            .map(|at| {
                upload.put_part(PutPayload::from(
                    data.slice(at..(at + PART_SIZE).min(data.len())),
                ))
            })
            .collect();
        let sent = futures::stream::iter(parts)
            .buffer_unordered(PARTS_IN_FLIGHT)
            .fold(Ok(()), |acc, r| async move { acc.and(r) })
            .await;
        let done = match sent {
            Ok(()) => upload.complete().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            if let Err(a) = upload.abort().await {
                tracing::warn!(store = %self.name, key, "aborting a failed multipart upload: {a}");
            }
            return Err(self.map_err(key, e));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for S3Store {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get_range(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let Some(r) = range else {
            let res = self
                .client
                .get_opts(&path, GetOptions::default())
                .await
                .map_err(|e| self.map_err(key, e))?;
            return res.bytes().await.map_err(|e| self.map_err(key, e));
        };
        if r.end <= r.start {
            // Nothing to read, but a missing key must still say so.
            self.head(key).await?;
            return Ok(Bytes::new());
        }
        // Servers parse the end as a signed 64-bit number; beyond that, "to the end".
        let get_range = if r.end > i64::MAX as u64 {
            GetRange::Offset(r.start)
        } else {
            GetRange::Bounded(r.clone())
        };
        let opts = GetOptions::default().with_range(Some(get_range));
        let res = match self.client.get_opts(&path, opts).await {
            Ok(res) => res.bytes().await,
            Err(e) => Err(e),
        };
        match res {
            Ok(b) => Ok(b),
            Err(e) if kind_of(&e) == ErrorKind::NotFound => Err(self.map_err(key, e)),
            Err(e) => {
                // A range starting at or past the end (416 on S3) reads as empty.
                let size = self.head(key).await?.size;
                if r.start >= size {
                    Ok(Bytes::new())
                } else {
                    Err(self.map_err(key, e))
                }
            }
        }
    }

    /// The object's size from the answer's headers is checked before the
    /// body is read, and the body is counted while it streams.
    async fn get_bounded(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let res = self
            .client
            .get_opts(&path, GetOptions::default())
            .await
            .map_err(|e| self.map_err(key, e))?;
        if res.meta.size > max || res.range.end.saturating_sub(res.range.start) > max {
            return Err(StoreError::too_large(&self.name, key, max));
        }
        super::collect_bounded(&self.name, key, max, res.into_stream(), |e| {
            self.map_err(key, e)
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        if data.len() > MULTIPART_OVER {
            return self.put_multipart(key, &path, data).await;
        }
        self.client
            .put_opts(&path, PutPayload::from(data), PutOptions::default())
            .await
            .map_err(|e| self.map_err(key, e))?;
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path(key)?;
        let m = self
            .client
            .head(&path)
            .await
            .map_err(|e| self.map_err(key, e))?;
        Ok(self.meta(key.to_string(), &m))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match self.client.delete(&path).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err(key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let full = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let opts = PaginatedListOptions {
                page_token: token.take(),
                ..PaginatedListOptions::default()
            };
            let page = self
                .client
                .list_paginated((!full.is_empty()).then_some(full.as_str()), opts)
                .await
                .map_err(|e| self.map_err(prefix, e))?;
            for m in &page.result.objects {
                let Some(key) = m.location.as_ref().strip_prefix(strip.as_str()) else {
                    continue;
                };
                if key.starts_with(prefix) && check_key(&self.name, key).is_ok() {
                    out.push(self.meta(key.to_string(), m));
                }
            }
            match page.page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            status_of(
                "Generic S3 error: ... - Server returned non-2xx status code: 416 Range Not Satisfiable: x"
            ),
            Some(416)
        );
        assert_eq!(status_of("connection refused"), None);
    }

    #[test]
    fn debug_hides_credentials() {
        let s = S3Store::with_keys(
            "s3",
            "bucket",
            "pre/fix",
            Some("http://127.0.0.1:1"),
            Some("us-east-1"),
            "AKIDEXAMPLEKEY",
            "VERYSECRETSECRET",
        )
        .unwrap();
        let d = format!("{s:?}");
        assert!(
            !d.contains("AKIDEXAMPLEKEY") && !d.contains("VERYSECRETSECRET"),
            "{d}"
        );
        assert!(d.contains("pre/fix"), "{d}");
        let e = s.err(
            ErrorKind::Permanent,
            "k",
            "denied for AKIDEXAMPLEKEY / VERYSECRETSECRET",
        );
        assert!(
            !e.to_string().contains("SECRET") && !e.to_string().contains("AKID"),
            "{e}"
        );
        assert!(S3Store::new("s3", "b", "../x", None, None).is_err());
    }
}
