//! `get --format`: a download laid out as one of the image's format views
//! ([`crate::core::view`]), byte for byte the file the mount shows.
//!
//! The download writes each chunk straight to where the view puts its bytes
//! ([`placement`]: a fixed VHD at its own offset, a qcow2 in its data
//! clusters), so nothing is copied twice; [`write_meta`] then writes the
//! generated metadata around it. All-zero chunks are never written: holes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::core::view::{Piece, Source, View};
use crate::error::Error;
use crate::repo::download::Placement;

/// Bytes of metadata generated per step.
const STEP: u64 = 8 << 20;

/// Where the raw bytes `[offset, offset + len)` of one chunk go in `view`:
/// inside one of its raw extents, or nowhere (`None`).
pub fn placement(view: &View) -> Placement {
    // (raw offset, view offset, len) of the raw extents, in raw order.
    let raw: Vec<(u64, u64, u64)> = view
        .extents()
        .iter()
        .filter_map(|e| match e.source {
            Source::Raw(r) => Some((r, e.at, e.len)),
            _ => None,
        })
        .collect();
    Placement {
        size: view.size(),
        at: Arc::new(move |offset, len| {
            let i = raw.partition_point(|&(r, _, n)| r + n <= offset);
            let &(r, at, n) = raw.get(i)?;
            (r <= offset && offset + len <= r + n).then(|| at + (offset - r))
        }),
    }
}

/// Write `view`'s generated metadata into `out`, whose raw ranges a download
/// already placed ([`placement`]); `out` ends up exactly the view's size.
pub fn write_meta(view: &View, out: &File) -> Result<(), Error> {
    let wr = |e| Error::io("cannot write the view", e);
    out.set_len(view.size()).map_err(wr)?;
    for e in view.extents().iter().filter(|e| e.source == Source::Meta) {
        let mut at = e.at;
        while at < e.at + e.len {
            let n = STEP.min(e.at + e.len - at);
            for p in view.pieces(at, n) {
                if let Piece::Meta(bytes) = &p {
                    out.write_all_at(bytes, at).map_err(wr)?;
                }
                at += p.len();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::id::ImageId;
    use crate::core::view::{Kind, Shape};

    /// Chunks placed where [`placement`] says, then the metadata: the view.
    #[test]
    fn placed_chunks_and_metadata_make_the_view() {
        let (mib, cs) = (1u64 << 20, 256u64 << 10);
        let size = 3 * mib + 4096;
        let mut raw = crate::core::sample::random(size as usize, 7);
        raw[mib as usize..2 * mib as usize].fill(0);
        let shape = Shape {
            id: ImageId::of(b"x"),
            size,
            data: vec![(0, mib), (2 * mib, size)],
        };
        let dir = tempfile::tempdir().unwrap();
        for kind in [Kind::Vhd, Kind::Qcow2] {
            let view = View::new(kind, &shape, "");
            let want: Vec<u8> = view
                .pieces(0, view.size())
                .into_iter()
                .flat_map(|p| match p {
                    Piece::Meta(b) => b,
                    Piece::Raw { offset, len } => {
                        raw[offset as usize..(offset + len) as usize].to_vec()
                    }
                    Piece::Zero(n) => vec![0; n as usize],
                })
                .collect();
            let place = placement(&view);
            assert_eq!(place.size, view.size());
            let path = dir.path().join(format!("x.{kind}"));
            let f = File::create(&path).unwrap();
            f.set_len(place.size).unwrap();
            for &(start, end) in &shape.data {
                for c in (start..end).step_by(cs as usize) {
                    let n = cs.min(end - c);
                    let to = (place.at)(c, n).unwrap();
                    f.write_all_at(&raw[c as usize..(c + n) as usize], to)
                        .unwrap();
                }
            }
            write_meta(&view, &f).unwrap();
            let got = std::fs::read(&path).unwrap();
            assert!(got == want, "{kind}: laid out differently");
        }
    }

    #[test]
    fn a_range_outside_the_raw_extents_has_no_place() {
        let shape = Shape {
            id: ImageId::of(b"x"),
            size: 4 << 20,
            data: vec![(0, 1 << 20), (3 << 20, 4 << 20)],
        };
        let q = placement(&View::new(Kind::Qcow2, &shape, ""));
        // Data: placed; an all-zero range, one straddling a gap, past the end: not.
        assert!((q.at)(0, 1 << 20).is_some());
        assert!((q.at)(3 << 20, 1 << 20).is_some());
        assert_eq!((q.at)(2 << 20, 4096), None);
        assert_eq!((q.at)((1 << 20) - 10, 20), None);
        assert_eq!((q.at)(4 << 20, 1), None);
        let vmdk = placement(&View::new(Kind::Vmdk, &shape, "x.raw"));
        assert_eq!((vmdk.at)(0, 1), None);
        let vhd = placement(&View::new(Kind::Vhd, &shape, ""));
        assert_eq!((vhd.at)(12345, 100), Some(12345));
    }
}
