//! `vmifs serve`: a directory as an HTTP store.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Append one line per request to FILE.
    #[arg(long, value_name = "FILE")]
    access_log: Option<PathBuf>,
    /// Do not fsync objects before they become visible.
    #[arg(long)]
    no_fsync: bool,
}

impl Args {
    pub async fn run(self) -> Result<()> {
        vmifs::serve::run(vmifs::serve::ServeOptions {
            root: self.root,
            listen: self.listen,
            access_log: self.access_log,
            fsync: !self.no_fsync,
        })
        .await?;
        Ok(())
    }
}
