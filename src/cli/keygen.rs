//! `vmifs keygen FILE`: a signing key pair.

use std::path::PathBuf;

use anyhow::{Result, bail};

use vmifs::core::key::SecretKey;

use super::write_new;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write the secret key (FILE.pub gets the public key); must not exist.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let file = self.file;
        let pub_file = PathBuf::from(format!("{}.pub", file.display()));
        for f in [&file, &pub_file] {
            if f.exists() {
                bail!("{} exists; not overwriting a key", f.display());
            }
        }
        let key = SecretKey::generate()?;
        write_new(&file, key.to_text().as_bytes(), 0o600)?;
        write_new(&pub_file, format!("{}\n", key.public()).as_bytes(), 0o644)?;
        eprintln!(
            "secret key in {}, public key in {}; on the hosts: [trust] keys = [\"{}\"]",
            file.display(),
            pub_file.display(),
            key.public()
        );
        println!("{}", key.public());
        Ok(())
    }
}
