//! Measure iroh + iroh-blobs as the peer transport (BENCHMARKS.md, "Peer
//! transport"): one process serves N blobs of S bytes from memory, another
//! fetches them all (verified streams) with C requests in flight on one
//! connection. Relays off, no address lookup, static addresses. `tcp-serve` and
//! `tcp-fetch` move the same blobs over plain TCP, verified with blake3 on
//! receipt, as the baseline. `PUBLIC=1` switches to iroh's public defaults
//! (relays, DNS address lookup): the control for the egress check.
//!
//! A separate crate, not part of vmifs's build:
//! `cargo build --release --manifest-path contrib/peer-engine/Cargo.toml`.
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey, endpoint::presets, protocol::Router};
use iroh_blobs::{BlobsProtocol, Hash, store::mem::MemStore};

fn blob(i: u64, size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    blake3::Hasher::new()
        .update(&i.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// This process's user + system CPU time, from /proc/self/stat (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

async fn endpoint(seed: u8, listen: SocketAddr) -> Result<Endpoint> {
    if std::env::var("PUBLIC").is_ok() {
        // Control for the egress check: iroh's public defaults (relays, DNS lookup).
        return Ok(Endpoint::builder(presets::N0)
            .secret_key(SecretKey::from_bytes(&[seed; 32]))
            .bind()
            .await?);
    }
    Ok(Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .secret_key(SecretKey::from_bytes(&[seed; 32]))
        .clear_ip_transports()
        .bind_addr(listen)?
        .bind()
        .await?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| -> Option<String> {
        args.iter()
            .position(|a| a == k)
            .map(|i| args[i + 1].clone())
    };
    let count: u64 = get("--count").unwrap_or("1024".into()).parse()?;
    let size: usize = get("--size").unwrap_or("262144".into()).parse()?;
    let listen: SocketAddr = get("--listen").context("--listen")?.parse()?;
    match args.first().map(String::as_str) {
        Some("serve") => {
            let ep = endpoint(1, listen).await?;
            let store = MemStore::new();
            for i in 0..count {
                let data = blob(i, size);
                let want = blake3::hash(&data);
                let tag = store.blobs().add_bytes(data).await?;
                if tag.hash.as_bytes() != want.as_bytes() {
                    bail!("blob hash is not plain blake3");
                }
            }
            let blobs = BlobsProtocol::new(&store, None);
            let router = Router::builder(ep.clone())
                .accept(iroh_blobs::ALPN, blobs)
                .spawn();
            println!("serving {count} blobs as {} on {listen}", ep.id());
            let cpu0 = cpu_seconds();
            let secs: u64 = get("--seconds").unwrap_or("60".into()).parse()?;
            tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
            eprintln!("server cpu_s_while_serving={:.3}", cpu_seconds() - cpu0);
            router.shutdown().await?;
        }
        Some("fetch") => {
            let peer: SocketAddr = get("--peer").context("--peer")?.parse()?;
            let conc: usize = get("--concurrency").unwrap_or("16".into()).parse()?;
            let ep = endpoint(2, listen).await?;
            let server = SecretKey::from_bytes(&[1; 32]).public();
            let hashes: Vec<Hash> = (0..count)
                .map(|i| Hash::from(*blake3::hash(&blob(i, size)).as_bytes()))
                .collect();
            let cpu0 = cpu_seconds();
            let t0 = Instant::now();
            let conn = ep
                .connect(
                    EndpointAddr::new(server).with_ip_addr(peer),
                    iroh_blobs::ALPN,
                )
                .await?;
            let connect = t0.elapsed();
            let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(conc));
            let mut tasks = tokio::task::JoinSet::new();
            for h in hashes.clone() {
                let permit = sem.clone().acquire_owned().await?;
                let conn = conn.clone();
                tasks.spawn(async move {
                    let (bytes, _) = iroh_blobs::get::request::get_blob(conn, h)
                        .bytes_and_stats()
                        .await?;
                    drop(permit);
                    anyhow::ensure!(blake3::hash(&bytes).as_bytes() == h.as_bytes(), "mismatch");
                    Ok::<usize, anyhow::Error>(bytes.len())
                });
            }
            let mut total = 0usize;
            while let Some(r) = tasks.join_next().await {
                total += r??;
            }
            let took = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu0;
            let gib = total as f64 / (1u64 << 30) as f64;
            println!(
                "fetched {total} bytes in {count} blobs, concurrency {conc}: {took:.3} s, {:.1} MiB/s, connect {:.1} ms, client cpu {:.3} s = {:.2} cpu-s/GiB",
                total as f64 / took / (1 << 20) as f64,
                connect.as_secs_f64() * 1e3,
                cpu,
                cpu / gib
            );
            conn.close(0u32.into(), b"done");
            ep.close().await;
        }
        Some("tcp-serve") => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let blobs: std::sync::Arc<Vec<Vec<u8>>> =
                std::sync::Arc::new((0..count).map(|i| blob(i, size)).collect());
            let l = tokio::net::TcpListener::bind(listen).await?;
            let cpu0 = cpu_seconds();
            let secs: u64 = get("--seconds").unwrap_or("60".into()).parse()?;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(secs), async {
                loop {
                    let (mut s, _) = l.accept().await?;
                    let blobs = blobs.clone();
                    tokio::spawn(async move {
                        let mut i = [0u8; 8];
                        while s.read_exact(&mut i).await.is_ok() {
                            if s.write_all(&blobs[u64::from_le_bytes(i) as usize])
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                    });
                }
                #[allow(unreachable_code)]
                Ok::<(), anyhow::Error>(())
            })
            .await;
            eprintln!("tcp server cpu_s_while_serving={:.3}", cpu_seconds() - cpu0);
        }
        Some("tcp-fetch") => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let peer: SocketAddr = get("--peer").context("--peer")?.parse()?;
            let conc: u64 = get("--concurrency").unwrap_or("16".into()).parse()?;
            let hashes: std::sync::Arc<Vec<[u8; 32]>> = std::sync::Arc::new(
                (0..count)
                    .map(|i| *blake3::hash(&blob(i, size)).as_bytes())
                    .collect(),
            );
            let cpu0 = cpu_seconds();
            let t0 = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for w in 0..conc {
                let hashes = hashes.clone();
                tasks.spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(peer).await?;
                    let mut buf = vec![0u8; size];
                    let mut n = 0usize;
                    let mut i = w;
                    while i < count {
                        s.write_all(&i.to_le_bytes()).await?;
                        s.read_exact(&mut buf).await?;
                        anyhow::ensure!(
                            blake3::hash(&buf).as_bytes() == &hashes[i as usize],
                            "mismatch"
                        );
                        n += size;
                        i += conc;
                    }
                    Ok::<usize, anyhow::Error>(n)
                });
            }
            let mut total = 0usize;
            while let Some(r) = tasks.join_next().await {
                total += r??;
            }
            let took = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu0;
            println!(
                "tcp fetched {total} bytes, {conc} connections: {took:.3} s, {:.1} MiB/s, client cpu {:.3} s = {:.2} cpu-s/GiB",
                total as f64 / took / (1 << 20) as f64,
                cpu,
                cpu / (total as f64 / (1u64 << 30) as f64)
            );
        }
        _ => bail!(
            "usage: peer-engine serve|fetch --listen ADDR [--peer ADDR] [--count N] [--size S] [--concurrency C]"
        ),
    }
    Ok(())
}
