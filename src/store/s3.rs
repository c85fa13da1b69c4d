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
//! The store itself is a [`CloudStore`]: keys under `prefix/`, error mapping,
//! bounded and range reads, listing, and multipart uploads of objects over
//! [`MULTIPART_OVER`] (packs) live there. Credentials never appear in `Debug`
//! output or in error messages.

use std::fmt;
use std::sync::Arc;

use object_store::RetryConfig;
use object_store::StaticCredentialProvider;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};

use super::object::{CloudStore, check_prefix, env_set, forward_store, redact};
pub use super::object::{MULTIPART_OVER, PART_SIZE, PARTS_IN_FLIGHT};
use super::{ErrorKind, StoreError};

/// A store on an S3-compatible bucket.
pub struct S3Store(CloudStore, Described);

/// What `Debug` shows of an [`S3Store`] besides its [`CloudStore`].
struct Described {
    bucket: String,
    endpoint: Option<String>,
    region: String,
}

forward_store!(S3Store);

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("store", &self.0)
            .field("bucket", &self.1.bucket)
            .field("endpoint", &self.1.endpoint)
            .field("region", &self.1.region)
            .finish()
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
        let has = env_set;
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
        let prefix = check_prefix(name, "S3", prefix)?;

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
        let store = CloudStore::new(name, "S3", &prefix, Arc::new(client), true, secrets)?;
        Ok(S3Store(
            store,
            Described {
                bucket: bucket.to_string(),
                endpoint: endpoint.map(str::to_string),
                region,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = s.0.err(
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
