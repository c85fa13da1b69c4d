//! A monolithicFlat VMDK: a short text descriptor whose one extent is the raw
//! file, named relative to the descriptor (VMware's Virtual Disk Format 1.1,
//! "Text Descriptor"). The data stays where it is; a VMDK reader opens the
//! raw file beside the descriptor.
//!
//! The extent's access is `RW` (QEMU's block/vmdk.c skips any other extent);
//! a read-only mount still cannot be written, and QEMU opens backing files
//! read-only. The content id (`CID`) is taken from the image id; the geometry
//! lines are those `qemu-img create -f vmdk` writes.

use super::{Extent, Shape, Source, copy_from, push};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vmdk {
    extents: Vec<Extent>,
    text: Vec<u8>,
}

impl Vmdk {
    pub fn new(shape: &Shape, raw_name: &str) -> Vmdk {
        let text = descriptor(shape, raw_name).into_bytes();
        let mut extents = Vec::new();
        push(&mut extents, text.len() as u64, Source::Meta);
        Vmdk { extents, text }
    }

    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    pub fn meta(&self, at: u64, buf: &mut [u8]) {
        copy_from(&self.text, 0, at, buf);
    }
}

/// The descriptor text.
pub fn descriptor(shape: &Shape, raw_name: &str) -> String {
    let sectors = shape.size.div_ceil(512);
    let cid = u32::from_be_bytes(shape.id.0.0[..4].try_into().unwrap()) & 0x7fff_ffff;
    let cylinders = (sectors / (16 * 63)).min(16383);
    // A name with a double quote cannot be written in a descriptor; names of
    // images, tags and ids never hold one.
    let name = raw_name.replace('"', "_");
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\
         \n\
         # Extent description\n\
         RW {sectors} FLAT \"{name}\" 0\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"ide\"\n"
    )
}
