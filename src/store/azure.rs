//! A store on an Azure Blob Storage container (`az://container/prefix`), or
//! on the Azurite emulator (`endpoint = "http://127.0.0.1:10000/devstoreaccount1"`:
//! the account comes first in the path there, as Azurite expects).
//!
//! Built on `object_store`'s Azure client with the client's own retries
//! switched off (the [`Retry`](super::retry::Retry) layer above decides); the
//! store itself is a [`CloudStore`] (prefix, error mapping, bounded and range
//! reads, listing, and multipart uploads — staged blocks — of objects over
//! [`MULTIPART_OVER`](super::object::MULTIPART_OVER)). The account and its
//! key come from the configuration or from what `object_store` reads in the
//! environment: `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
//! `AZURE_STORAGE_SAS_KEY`, `AZURE_STORAGE_TOKEN`, a service principal
//! (`AZURE_STORAGE_CLIENT_ID` / `_CLIENT_SECRET` / `_TENANT_ID`), or
//! `AZURE_STORAGE_USE_EMULATOR=true` (Azurite's well-known account at
//! `$AZURITE_BLOB_STORAGE_URL`, default `http://127.0.0.1:10000`). Without
//! a credential the store refuses to open rather than ask the cloud
//! instance-metadata server, unless `VMIFS_AZURE_INSTANCE_CREDENTIALS=1`.
//! Credentials never appear in `Debug` output or in error messages. The
//! Azure client's listing leaves out a blob named exactly like the listed
//! prefix, so such a listing adds it with a HEAD.

use std::fmt;
use std::sync::Arc;

use object_store::RetryConfig;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};

use super::object::{CloudStore, check_prefix, forward_store, redact};
use super::{ErrorKind, StoreError};

/// A store on an Azure Blob container.
pub struct AzureStore(CloudStore, Described);

/// What `Debug` shows of an [`AzureStore`] besides its [`CloudStore`].
struct Described {
    account: Option<String>,
    container: String,
    endpoint: Option<String>,
}

forward_store!(AzureStore);

impl fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureStore")
            .field("store", &self.0)
            .field("account", &self.1.account)
            .field("container", &self.1.container)
            .field("endpoint", &self.1.endpoint)
            .finish()
    }
}

fn truthy(v: Option<String>) -> bool {
    v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"))
}

impl AzureStore {
    /// A store on `container` (under `prefix/` when non-empty). `endpoint`
    /// replaces the account's blob URL (`http://` is allowed); `account` and
    /// `access_key` replace those of the environment.
    pub fn new(
        name: &str,
        container: &str,
        prefix: &str,
        endpoint: Option<&str>,
        account: Option<&str>,
        access_key: Option<&str>,
    ) -> Result<Self, StoreError> {
        let prefix = check_prefix(name, "Azure", prefix)?;
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_container_name(container)
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            });
        if let Some(ep) = endpoint {
            builder = builder
                .with_endpoint(ep.trim_end_matches('/').to_string())
                .with_allow_http(ep.starts_with("http://"));
        }
        if let Some(a) = account {
            builder = builder.with_account(a);
        }
        if let Some(k) = access_key {
            builder = builder.with_access_key(k);
        }
        let value = |k: AzureConfigKey| builder.get_config_value(&k).filter(|v| !v.is_empty());
        let emulator = truthy(value(AzureConfigKey::UseEmulator));
        let credential = emulator
            || [
                AzureConfigKey::AccessKey,
                AzureConfigKey::SasKey,
                AzureConfigKey::Token,
                AzureConfigKey::ClientSecret,
                AzureConfigKey::FederatedTokenFile,
            ]
            .into_iter()
            .any(|k| value(k).is_some())
            || truthy(value(AzureConfigKey::UseAzureCli))
            || std::env::var("VMIFS_AZURE_INSTANCE_CREDENTIALS").is_ok_and(|v| v == "1");
        if !credential {
            return Err(StoreError::new(
                ErrorKind::Permanent,
                name,
                "no Azure credentials: set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY \
                 (or account and access_key in the store's config; or VMIFS_AZURE_INSTANCE_CREDENTIALS=1 \
                 to use the cloud instance's identity)",
            ));
        }
        if !emulator && value(AzureConfigKey::AccountName).is_none() {
            return Err(StoreError::new(
                ErrorKind::Permanent,
                name,
                "no Azure storage account: set AZURE_STORAGE_ACCOUNT_NAME or account in the store's config",
            ));
        }
        let secrets: Vec<String> = [
            AzureConfigKey::AccessKey,
            AzureConfigKey::SasKey,
            AzureConfigKey::Token,
            AzureConfigKey::ClientSecret,
        ]
        .into_iter()
        .filter_map(value)
        .collect();
        let account = value(AzureConfigKey::AccountName);
        let client = builder.build().map_err(|e| {
            let msg = format!("configuration: {}", redact(&secrets, &e.to_string()));
            StoreError::new(ErrorKind::Permanent, name, msg)
        })?;
        let store = CloudStore::new(name, "Azure", &prefix, Arc::new(client), true, secrets)?
            .list_omits_exact_prefix();
        Ok(AzureStore(
            store,
            Described {
                account,
                container: container.to_string(),
                endpoint: endpoint.map(str::to_string),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "VkVSWVNFQ1JFVFNFQ1JFVEtFWQ==";

    #[test]
    fn debug_and_errors_hide_the_key() {
        let s = AzureStore::new(
            "az",
            "container",
            "pre/fix",
            Some("http://127.0.0.1:1/acct"),
            Some("acct"),
            Some(KEY),
        )
        .unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains(KEY), "{d}");
        assert!(d.contains("pre/fix") && d.contains("acct"), "{d}");
        let e =
            s.0.err(ErrorKind::Permanent, "k", &format!("denied for {KEY}"));
        assert!(!e.to_string().contains(KEY), "{e}");
        assert!(AzureStore::new("az", "c", "../x", None, Some("a"), Some(KEY)).is_err());
        // A key that is not base64 is a configuration error that does not echo it.
        let e = AzureStore::new(
            "az",
            "c",
            "",
            None,
            Some("a"),
            Some("not base64 SECRETVALUE!"),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
    }
}
