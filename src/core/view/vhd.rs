//! A fixed VHD: the raw bytes, zeros up to a whole MiB, then the 512-byte
//! footer (Microsoft's VHD format specification, "Hard Disk Footer Format").
//!
//! Azure takes only fixed VHDs whose virtual size is a whole number of MiB,
//! so the virtual size is the raw size rounded up to 1 MiB. The creator
//! application is `qem2`, as `qemu-img convert -o subformat=fixed,force_size`
//! writes for Azure: QEMU (block/vpc.c) and Hyper-V then take the size from
//! the footer's current size rather than from the CHS geometry, which cannot
//! express most sizes exactly. Time stamp 0 (2000-01-01, the VHD epoch); the
//! unique id is the first 16 bytes of the image id.

use super::{Extent, Shape, Source, copy_from, push};

pub const FOOTER_LEN: u64 = 512;
/// Azure's granularity of a VHD's virtual size.
pub const ALIGN: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vhd {
    extents: Vec<Extent>,
    footer: [u8; FOOTER_LEN as usize],
}

impl Vhd {
    pub fn new(shape: &Shape) -> Vhd {
        let virtual_size = shape.size.div_ceil(ALIGN) * ALIGN;
        let mut extents = Vec::new();
        push(&mut extents, shape.size, Source::Raw(0));
        push(&mut extents, virtual_size - shape.size, Source::Zero);
        push(&mut extents, FOOTER_LEN, Source::Meta);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&shape.id.0.0[..16]);
        Vhd {
            extents,
            footer: footer(virtual_size, uuid),
        }
    }

    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    pub fn meta(&self, at: u64, buf: &mut [u8]) {
        let base = self.extents.last().map_or(0, |e| e.at);
        copy_from(&self.footer, base, at, buf);
    }
}

/// The footer of a fixed disk of `size` bytes (a multiple of 512).
pub fn footer(size: u64, uuid: [u8; 16]) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // format version 1.0
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: none (fixed)
    // 24..28: time stamp 0.
    f[28..32].copy_from_slice(b"qem2");
    f[32..36].copy_from_slice(&0x0005_0003u32.to_be_bytes()); // creator version
    f[36..40].copy_from_slice(b"Wi2k"); // creator host OS
    f[40..48].copy_from_slice(&size.to_be_bytes()); // original size
    f[48..56].copy_from_slice(&size.to_be_bytes()); // current size
    let (c, h, s) = geometry(size / 512);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&2u32.to_be_bytes()); // disk type: fixed
    f[68..84].copy_from_slice(&uuid);
    // 84: saved state 0; the rest reserved, zero.
    let sum: u32 = f.iter().map(|&b| u32::from(b)).sum();
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f
}

/// Cylinders, heads and sectors per track for a disk of `sectors` sectors:
/// the smallest the VHD specification's algorithm gives that holds them all,
/// as QEMU's vpc_create picks it (readers that size a disk by its geometry
/// then see all of it), or the largest geometry there is.
pub fn geometry(sectors: u64) -> (u16, u8, u8) {
    let max = 65535 * 16 * 255;
    let mut n = sectors.min(max);
    loop {
        let (c, h, s) = chs(n);
        if u64::from(c) * u64::from(h) * u64::from(s) >= sectors || n >= max {
            return (c, h, s);
        }
        n += 1;
    }
}

/// The algorithm of the VHD specification's appendix ("CHS Calculation").
fn chs(sectors: u64) -> (u16, u8, u8) {
    let total = sectors.min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        (spt, heads, cth) = (s, h, c);
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}
