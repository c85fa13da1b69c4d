//! PEM certificates and keys, and the one TLS crypto provider, for both
//! ends of the HTTP store protocol: `vmifs serve --tls-cert/--tls-key`
//! ([`crate::serve`]) and a client's `ca_file`, `client_cert` and
//! `client_key` ([`crate::store::http`]).
//!
//! Errors never quote the input (a key file is a secret).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Every certificate in `pem`; an error when there is none or one is broken.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certs)
}

/// The first private key in `pem`.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in it".to_string(),
        _ => "not a readable PEM private key".to_string(),
    })
}

/// rustls's aws-lc-rs provider, the one both ends use.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pem_is_a_clear_error() {
        assert!(
            certs_from_pem(b"")
                .unwrap_err()
                .contains("no PEM certificate")
        );
        assert!(certs_from_pem(b"-----BEGIN CERTIFICATE-----\n!!!\n").is_err());
        let secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n";
        let e = key_from_pem(secret).unwrap_err();
        assert!(!e.contains("c2VjcmV0"), "{e}");
        assert!(
            key_from_pem(b"nothing")
                .unwrap_err()
                .contains("no PEM private key")
        );
    }
}
