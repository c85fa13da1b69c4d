//! `vmifs serve`: a directory as an HTTP store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

fn duration(s: &str) -> Result<Duration, String> {
    vmifs::core::units::parse_duration(s)
}

fn size(s: &str) -> Result<u64, String> {
    vmifs::core::units::parse_size(s)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory holding the objects (created if missing).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Address to listen on. Anything but loopback needs --tokens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Append one line per request to FILE.
    #[arg(long, value_name = "FILE")]
    access_log: Option<PathBuf>,
    /// Do not fsync objects before they become visible.
    #[arg(long)]
    no_fsync: bool,
    /// Token file: lines `read TOKEN` or `write TOKEN`; clients send
    /// `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Allow a non-loopback --listen without --tokens (anyone reaching it may write).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Open connections at most; more are closed at once [default: 1024].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Time a client has to send its request headers (and finish TLS) [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    header_timeout: Option<Duration>,
    /// Close a connection idle, or moving no byte, for this long [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    idle_timeout: Option<Duration>,
    /// Uploads at most at once; more are answered 503 [default: 64].
    #[arg(long, value_name = "N")]
    max_puts: Option<usize>,
    /// Bytes all objects together may take, e.g. 500G; uploads past it get 507.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    quota: Option<u64>,
    /// Bytes of the file system uploads must leave free, e.g. 10G; else 507.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    min_free: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (no auth: keep it on
    /// loopback or a management network).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

impl Args {
    pub async fn run(self) -> Result<()> {
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(vmifs::serve::tls::TlsOptions {
                cert,
                key,
                client_ca: self.client_ca,
            }),
            _ => None,
        };
        // Unset limits keep the defaults of `ServeOptions::new`.
        let mut opts = vmifs::serve::ServeOptions::new(self.root, self.listen);
        opts.access_log = self.access_log;
        opts.fsync = !self.no_fsync;
        opts.tokens = self.tokens;
        opts.tls = tls;
        opts.insecure_no_auth = self.insecure_no_auth;
        opts.max_connections = self.max_connections.unwrap_or(opts.max_connections);
        opts.header_timeout = self.header_timeout.unwrap_or(opts.header_timeout);
        opts.idle_timeout = self.idle_timeout.unwrap_or(opts.idle_timeout);
        opts.max_puts = self.max_puts.unwrap_or(opts.max_puts);
        opts.quota = self.quota;
        opts.min_free = self.min_free;
        opts.metrics = self.metrics;
        vmifs::serve::run(opts).await?;
        Ok(())
    }
}
