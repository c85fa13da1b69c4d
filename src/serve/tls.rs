//! TLS for `vmifs serve --tls-cert FILE --tls-key FILE [--client-ca FILE]`.
//!
//! rustls with the aws-lc-rs provider (the one the HTTP client already
//! links), TLS 1.2 and 1.3, ALPN `http/1.1` (the server speaks HTTP/1.1
//! only). The certificate file holds the server certificate first, then any
//! intermediates; the key file one PKCS#8, PKCS#1 or SEC1 private key. With
//! `--client-ca`, the handshake requires a client certificate signed by one
//! of the CAs in that file (mutual TLS): a client without one is refused
//! before any HTTP is spoken.
//!
//! The PEM parsing ([`crate::wire::pem`]) is re-exported for the fuzz target
//! `tls_pem`. Its errors never quote the input (a key file is a secret).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Error;
use crate::wire::pem::provider;
pub use crate::wire::pem::{certs_from_pem, key_from_pem};

/// The certificate files of a TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM: the server certificate, then intermediates.
    pub cert: PathBuf,
    /// PEM: the private key of `cert`.
    pub key: PathBuf,
    /// PEM: CAs a client certificate must be signed by; `None` = no client
    /// certificates.
    pub client_ca: Option<PathBuf>,
}

/// A server configuration from PEM texts: certificate chain, key, and the
/// CAs of client certificates (mutual TLS) when given.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<rustls::ServerConfig, String> {
    let certs = certs_from_pem(cert_pem).map_err(|e| format!("certificate: {e}"))?;
    let key = key_from_pem(key_pem).map_err(|e| format!("key: {e}"))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certs_from_pem(pem).map_err(|e| format!("client CA: {e}"))? {
                roots
                    .add(ca)
                    .map_err(|e| format!("client CA: unusable certificate ({e})"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit ({e})"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(format!("cannot read {what} {}", path.display()), e))
}

/// The acceptor for `opts`: the files read and checked now, so a bad file
/// stops the server before it listens.
pub(super) fn acceptor(opts: &TlsOptions) -> Result<tokio_rustls::TlsAcceptor, Error> {
    let cert = read("TLS certificate", &opts.cert)?;
    let key = read("TLS key", &opts.key)?;
    let ca = match &opts.client_ca {
        Some(p) => Some(read("client CA file", p)?),
        None => None,
    };
    let config = server_config(&cert, &key, ca.as_deref()).map_err(|e| {
        Error::Config(format!(
            "TLS ({}, {}): {e}",
            opts.cert.display(),
            opts.key.display()
        ))
    })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_certificate_is_a_clear_error() {
        let e = server_config(b"", b"", None).unwrap_err();
        assert!(e.starts_with("certificate:"), "{e}");
    }
}
