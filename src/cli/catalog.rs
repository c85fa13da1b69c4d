//! `vmifs ls` and `vmifs search k=v...`: the catalog.

use std::path::Path;

use anyhow::Result;

use vmifs::core::catalog::{CatalogEntry, Term};

use super::{human, open_repo};

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Print a JSON array, one object per tag (schema in README, "JSON output").
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    /// Terms that must all match: name=, tag=, id=, format=, size=, size>, size<
    /// (sizes like 2GiB), or any label key=value.
    #[arg(required = true, value_name = "KEY=VALUE")]
    terms: Vec<String>,
    /// Print a JSON array, as `vmifs ls --json`.
    #[arg(long)]
    json: bool,
}

impl LsArgs {
    pub async fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let (_, repo) = open_repo(cfg_path)?;
        print_catalog(&repo.catalog().await?.iter().collect::<Vec<_>>(), self.json);
        Ok(())
    }
}

impl SearchArgs {
    pub async fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let terms = self
            .terms
            .iter()
            .map(|t| Term::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        let (_, repo) = open_repo(cfg_path)?;
        let all = repo.catalog().await?;
        let hits: Vec<_> = all
            .iter()
            .filter(|e| terms.iter().all(|t| t.matches(e)))
            .collect();
        print_catalog(&hits, self.json);
        Ok(())
    }
}

fn print_catalog(entries: &[&CatalogEntry], json: bool) {
    if json {
        let rows: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name, "tag": e.tag, "id": e.id, "size": e.manifest.size,
                    "format": e.manifest.source_format, "labels": e.manifest.labels,
                    "erasure": e.manifest.erasure, "time_ms": e.time_ms,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    println!(
        "{:<24} {:<12} {:<12} {:>10} {:<6} LABELS",
        "NAME", "TAG", "ID", "SIZE", "FORMAT"
    );
    for e in entries {
        let labels: Vec<String> = e
            .manifest
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:<24} {:<12} {:<12} {:>10} {:<6} {}",
            e.name.as_str(),
            e.tag.as_str(),
            e.id.short(),
            human(e.manifest.size),
            e.manifest.source_format,
            labels.join(",")
        );
    }
}
