//! `get --format`: a downloaded raw image laid out as one of its format views
//! ([`crate::core::view`]), byte for byte the file the mount shows.
//!
//! [`lay_out`] writes a view's pieces into a file: generated metadata as is,
//! raw ranges copied from the raw file (`copy_file_range`, so a file system
//! that can share or copy blocks in the kernel does), zeros as holes. A view
//! whose raw ranges sit at their own offsets (a fixed VHD) is laid out in
//! place: only its padding and footer are written.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::core::view::{Piece, View};
use crate::error::Error;

/// Bytes of the view handled per step (metadata is generated this much at a
/// time).
const STEP: u64 = 8 << 20;

/// Whether every raw range of `view` lies at its own offset, so the raw file
/// can become the view by writing what follows and surrounds it.
pub fn in_place(view: &View) -> bool {
    view.extents().iter().all(|e| match e.source {
        crate::core::view::Source::Raw(r) => r == e.at,
        _ => true,
    })
}

/// Write `view` into `out`, its raw ranges read from `raw`; `out` is `raw`
/// itself when `raw` is `None` (see [`in_place`]). `out` ends up exactly the
/// view's size.
pub fn lay_out(view: &View, raw: Option<&File>, out: &File) -> Result<(), Error> {
    let size = view.size();
    let wr = |e| Error::io("cannot write the view", e);
    out.set_len(size).map_err(wr)?;
    let mut pos = 0;
    while pos < size {
        for p in view.pieces(pos, STEP) {
            match &p {
                Piece::Meta(bytes) => out.write_all_at(bytes, pos).map_err(wr)?,
                Piece::Raw { offset, len } => match raw {
                    Some(raw) => copy(raw, *offset, out, pos, *len)?,
                    None if *offset == pos => {}
                    None => {
                        return Err(Error::Invalid(
                            "a view that moves raw data cannot be laid out in place".into(),
                        ));
                    }
                },
                Piece::Zero(_) => {} // a hole: set_len made it zero
            }
            pos += p.len();
        }
    }
    Ok(())
}

/// Copy `len` bytes at `from` of `src` to `to` of `dst`.
fn copy(src: &File, from: u64, dst: &File, to: u64, len: u64) -> Result<(), Error> {
    let (mut from, mut to, mut left) = (from, to, len);
    while left > 0 {
        let want = left.min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut from), dst, Some(&mut to), want) {
            Ok(0) => {
                return Err(Error::Invalid(
                    "the raw image is shorter than its manifest".into(),
                ));
            }
            Ok(n) => left -= n as u64,
            // Not supported between these files: copy through memory.
            Err(_) => return copy_buffered(src, from, dst, to, left),
        }
    }
    Ok(())
}

fn copy_buffered(src: &File, from: u64, dst: &File, to: u64, len: u64) -> Result<(), Error> {
    let mut buf = vec![0u8; STEP.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], from + done)
            .map_err(|e| Error::io("cannot read the raw image", e))?;
        dst.write_all_at(&buf[..n], to + done)
            .map_err(|e| Error::io("cannot write the view", e))?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::id::ImageId;
    use crate::core::view::{Kind, Shape};

    /// Every view laid out from a raw file reads back as its pieces say.
    #[test]
    fn a_laid_out_view_is_the_view() {
        let mib = 1u64 << 20;
        let size = 3 * mib + 4096;
        let mut raw = crate::core::sample::random(size as usize, 7);
        raw[mib as usize..2 * mib as usize].fill(0);
        let shape = Shape {
            id: ImageId::of(b"x"),
            size,
            data: vec![(0, mib), (2 * mib, size)],
        };
        let dir = tempfile::tempdir().unwrap();
        for kind in Kind::ALL {
            let view = View::new(kind, &shape, "x.raw");
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
            let raw_path = dir.path().join("x.raw");
            std::fs::write(&raw_path, &raw).unwrap();
            let got = if in_place(&view) {
                let f = File::options().write(true).open(&raw_path).unwrap();
                lay_out(&view, None, &f).unwrap();
                std::fs::read(&raw_path).unwrap()
            } else {
                let out = dir.path().join(format!("x.{kind}"));
                let o = File::create(&out).unwrap();
                lay_out(&view, Some(&File::open(&raw_path).unwrap()), &o).unwrap();
                std::fs::read(&out).unwrap()
            };
            assert_eq!(in_place(&view), kind != Kind::Qcow2, "{kind}");
            assert!(got == want, "{kind}: laid out differently");
        }
    }

    #[test]
    fn a_short_raw_file_is_an_error() {
        let shape = Shape {
            id: ImageId::of(b"x"),
            size: 1 << 20,
            data: vec![(0, 1 << 20)],
        };
        let view = View::new(Kind::Qcow2, &shape, "");
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("short.raw");
        std::fs::write(&raw, [1u8; 1000]).unwrap();
        let out = File::create(dir.path().join("out")).unwrap();
        let e = lay_out(&view, Some(&File::open(&raw).unwrap()), &out).unwrap_err();
        assert!(e.to_string().contains("shorter"), "{e}");
    }
}
