//! Recognising image formats by their magic bytes. Everything that is not a
//! known container format is published as raw.

/// A disk image format `qemu-img` can convert to raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Vdi,
}

impl Format {
    /// The name `qemu-img -f` takes (VHD is `vpc`).
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vpc",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
        }
    }

    /// The name recorded in the manifest and searched with `format=`.
    pub fn label(self) -> &'static str {
        match self {
            Format::Vhd => "vhd",
            f => f.qemu_name(),
        }
    }
}

/// Detect a format from the first 512 bytes and the last 512 bytes of a file.
pub fn detect(head: &[u8], tail: &[u8]) -> Format {
    if head.starts_with(b"QFI\xfb") {
        Format::Qcow2
    } else if head.starts_with(b"KDMV") || head.starts_with(b"# Disk DescriptorFile") {
        Format::Vmdk
    } else if head.starts_with(b"vhdxfile") {
        Format::Vhdx
    } else if head.len() >= 68 && head[64..68] == [0x7f, 0x10, 0xda, 0xbe] {
        Format::Vdi
    } else if head.starts_with(b"conectix") || tail.starts_with(b"conectix") {
        Format::Vhd
    } else {
        Format::Raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_table() {
        let mut vdi = vec![0u8; 512];
        vdi[64..68].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        let cases: &[(&[u8], &[u8], Format)] = &[
            (b"QFI\xfb\0\0\0\x03", b"", Format::Qcow2),
            (b"KDMV\x01", b"", Format::Vmdk),
            (b"# Disk DescriptorFile\n", b"", Format::Vmdk),
            (b"vhdxfile", b"", Format::Vhdx),
            (&vdi, b"", Format::Vdi),
            (b"\0\0\0\0", b"conectix\0\0", Format::Vhd),
            (b"conectix", b"", Format::Vhd),
            (b"\xebc\x90", b"\x55\xaa", Format::Raw),
            (b"", b"", Format::Raw),
        ];
        for (head, tail, want) in cases {
            assert_eq!(detect(head, tail), *want, "{head:?}");
        }
    }
}
