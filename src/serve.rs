//! PLACEHOLDER: `vmifs serve` (being written).
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of `vmifs serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub access_log: Option<PathBuf>,
    pub fsync: bool,
}

/// Serve a directory as an HTTP store until interrupted (SIGINT/SIGTERM).
pub async fn run(_opts: ServeOptions) -> Result<(), crate::Error> {
    Err(crate::Error::Invalid("serve not built yet".into()))
}
