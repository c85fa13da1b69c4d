//! The credential and TLS options of a `[[store]]` entry, checked together:
//! `token` / `token_file` (a bearer token for `vmifs serve --tokens`),
//! `ca_file` (a private CA), `client_cert` + `client_key` (mutual TLS) and
//! `allow_plain_http`.
//!
//! A credential (a token, or a password in the URL) is never sent in clear
//! text across a network by accident: over plain `http://` to a host other
//! than loopback it is refused unless `allow_plain_http = true`.

use super::{Location, StoreConfig};
use crate::core::secret::redact_url;

/// Whether `url`'s host is a loopback name or address.
fn loopback_host(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The credential options of `s` make sense for where it points.
pub(super) fn check(s: &StoreConfig, location: &Location) -> Result<(), String> {
    let name = &s.name;
    let http = matches!(location, Location::Http(_));
    let https = s.url.starts_with("https://");
    if s.token.is_some() && s.token_file.is_some() {
        return Err(format!("store {name}: give token or token_file, not both"));
    }
    if !http && (s.token.is_some() || s.token_file.is_some()) {
        return Err(format!(
            "store {name}: token and token_file are for http(s):// stores"
        ));
    }
    if s.client_cert.is_some() != s.client_key.is_some() {
        return Err(format!(
            "store {name}: client_cert and client_key go together"
        ));
    }
    if !https && (s.ca_file.is_some() || s.client_cert.is_some()) {
        return Err(format!(
            "store {name}: ca_file, client_cert and client_key are for https:// stores"
        ));
    }
    let credential = s.token.is_some() || s.token_file.is_some() || redact_url(&s.url) != s.url;
    if http && !https && credential && !s.allow_plain_http && !loopback_host(&s.url) {
        return Err(format!(
            "store {name}: refusing to send a credential over plain http:// to {}; use https:// (or allow_plain_http = true)",
            redact_url(&s.url)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for u in [
            "http://127.0.0.1:9001",
            "http://localhost/x",
            "http://[::1]:80",
            "http://u:p@127.0.0.2:1",
        ] {
            assert!(loopback_host(u), "{u}");
        }
        for u in [
            "http://10.0.0.1:9001",
            "http://example.org",
            "http://127.0.0.1.example.org",
            "http://[::2]:1",
        ] {
            assert!(!loopback_host(u), "{u}");
        }
    }
}
