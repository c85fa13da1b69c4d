//! The PEM files of `vmifs serve --tls-cert/--tls-key/--client-ca`
//! (`vmifs::serve::tls`) on arbitrary bytes: no panic in the certificate,
//! key or server-configuration parsing; every error is one line; and a key
//! error never quotes the input (a key file is a secret).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmifs::serve::tls::{certs_from_pem, key_from_pem, server_config};

fn one_line(e: &str) {
    assert!(!e.contains('\n'), "two lines: {e:?}");
}

fn check(e: &str, data: &[u8]) {
    one_line(e);
    if let Ok(text) = std::str::from_utf8(data) {
        for word in text.split_ascii_whitespace().filter(|w| w.len() >= 12) {
            assert!(!e.contains(word), "the error quotes the input: {e:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Err(e) = certs_from_pem(data) {
        one_line(&e);
    }
    if let Err(e) = key_from_pem(data) {
        check(&e, data);
    }
    // The same bytes as certificate, key and client CA at once.
    let half = data.len() / 2;
    if let Err(e) = server_config(&data[..half], &data[half..], Some(data)) {
        one_line(&e);
    }
});
