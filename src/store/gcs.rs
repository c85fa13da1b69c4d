//! A store on a Google Cloud Storage bucket (`gs://bucket/prefix`), or on a
//! GCS emulator such as fake-gcs-server (`endpoint = "http://127.0.0.1:4443"`).
//!
//! Built on `object_store`'s GCS client with the client's own retries switched
//! off (the [`Retry`](super::retry::Retry) layer above decides); the store
//! itself is a [`CloudStore`] (prefix, error mapping, bounded and range reads,
//! listing). Credentials are what `object_store` reads from the environment —
//! `GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_SERVICE_ACCOUNT_PATH` (a service-account
//! key file), `GOOGLE_SERVICE_ACCOUNT_KEY` (the key itself),
//! `GOOGLE_APPLICATION_CREDENTIALS`, `GOOGLE_BEARER_TOKEN` — or a key file
//! named in the configuration. Without any of them the store refuses to open
//! rather than ask the cloud instance-metadata server, unless
//! `VMIFS_GCS_INSTANCE_CREDENTIALS=1`. A key file may hold `"disable_oauth":
//! true` (for emulators, which take any request) and a `gcs_base_url`.
//!
//! Every object is written with one PUT: GCS takes single uploads of up to
//! 5 TiB (packs are at most 256 MiB), and its multipart uploads (the XML API)
//! are not implemented by the emulators the tests can run. Credentials never
//! appear in `Debug` output or in error messages.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use object_store::RetryConfig;
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};

use super::object::{CloudStore, check_prefix, env_set, forward_store, redact};
use super::{ErrorKind, StoreError};

/// A store on a GCS bucket.
pub struct GcsStore(CloudStore, Described);

/// What `Debug` shows of a [`GcsStore`] besides its [`CloudStore`].
struct Described {
    bucket: String,
    endpoint: Option<String>,
}

forward_store!(GcsStore);

impl fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsStore")
            .field("store", &self.0)
            .field("bucket", &self.1.bucket)
            .field("endpoint", &self.1.endpoint)
            .finish()
    }
}

impl GcsStore {
    /// A store on `bucket` (under `prefix/` when non-empty). `endpoint`
    /// replaces the GCS base URL (an emulator; `http://` is allowed).
    /// `service_account` is a service-account key file; without it the
    /// credentials come from the environment.
    pub fn new(
        name: &str,
        bucket: &str,
        prefix: &str,
        endpoint: Option<&str>,
        service_account: Option<&Path>,
    ) -> Result<Self, StoreError> {
        let prefix = check_prefix(name, "GCS", prefix)?;
        let mut builder = GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            });
        if let Some(ep) = endpoint {
            builder = builder.with_base_url(ep.trim_end_matches('/'));
        }
        if let Some(p) = service_account {
            builder = builder.with_service_account_path(p.to_string_lossy());
        }
        let configured = [
            GoogleConfigKey::ServiceAccount,
            GoogleConfigKey::ServiceAccountKey,
            GoogleConfigKey::ApplicationCredentials,
            GoogleConfigKey::BearerToken,
        ]
        .iter()
        .any(|k| builder.get_config_value(k).is_some_and(|v| !v.is_empty()));
        let instance = std::env::var("VMIFS_GCS_INSTANCE_CREDENTIALS").is_ok_and(|v| v == "1");
        if !configured && !instance && !env_set("SERVICE_ACCOUNT") {
            return Err(StoreError::new(
                ErrorKind::Permanent,
                name,
                "no GCS credentials: set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT \
                 (a service-account key file), or service_account in the store's config \
                 (or VMIFS_GCS_INSTANCE_CREDENTIALS=1 to use the cloud instance's account)",
            ));
        }
        let secrets: Vec<String> = [
            GoogleConfigKey::ServiceAccountKey,
            GoogleConfigKey::BearerToken,
        ]
        .iter()
        .filter_map(|k| builder.get_config_value(k))
        .collect();
        let client = builder.build().map_err(|e| {
            let msg = format!("configuration: {}", redact(&secrets, &e.to_string()));
            StoreError::new(ErrorKind::Permanent, name, msg)
        })?;
        let store = CloudStore::new(name, "GCS", &prefix, Arc::new(client), false, secrets)?;
        Ok(GcsStore(
            store,
            Described {
                bucket: bucket.to_string(),
                endpoint: endpoint.map(str::to_string),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_with_a_key_file_and_hides_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.json");
        std::fs::write(
            &key,
            r#"{"private_key": "VERYSECRETPRIVATEKEY", "private_key_id": "KEYID", "client_email": "a@b", "disable_oauth": true}"#,
        )
        .unwrap();
        let s = GcsStore::new(
            "gcs",
            "bucket",
            "pre/fix",
            Some("http://127.0.0.1:1"),
            Some(&key),
        )
        .unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains("VERYSECRET"), "{d}");
        assert!(d.contains("pre/fix") && d.contains("bucket"), "{d}");
        assert!(GcsStore::new("gcs", "b", "../x", None, Some(&key)).is_err());
        let e =
            GcsStore::new("gcs", "b", "", None, Some(&dir.path().join("none.json"))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    }
}
