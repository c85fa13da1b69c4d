//! Test images and file comparisons: images of whole MiB drawn from the one
//! sample-data generator ([`vmifs::core::sample`]), and block-by-block
//! comparisons that report where two files differ.

use std::io::Write;
use std::path::{Path, PathBuf};

use vmifs::core::sample;

/// Write an image of `mib` MiB made of random, repeated and all-zero regions
/// of 1 MiB ([`sample::image`]), plus a short tail. The same size always gives
/// the same bytes, and a smaller image is a prefix of a bigger one (up to its
/// last few bytes).
pub fn write_image(path: &Path, mib: usize) {
    write_image_seeded(path, mib, sample::DEFAULT_SEED);
}

/// [`write_image`] with its random regions drawn from `seed`: different seeds
/// give images that share only their (nearly) all-zero chunks.
pub fn write_image_seeded(path: &Path, mib: usize, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    sample::write_image(&mut f, (mib as u64) << 20, 1 << 20, seed).unwrap();
    // A tail that is not a multiple of the chunk size.
    f.write_all(b"tail bytes").unwrap();
    f.flush().unwrap();
}

/// Compare two files block by block.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

pub fn image_mib() -> usize {
    std::env::var("VMIFS_TEST_IMAGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// Compare `a` (read first) with `b` block by block: `Ok(None)` when identical,
/// `Ok(Some(offset))` at the first differing block (or where one ends early),
/// `Err` when reading fails.
pub fn first_difference(a: &Path, b: &Path) -> std::io::Result<Option<u64>> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut pos = 0u64;
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok((fb.read(&mut bb[..1])? != 0).then_some(pos));
        }
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return Ok(Some(pos));
        }
        pos += n as u64;
    }
}

/// Distinct non-zero chunks of a file cut into `chunk` bytes: what a full read
/// has to fetch once.
pub fn distinct_chunks(path: &Path, chunk: u64) -> u64 {
    let data = std::fs::read(path).unwrap();
    let mut seen = std::collections::HashSet::new();
    data.chunks(chunk as usize)
        .filter(|c| c.iter().any(|&b| b != 0))
        .filter(|c| seen.insert(vmifs::core::id::ChunkId::of(c)))
        .count() as u64
}

/// Every file below `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
