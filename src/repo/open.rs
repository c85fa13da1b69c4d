//! Opening the stores a configuration names: the one place that turns a
//! `[[store]]` entry into a [`DynStore`] with its standard layers. It sits
//! above the stores (they know nothing of the configuration).

use std::sync::Arc;

use crate::config::{Location, StoreConfig, scheme_of};
use crate::core::secret::Secret;
use crate::store::limit::Slots;
use crate::store::{
    DynStore, ErrorKind, StoreError, StoreOptions, azure, file, gcs, http, layer_with_slots, s3,
};

/// The store `cfg` names, with its retry, concurrency-limit and time-out
/// layers: `Retry(Limit(Timeout(base)))`, so queueing for a slot does not
/// count against the time-out and back-off sleeps hold no slot.
pub fn store(cfg: &StoreConfig) -> Result<DynStore, StoreError> {
    Ok(store_with_slots(cfg)?.0)
}

/// [`store`], and the request slots of its limit layer.
pub fn store_with_slots(cfg: &StoreConfig) -> Result<(DynStore, Arc<Slots>), StoreError> {
    let base = base(cfg)?;
    Ok(layer_with_slots(
        base,
        &StoreOptions {
            timeout: cfg.timeout,
            retries: cfg.retries,
            concurrency: cfg.concurrency,
            reserved: StoreOptions::reserve_for(cfg.concurrency),
        },
    ))
}

/// The bare store for a configuration, without wrappers.
pub fn base(cfg: &StoreConfig) -> Result<DynStore, StoreError> {
    let perm = |m: String| StoreError::new(ErrorKind::Permanent, &cfg.name, m);
    Ok(match scheme_of(&cfg.url).map_err(perm)? {
        Location::File(p) => Arc::new(Arc::new(file::FileStore::open(&cfg.name, p, cfg.fsync)?)),
        Location::Http(url) => Arc::new(http::HttpStore::with_options(
            &cfg.name,
            &url,
            http_options(cfg).map_err(perm)?,
        )?),
        Location::S3 { bucket, prefix } => match (&cfg.access_key_id, &cfg.secret_access_key) {
            (Some(id), Some(secret)) => Arc::new(s3::S3Store::with_keys(
                &cfg.name,
                &bucket,
                &prefix,
                cfg.endpoint.as_deref(),
                cfg.region.as_deref(),
                id,
                &secret.0,
            )?),
            _ => Arc::new(s3::S3Store::new(
                &cfg.name,
                &bucket,
                &prefix,
                cfg.endpoint.as_deref(),
                cfg.region.as_deref(),
            )?),
        },
        Location::Gcs { bucket, prefix } => Arc::new(gcs::GcsStore::new(
            &cfg.name,
            &bucket,
            &prefix,
            cfg.endpoint.as_deref(),
            cfg.service_account.as_deref(),
        )?),
        Location::Azure { container, prefix } => Arc::new(azure::AzureStore::new(
            &cfg.name,
            &container,
            &prefix,
            cfg.endpoint.as_deref(),
            cfg.account.as_deref(),
            cfg.access_key.as_ref().map(|k| k.0.as_str()),
        )?),
    })
}

/// The token and TLS files of an HTTP store's entry, read now so that a
/// missing file is one clear error at open.
fn http_options(cfg: &StoreConfig) -> Result<http::HttpOptions, String> {
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {what} {}: {e}", p.display()))
    };
    let token = match (&cfg.token, &cfg.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(p)) => {
            let text = read("token_file", p)?;
            let line = text.lines().next().unwrap_or("").trim().to_string();
            if line.is_empty() {
                return Err(format!("token_file {} is empty", p.display()));
            }
            Some(Secret(line))
        }
        (None, None) => None,
    };
    let ca_pem = match &cfg.ca_file {
        Some(p) => Some(read("ca_file", p)?.into_bytes()),
        None => None,
    };
    let identity_pem = match (&cfg.client_cert, &cfg.client_key) {
        (Some(c), Some(k)) => Some(Secret(format!(
            "{}\n{}",
            read("client_cert", c)?,
            read("client_key", k)?
        ))),
        _ => None,
    };
    Ok(http::HttpOptions {
        token,
        ca_pem,
        identity_pem,
    })
}
