//! `vmifs status [--json]`: what the running mount daemon is doing.

use std::path::Path;

use anyhow::Result;

use vmifs::mount::control::{self, Status, socket_path};

use super::{human, load_config};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the daemon's status as one JSON object (schema in README, "JSON output").
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let cfg = load_config(cfg_path)?;
        let st = control::status(&socket_path(&cfg))?;
        if self.json {
            println!("{}", serde_json::to_string(&st)?);
        } else {
            print_status(&st);
        }
        Ok(())
    }
}

fn print_status(st: &Status) {
    println!("mount {}", st.mountpoint.display());
    println!(
        "{:<24} {:<12} {:<12} {:>10} {:>10} {:>10} {:>8} {:>10}  HYDRATION",
        "NAME", "TAG", "ID", "SIZE", "FETCHED", "CACHED", "READS", "PREFETCHED"
    );
    for i in &st.images {
        let s = &i.stats;
        println!(
            "{:<24} {:<12} {:<12} {:>10} {:>10} {:>10} {:>8} {:>10}  {}",
            i.name,
            i.tag,
            s.id.short(),
            human(s.size),
            human(s.bytes_fetched),
            human(s.bytes_cached),
            s.reads,
            s.prefetched_chunks,
            hydration(s)
        );
    }
    println!();
    println!(
        "{:<16} {:>9} {:>8} {:>7} {:>8} {:>7} {:>10} {:<8} PACE",
        "STORE", "LATENCY", "REQS", "ERRORS", "CORRUPT", "HEDGES", "BYTES", "STATE"
    );
    for s in &st.stores {
        let pace = match &s.pace {
            Some(p) => format!(
                "window {}, base {:.1}ms, now {:.1}ms, {} halvings",
                p.window, p.base_ms, p.current_ms, p.halvings
            ),
            None => "-".into(),
        };
        println!(
            "{:<16} {:>7.1}ms {:>8} {:>7} {:>8} {:>7} {:>10} {:<8} {}",
            s.name,
            s.latency_ms,
            s.requests,
            s.errors,
            s.corrupt_shards,
            s.hedges,
            human(s.bytes),
            if s.demoted { "demoted" } else { "ok" },
            pace
        );
    }
    let c = &st.cache;
    println!();
    println!(
        "cache {}: {} of {} ({} chunks, {} hits, {} misses, {} evicted, {} corrupt dropped); chunks fetched {}, pieces fetched {}, degraded reads {}, open files {} ({} passthrough)",
        c.dir.display(),
        human(c.used_bytes),
        human(c.max_bytes),
        c.chunks,
        c.hits,
        c.misses,
        c.evictions,
        c.corrupt_dropped,
        st.chunks_fetched,
        st.pieces_fetched,
        st.degraded_reads,
        st.open_files,
        st.passthrough_files
    );
    if st.profiles_refused > 0 {
        println!("boot profiles refused: {}", st.profiles_refused);
    }
    if let Some(site) = &st.site {
        let from_peers: u64 = st.images.iter().map(|i| i.stats.bytes_from_peers).sum();
        println!();
        println!(
            "site {}: node {} on {}, {} from peers",
            site.site,
            site.node,
            site.listen,
            human(from_peers)
        );
        println!(
            "{:<14} {:<22} {:>9} {:>10} {:>10} {:>7}  STATE",
            "PEER", "ADDRESS", "RTT", "IN", "OUT", "ERRORS"
        );
        for p in &site.peers {
            let rtt = p.rtt_ms.map_or("-".into(), |r| format!("{r:.1}ms"));
            println!(
                "{:<14} {:<22} {:>9} {:>10} {:>10} {:>7}  {}",
                p.node.short(),
                p.addr,
                rtt,
                human(p.bytes_in),
                human(p.bytes_out),
                p.errors,
                p.state
            );
        }
    }
}

/// `done in 12.3 s`, `running 40%`, `too large`, `off`.
fn hydration(s: &vmifs::mount::image::ImageStats) -> String {
    use vmifs::mount::image::Hydration;
    match s.hydration {
        Hydration::Done => format!(
            "done in {:.1} s",
            s.hydrated_ms.unwrap_or(0) as f64 / 1000.0
        ),
        Hydration::Running => format!(
            "running {}%",
            (s.bytes_cached * 100)
                .checked_div(s.data_bytes)
                .unwrap_or(100)
        ),
        other => other.to_string(),
    }
}
