//! A self-contained qcow2 (version 3) over the raw image
//! (QEMU's docs/interop/qcow2.txt).
//!
//! Layout, in clusters of [`CLUSTER`] bytes:
//!
//! | clusters | what |
//! |---|---|
//! | 0 | header (104 bytes, no extensions), zeros |
//! | L1 | one entry per 512 MiB of the disk: its L2 table, or 0 |
//! | refcount table | one entry per refcount block |
//! | refcount blocks | 16-bit refcounts: 1 for every cluster of the file, 0 past it |
//! | L2 tables | only for 512 MiB regions with data: one entry per cluster |
//! | data | the allocated clusters, in image order |
//!
//! The virtual size is the raw size rounded up to whole 512-byte sectors (as
//! QEMU sizes any file). A guest cluster is allocated when any byte of it lies in a chunk that is
//! not all zero; its L2 entry points at its data cluster (with the COPIED
//! flag, as its refcount is 1). Clusters of all-zero chunks are unallocated
//! (entry 0) and read as zeros, as in any qcow2 without a backing file. The
//! data of allocated clusters is the raw image's bytes, so reading it reads
//! the raw image's chunks; the last data cluster is padded with zeros to a
//! whole cluster. Metadata is generated for the range read: the layout keeps
//! only the runs of allocated clusters.

use super::{Extent, Shape, Source, push};

pub const CLUSTER_BITS: u32 = 16;
pub const CLUSTER: u64 = 1 << CLUSTER_BITS;
const HEADER_LEN: u32 = 104;
/// Entries of one L2 table (8 bytes each).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Refcounts of one refcount block (16 bits each: refcount_order 4).
const RB_ENTRIES: u64 = CLUSTER / 2;
/// L2 and L1 entries: the cluster is in use by this image only.
const COPIED: u64 = 1 << 63;

/// A run of allocated guest clusters and their place among the data clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: u64,
    count: u64,
    /// Data clusters before this run.
    rank: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2 {
    virtual_size: u64,
    l1_entries: u64,
    /// Per L1 entry: 1 + the index of its L2 table, or 0.
    l2_of: Vec<u64>,
    runs: Vec<Run>,
    l1_at: u64,
    rt_at: u64,
    rt_clusters: u64,
    rb_at: u64,
    rb_count: u64,
    l2_at: u64,
    data_at: u64,
    /// Clusters of the whole file.
    clusters: u64,
    extents: Vec<Extent>,
}

impl Qcow2 {
    pub fn new(shape: &Shape) -> Qcow2 {
        let virtual_size = shape.size.div_ceil(512) * 512;
        let guest_clusters = virtual_size.div_ceil(CLUSTER);
        let mut runs: Vec<Run> = Vec::new();
        let mut data_clusters = 0;
        for &(start, end) in &shape.data {
            let (first, last) = (start / CLUSTER, end.div_ceil(CLUSTER));
            match runs.last_mut() {
                Some(r) if r.first + r.count >= first => {
                    let grown = last.max(r.first + r.count) - (r.first + r.count);
                    r.count += grown;
                    data_clusters += grown;
                }
                _ if last > first => {
                    runs.push(Run {
                        first,
                        count: last - first,
                        rank: data_clusters,
                    });
                    data_clusters += last - first;
                }
                _ => {}
            }
        }
        let l1_entries = guest_clusters.div_ceil(L2_ENTRIES);
        let mut l2_of = vec![0; l1_entries as usize];
        let mut tables = 0;
        for r in &runs {
            for i in r.first / L2_ENTRIES..=(r.first + r.count - 1) / L2_ENTRIES {
                if l2_of[i as usize] == 0 {
                    tables += 1;
                    l2_of[i as usize] = tables;
                }
            }
        }
        let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER).max(1);
        // The refcount blocks count every cluster, themselves included.
        let fixed = 1 + l1_clusters + tables + data_clusters;
        let (mut rb_count, mut rt_clusters) = (1, 1);
        loop {
            let clusters = fixed + rt_clusters + rb_count;
            let rb = clusters.div_ceil(RB_ENTRIES);
            let rt = (rb * 8).div_ceil(CLUSTER);
            if (rb, rt) == (rb_count, rt_clusters) {
                break;
            }
            (rb_count, rt_clusters) = (rb, rt);
        }
        let l1_at = CLUSTER;
        let rt_at = l1_at + l1_clusters * CLUSTER;
        let rb_at = rt_at + rt_clusters * CLUSTER;
        let l2_at = rb_at + rb_count * CLUSTER;
        let data_at = l2_at + tables * CLUSTER;
        let clusters = data_at / CLUSTER + data_clusters;
        let mut extents = Vec::new();
        push(&mut extents, data_at, Source::Meta);
        for r in &runs {
            let start = r.first * CLUSTER;
            let end = (r.first + r.count) * CLUSTER;
            let raw_end = end.min(shape.size);
            push(&mut extents, raw_end - start, Source::Raw(start));
            push(&mut extents, end - raw_end, Source::Zero);
        }
        Qcow2 {
            virtual_size,
            l1_entries,
            l2_of,
            runs,
            l1_at,
            rt_at,
            rt_clusters,
            rb_at,
            rb_count,
            l2_at,
            data_at,
            clusters,
            extents,
        }
    }

    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Where the data clusters start (the metadata's length).
    pub fn data_offset(&self) -> u64 {
        self.data_at
    }

    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    pub fn meta(&self, at: u64, buf: &mut [u8]) {
        let mut pos = at;
        let mut done = 0;
        let mut cluster = vec![0u8; CLUSTER as usize];
        while done < buf.len() {
            let index = pos / CLUSTER;
            let inside = (pos % CLUSTER) as usize;
            let n = (CLUSTER as usize - inside).min(buf.len() - done);
            self.cluster(index * CLUSTER, &mut cluster);
            buf[done..done + n].copy_from_slice(&cluster[inside..inside + n]);
            done += n;
            pos += n as u64;
        }
    }

    /// The metadata cluster at file offset `at`.
    fn cluster(&self, at: u64, out: &mut [u8]) {
        out.fill(0);
        let put = |out: &mut [u8], i: u64, v: u64| {
            out[i as usize * 8..i as usize * 8 + 8].copy_from_slice(&v.to_be_bytes());
        };
        if at == 0 {
            self.header(out);
        } else if at < self.rt_at {
            let first = (at - self.l1_at) / 8;
            for i in first..(first + L2_ENTRIES).min(self.l1_entries) {
                let t = self.l2_of[i as usize];
                if t > 0 {
                    put(out, i - first, (self.l2_at + (t - 1) * CLUSTER) | COPIED);
                }
            }
        } else if at < self.rb_at {
            let first = (at - self.rt_at) / 8;
            for i in first..(first + L2_ENTRIES).min(self.rb_count) {
                put(out, i - first, self.rb_at + i * CLUSTER);
            }
        } else if at < self.l2_at {
            let first = (at - self.rb_at) / CLUSTER * RB_ENTRIES;
            for c in first..(first + RB_ENTRIES).min(self.clusters) {
                let i = ((c - first) * 2) as usize;
                out[i..i + 2].copy_from_slice(&1u16.to_be_bytes());
            }
        } else if at < self.data_at {
            let table = (at - self.l2_at) / CLUSTER + 1;
            let Some(l1) = self.l2_of.iter().position(|&t| t == table) else {
                return;
            };
            let first = l1 as u64 * L2_ENTRIES;
            let end = first + L2_ENTRIES;
            let mut r = self.runs.partition_point(|r| r.first + r.count <= first);
            while let Some(run) = self.runs.get(r).filter(|run| run.first < end) {
                for g in run.first.max(first)..(run.first + run.count).min(end) {
                    let data = self.data_at + (run.rank + g - run.first) * CLUSTER;
                    put(out, g - first, data | COPIED);
                }
                r += 1;
            }
        }
    }

    fn header(&self, out: &mut [u8]) {
        let mut h = Vec::with_capacity(HEADER_LEN as usize);
        h.extend_from_slice(b"QFI\xfb");
        h.extend_from_slice(&3u32.to_be_bytes()); // version
        h.extend_from_slice(&0u64.to_be_bytes()); // backing file offset
        h.extend_from_slice(&0u32.to_be_bytes()); // backing file size
        h.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
        h.extend_from_slice(&self.virtual_size.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // no encryption
        h.extend_from_slice(&(self.l1_entries as u32).to_be_bytes());
        h.extend_from_slice(&self.l1_at.to_be_bytes());
        h.extend_from_slice(&self.rt_at.to_be_bytes());
        h.extend_from_slice(&(self.rt_clusters as u32).to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // snapshots
        h.extend_from_slice(&0u64.to_be_bytes()); // snapshots offset
        h.extend_from_slice(&0u64.to_be_bytes()); // incompatible features
        h.extend_from_slice(&0u64.to_be_bytes()); // compatible features
        h.extend_from_slice(&0u64.to_be_bytes()); // autoclear features
        h.extend_from_slice(&4u32.to_be_bytes()); // refcount order: 16 bits
        h.extend_from_slice(&HEADER_LEN.to_be_bytes());
        debug_assert_eq!(h.len(), HEADER_LEN as usize);
        // Header extensions follow, ended by type 0 length 0: zeros already.
        out[..h.len()].copy_from_slice(&h);
    }
}
