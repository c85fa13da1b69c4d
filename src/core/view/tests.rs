//! Table tests of the views: every view tiles its file, reads of any range
//! add up to the whole, and each format decodes back to the raw image.

use super::qcow2::CLUSTER;
use super::*;

const MIB: u64 = 1 << 20;

fn id(seed: &[u8]) -> ImageId {
    ImageId::of(seed)
}

/// A raw image of `size` bytes with data only in `data` (ranges), and its shape.
fn image(size: u64, data: &[(u64, u64)]) -> (Vec<u8>, Shape) {
    let mut raw = vec![0u8; size as usize];
    for &(s, e) in data {
        for (i, b) in raw[s as usize..e as usize].iter_mut().enumerate() {
            *b = ((s as usize + i) % 251) as u8 | 1;
        }
    }
    let shape = Shape {
        id: id(&size.to_le_bytes()),
        size,
        data: data.to_vec(),
    };
    (raw, shape)
}

/// The view's bytes at `[offset, offset + len)`, raw pieces read from `raw`.
fn read(view: &View, raw: &[u8], offset: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for p in view.pieces(offset, len) {
        match p {
            Piece::Meta(b) => out.extend_from_slice(&b),
            Piece::Raw { offset, len } => {
                out.extend_from_slice(&raw[offset as usize..(offset + len) as usize])
            }
            Piece::Zero(n) => out.extend(std::iter::repeat_n(0, n as usize)),
        }
    }
    out
}

/// Byte ranges of an image that hold data.
type Ranges = Vec<(u64, u64)>;

fn shapes() -> Vec<(u64, Ranges)> {
    vec![
        // size, non-zero ranges
        (0, vec![]),
        (4096, vec![(0, 4096)]),
        (MIB, vec![]),
        (MIB, vec![(0, MIB)]),
        (3 * MIB, vec![(0, 256 << 10), (MIB, MIB + (256 << 10))]),
        // Chunks that do not fill clusters, a short last one, odd sizes.
        (
            5 * MIB + 1000,
            vec![
                (4096, 8192),
                (3 * MIB, 3 * MIB + 100),
                (5 * MIB, 5 * MIB + 1000),
            ],
        ),
        (MIB + 512, vec![(MIB, MIB + 512)]),
        (12345, vec![(0, 12345)]),
        // Data in two 512 MiB regions, none between.
        (
            1200 * MIB,
            vec![(0, 64 << 10), (1100 * MIB, 1100 * MIB + 3 * CLUSTER)],
        ),
    ]
}

fn all_views(shape: &Shape) -> Vec<View> {
    Kind::ALL
        .into_iter()
        .map(|k| View::new(k, shape, "12.raw"))
        .collect()
}

#[test]
fn extents_tile_the_file_and_pieces_add_up() {
    for (size, data) in shapes() {
        let (raw, shape) = image(size, &data);
        for view in all_views(&shape) {
            let what = format!("{} of {size}", view.kind());
            let mut at = 0;
            for e in view.extents() {
                assert_eq!(e.at, at, "{what}: gap or overlap at {at}");
                assert!(e.len > 0, "{what}: empty extent");
                if let Source::Raw(r) = e.source {
                    assert!(r + e.len <= size, "{what}: raw extent past the end");
                }
                at += e.len;
            }
            assert_eq!(at, view.size(), "{what}");
            // Reads straddling extents, at the end and past it.
            let vs = view.size();
            let whole = if vs <= 64 * MIB {
                read(&view, &raw, 0, vs)
            } else {
                Vec::new()
            };
            let probes = [
                (0, 1),
                (0, 4096),
                (vs.saturating_sub(513), 1024),
                (vs.saturating_sub(1), 10),
                (vs, 10),
                (vs + 100, 10),
                (CLUSTER - 3, 7),
                (vs / 2, 3 * CLUSTER + 17),
            ];
            for (off, len) in probes {
                let got = read(&view, &raw, off, len);
                let want = vs.saturating_sub(off).min(len);
                assert_eq!(got.len() as u64, want, "{what}: read {off}+{len}");
                let total: u64 = view.pieces(off, len).iter().map(Piece::len).sum();
                assert_eq!(total, want, "{what}");
                if !whole.is_empty() && want > 0 {
                    assert!(
                        got[..] == whole[off as usize..(off + want) as usize],
                        "{what}: read {off}+{len} differs from the whole"
                    );
                }
            }
        }
    }
}

#[test]
fn views_are_deterministic_and_depend_on_the_version() {
    let (_, a) = image(3 * MIB, &[(0, MIB)]);
    let mut b = a.clone();
    b.id = id(b"another version");
    for kind in Kind::ALL {
        let (va, vb) = (View::new(kind, &a, "x.raw"), View::new(kind, &a, "x.raw"));
        assert_eq!(va.pieces(0, u64::MAX), vb.pieces(0, u64::MAX), "{kind}");
    }
    // The VHD's unique id and the VMDK's CID come from the image id.
    for kind in [Kind::Vhd, Kind::Vmdk] {
        let (va, vb) = (View::new(kind, &a, "x.raw"), View::new(kind, &b, "x.raw"));
        let meta = |v: &View| -> Vec<Piece> {
            v.pieces(0, u64::MAX)
                .into_iter()
                .filter(|p| matches!(p, Piece::Meta(_)))
                .collect()
        };
        assert_ne!(meta(&va), meta(&vb), "{kind}");
    }
}

#[test]
fn kinds_parse_from_their_extension_only() {
    for k in Kind::ALL {
        assert_eq!(k.extension().parse::<Kind>(), Ok(k));
    }
    for bad in ["", "raw", "VHD", "vpc", "qcow"] {
        let e = bad.parse::<Kind>().unwrap_err();
        assert!(e.contains("expected raw, vhd, vmdk or qcow2"), "{e}");
    }
    assert_eq!(Kind::Vhd.qemu_name(), "vpc");
}

#[test]
fn shape_of_a_manifest_merges_adjacent_data_chunks() {
    use crate::core::id::{ChunkId, Name};
    use crate::core::manifest::Erasure;
    let c = Some(ChunkId::of(b"c"));
    let m = Manifest {
        format: "vmifs-manifest".into(),
        version: crate::core::manifest::V2,
        name: "deb".parse::<Name>().unwrap(),
        size: 5 * 1000 + 10,
        chunk_size: 1000,
        erasure: Erasure { data: 2, parity: 1 },
        stores: vec![],
        source_format: "raw".into(),
        labels: Default::default(),
        chunks: vec![c, c, None, c, None, c],
        packs: vec![],
    };
    let s = Shape::of(id(b"m"), &m);
    assert_eq!(s.size, 5010);
    assert_eq!(s.data, vec![(0, 2000), (3000, 4000), (5000, 5010)]);
}

// VHD

#[test]
fn vhd_layout_table() {
    // raw size → (virtual size, zero padding)
    let cases = [
        (0, 0, 0),
        (1, MIB, MIB - 1),
        (MIB, MIB, 0),
        (MIB + 512, 2 * MIB, MIB - 512),
        (1 << 30, 1 << 30, 0),
        (10 * MIB + 12345, 11 * MIB, MIB - 12345),
    ];
    for (size, virt, pad) in cases {
        let (_, shape) = image(size, &[]);
        let v = View::new(Kind::Vhd, &shape, "");
        assert_eq!(v.size(), virt + 512, "{size}");
        let mut want = Vec::new();
        if size > 0 {
            want.push(Source::Raw(0));
        }
        if pad > 0 {
            want.push(Source::Zero);
        }
        want.push(Source::Meta);
        let got: Vec<Source> = v.extents().iter().map(|e| e.source).collect();
        assert_eq!(got, want, "{size}");
        let footer = match &v.pieces(virt, 512)[..] {
            [Piece::Meta(f)] => f.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(&footer[..8], b"conectix");
        assert_eq!(&footer[28..32], b"qem2");
        assert_eq!(u64::from_be_bytes(footer[40..48].try_into().unwrap()), virt);
        assert_eq!(u64::from_be_bytes(footer[48..56].try_into().unwrap()), virt);
        assert_eq!(u32::from_be_bytes(footer[60..64].try_into().unwrap()), 2);
        assert_eq!(&footer[68..84], &shape.id.0.0[..16]);
        // The checksum: one's complement of the sum of the other bytes.
        let stored = u32::from_be_bytes(footer[64..68].try_into().unwrap());
        let sum: u32 = footer
            .iter()
            .enumerate()
            .filter(|(i, _)| !(64..68).contains(i))
            .map(|(_, &b)| u32::from(b))
            .sum();
        assert_eq!(stored, !sum, "{size}");
    }
}

#[test]
fn vhd_geometry_table() {
    // sectors → (cylinders, heads, sectors per track), as `qemu-img create
    // -f vpc -o subformat=fixed` writes them.
    let cases = [
        (2048, (31, 4, 17)),         // 1 MiB
        (2097152, (2081, 16, 63)),   // 1 GiB
        (20971520, (20806, 16, 63)), // 10 GiB
        (65535 * 16 * 63, (16191, 16, 255)),
        (u64::MAX / 512, (65535, 16, 255)), // capped
    ];
    for (sectors, want) in cases {
        assert_eq!(vhd::geometry(sectors), want, "{sectors}");
    }
}

// VMDK

#[test]
fn vmdk_descriptor_golden() {
    let (_, shape) = image(3 * MIB + 1, &[(0, 1)]);
    let v = View::new(Kind::Vmdk, &shape, "12.raw");
    let text = String::from_utf8(read(&v, &[], 0, v.size())).unwrap();
    let cid = u32::from_be_bytes(shape.id.0.0[..4].try_into().unwrap()) & 0x7fff_ffff;
    let want = format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\n# Extent description\nRW 6145 FLAT \"12.raw\" 0\n\n\
         # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"6\"\nddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n"
    );
    assert_eq!(text, want);
    assert_eq!(v.extents().len(), 1);
}

// qcow2: a reader of the format written from the specification, apart from
// the generator, decodes every view back to its raw image.

fn be64(b: &[u8], at: u64) -> u64 {
    u64::from_be_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

fn be32(b: &[u8], at: u64) -> u32 {
    u32::from_be_bytes(b[at as usize..at as usize + 4].try_into().unwrap())
}

/// Decode a qcow2 file: the guest bytes, and whether every cluster in use has
/// refcount 1 and no other has one.
fn decode_qcow2(file: &[u8]) -> Vec<u8> {
    assert_eq!(&file[..4], b"QFI\xfb");
    assert_eq!(be32(file, 4), 3);
    let cluster_bits = be32(file, 20);
    let cs = 1u64 << cluster_bits;
    assert_eq!(file.len() as u64 % cs, 0, "whole clusters");
    let size = be64(file, 24);
    let l1_size = be32(file, 36) as u64;
    let l1_at = be64(file, 40);
    let rt_at = be64(file, 48);
    let rt_clusters = be32(file, 56) as u64;
    assert_eq!(be64(file, 72), 0, "no incompatible features");
    assert_eq!(be32(file, 96), 4, "16-bit refcounts");
    let header_len = be32(file, 100) as u64;
    assert_eq!(be32(file, header_len), 0, "extension end marker");
    let l2_entries = cs / 8;
    assert!(l1_size * l2_entries * cs >= size);
    let clusters = file.len() as u64 / cs;
    let mut used = vec![0u32; clusters as usize];
    let mut mark = |at: u64, n: u64| {
        assert_eq!(at % cs, 0);
        for c in at / cs..(at / cs + n) {
            used[c as usize] += 1;
        }
    };
    mark(0, 1);
    mark(l1_at, (l1_size * 8).div_ceil(cs).max(1));
    mark(rt_at, rt_clusters);
    let mut guest = vec![0u8; size as usize];
    for i in 0..l1_size {
        let e = be64(file, l1_at + i * 8);
        if e == 0 {
            continue;
        }
        assert_ne!(e & (1 << 63), 0, "L1 COPIED");
        let l2 = e & !(1 << 63);
        mark(l2, 1);
        for j in 0..l2_entries {
            let e = be64(file, l2 + j * 8);
            if e == 0 {
                continue;
            }
            assert_ne!(e & (1 << 63), 0, "L2 COPIED");
            let data = e & !(1 << 63);
            mark(data, 1);
            let g = (i * l2_entries + j) * cs;
            assert!(g < size, "a cluster past the disk");
            let n = cs.min(size - g) as usize;
            guest[g as usize..g as usize + n]
                .copy_from_slice(&file[data as usize..data as usize + n]);
        }
    }
    // Refcounts: 1 exactly for the clusters in use (refcount blocks too).
    let mut rbs = Vec::new();
    for i in 0..rt_clusters * cs / 8 {
        let rb = be64(file, rt_at + i * 8);
        if rb != 0 {
            rbs.push((i, rb));
        }
    }
    for &(_, rb) in &rbs {
        mark(rb, 1);
    }
    let rb_entries = cs / 2;
    for c in 0..clusters {
        let (i, inside) = (c / rb_entries, c % rb_entries);
        let rc = rbs.iter().find(|(j, _)| *j == i).map_or(0, |&(_, rb)| {
            u16::from_be_bytes(
                file[(rb + inside * 2) as usize..(rb + inside * 2 + 2) as usize]
                    .try_into()
                    .unwrap(),
            )
        });
        assert_eq!(u32::from(rc), used[c as usize], "refcount of cluster {c}");
        assert_eq!(
            used[c as usize], 1,
            "cluster {c} used {} times",
            used[c as usize]
        );
    }
    guest
}

#[test]
fn qcow2_decodes_to_the_raw_image_with_exact_refcounts() {
    for (size, data) in shapes() {
        if size > 64 * MIB {
            continue;
        }
        let (raw, shape) = image(size, &data);
        let view = View::new(Kind::Qcow2, &shape, "");
        let file = read(&view, &raw, 0, view.size());
        let guest = decode_qcow2(&file);
        let mut want = raw.clone();
        want.resize(size.div_ceil(512) as usize * 512, 0);
        assert!(guest == want, "qcow2 of {size} decodes differently");
    }
}

#[test]
fn qcow2_leaves_zero_clusters_unallocated_and_keeps_data_in_order() {
    // size, data ranges → (data clusters, file size)
    let meta = 5 * CLUSTER; // header, L1, refcount table, one block, one L2
    let cases: Vec<(u64, Ranges, u64, u64)> = vec![
        (MIB, vec![], 0, 4 * CLUSTER),
        (MIB, vec![(0, MIB)], 16, meta + 16 * CLUSTER),
        // Two chunks within one cluster count once; one straddling two, twice.
        (
            MIB,
            vec![(0, 100), (200, 300), (CLUSTER - 1, CLUSTER + 1)],
            2,
            meta + 2 * CLUSTER,
        ),
        // A short last cluster is padded.
        (MIB + 512, vec![(MIB, MIB + 512)], 1, meta + CLUSTER),
        // Two 512 MiB regions with data: two L2 tables.
        (
            1200 * MIB,
            vec![(0, 1), (1100 * MIB, 1100 * MIB + 3 * CLUSTER)],
            4,
            meta + CLUSTER + 4 * CLUSTER,
        ),
    ];
    for (size, data, clusters, file) in cases {
        let (_, shape) = image(size, &data);
        let q = qcow2::Qcow2::new(&shape);
        let view = View::Qcow2(Arc::new(q.clone()));
        assert_eq!(view.size(), file, "{size} {data:?}");
        let raw: u64 = view
            .extents()
            .iter()
            .filter(|e| !matches!(e.source, Source::Meta))
            .map(|e| e.len)
            .sum();
        assert_eq!(raw, clusters * CLUSTER, "{size} {data:?}");
        assert_eq!(view.size() - q.data_offset(), clusters * CLUSTER);
        // Raw extents in image order.
        let offsets: Vec<u64> = view
            .extents()
            .iter()
            .filter_map(|e| match e.source {
                Source::Raw(r) => Some(r),
                _ => None,
            })
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    }
}

#[test]
fn qcow2_of_a_large_sparse_image_stays_small() {
    // 2 TiB with data at both ends: generated on demand, tables for two
    // 512 MiB regions only.
    let size = 2u64 << 40;
    let shape = Shape {
        id: id(b"big"),
        size,
        data: vec![(0, MIB), (size - MIB, size)],
    };
    let q = qcow2::Qcow2::new(&shape);
    let view = View::Qcow2(Arc::new(q.clone()));
    assert_eq!(q.virtual_size(), size);
    // Header, 1 L1 cluster (4096 entries), refcount table, one block, two L2.
    assert_eq!(q.data_offset(), 6 * CLUSTER);
    assert_eq!(view.size(), 6 * CLUSTER + 2 * MIB);
    let last = view.pieces(view.size() - 10, 10);
    assert_eq!(
        last,
        vec![Piece::Raw {
            offset: size - 10,
            len: 10
        }]
    );
}
