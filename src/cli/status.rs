//! `vmifs status [--json]`: what the running mount daemon is doing.

use std::path::Path;

use anyhow::Result;

use vmifs::mount::daemon::{query_status, socket_path};

use super::{human, load_config};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let cfg = load_config(cfg_path)?;
        let st = query_status(&socket_path(&cfg))?;
        if self.json {
            println!("{st}");
        } else {
            print_status(&st);
        }
        Ok(())
    }
}

fn print_status(st: &serde_json::Value) {
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    println!("mount {}", st["mountpoint"].as_str().unwrap_or("?"));
    println!(
        "{:<24} {:<12} {:<12} {:>10} {:>10} {:>10} {:>8}",
        "NAME", "TAG", "ID", "SIZE", "FETCHED", "CACHED", "READS"
    );
    for i in st["images"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<12} {:<12} {:>10} {:>10} {:>10} {:>8}",
            i["name"].as_str().unwrap_or(""),
            i["tag"].as_str().unwrap_or(""),
            &i["id"].as_str().unwrap_or("")[..12.min(i["id"].as_str().unwrap_or("").len())],
            human(n(i, "size")),
            human(n(i, "bytes_fetched")),
            human(n(i, "bytes_cached")),
            n(i, "reads")
        );
    }
    println!();
    println!(
        "{:<16} {:>9} {:>8} {:>7} {:>8} {:>7} {:>10} {:<8}",
        "STORE", "LATENCY", "REQS", "ERRORS", "CORRUPT", "HEDGES", "BYTES", "STATE"
    );
    for s in st["stores"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:>7.1}ms {:>8} {:>7} {:>8} {:>7} {:>10} {:<8}",
            s["name"].as_str().unwrap_or(""),
            s["latency_ms"].as_f64().unwrap_or(0.0),
            n(s, "requests"),
            n(s, "errors"),
            n(s, "corrupt_shards"),
            n(s, "hedges"),
            human(n(s, "bytes")),
            if s["demoted"].as_bool().unwrap_or(false) {
                "demoted"
            } else {
                "ok"
            }
        );
    }
    let c = &st["cache"];
    println!();
    println!(
        "cache {}: {} of {} ({} chunks, {} hits, {} misses, {} corrupt dropped); chunks fetched {}, degraded reads {}, open files {}",
        c["dir"].as_str().unwrap_or("?"),
        human(n(c, "used_bytes")),
        human(n(c, "max_bytes")),
        n(c, "chunks"),
        n(c, "hits"),
        n(c, "misses"),
        n(c, "corrupt_dropped"),
        n(st, "chunks_fetched"),
        n(st, "degraded_reads"),
        n(st, "open_files")
    );
}
