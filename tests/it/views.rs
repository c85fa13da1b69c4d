//! Format views through a real mount and `vmifs get --format`: every view of a
//! pushed image (with all-zero chunks) passes `qemu-img info`, `check` (where
//! the format has one: QEMU's vpc driver has none) and `compare` against the
//! raw file, by tag and under `.by-id/`; reading a view's metadata fetches
//! nothing; `get --format` writes the mount's bytes; a guest boots from each
//! view (through `scripts/boot.sh`, as [`crate::boot`] does).
//!
//! Needs `qemu-img` (and for the boot, what [`crate::boot`] needs; the boot
//! is skipped with `VMIFS_SKIP_BOOT=1`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::boot::{Boot, MARKER, small_guest};
use crate::harness::mount::{Daemon, image_sum, status};
use crate::harness::{Cluster, same_file, write_image};

const CHUNK: u64 = 256 * 1024;
const MNT_ROOT: &str = "/tmp/vmifs-view-tests";
const MIB: u64 = 1 << 20;
/// (file extension, `qemu-img -f` name)
const VIEWS: [(&str, &str); 3] = [("vhd", "vpc"), ("vmdk", "vmdk"), ("qcow2", "qcow2")];

fn mountpoint(test: &str) -> PathBuf {
    crate::harness::mount::mountpoint(MNT_ROOT, test)
}

fn qemu_img(args: &[&str], files: &[&Path]) -> (bool, String) {
    let o = Command::new("qemu-img")
        .args(args)
        .args(files)
        .output()
        .expect("qemu-img is not installed (scripts/install-qemu.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// The virtual size `qemu-img info` reports, checking that it warns of nothing.
fn virtual_size(file: &Path, fmt: &str) -> u64 {
    let o = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", fmt])
        .arg(file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.is_empty(),
        "{}: {err}",
        file.display()
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], fmt, "{v}");
    v["virtual-size"].as_u64().unwrap()
}

/// `qemu-img check` and `compare` of `view` against `raw`.
fn check_and_compare(view: &Path, fmt: &str, raw: &Path) {
    if fmt != "vpc" {
        let (ok, text) = qemu_img(&["check", "-f", fmt], &[view]);
        assert!(ok, "qemu-img check {}: {text}", view.display());
        assert!(text.contains("No errors were found"), "{text}");
        assert!(!text.contains("leaked"), "{text}");
    }
    let (ok, text) = qemu_img(&["compare", "-f", fmt, "-F", "raw"], &[view, raw]);
    assert!(ok, "qemu-img compare {}: {text}", view.display());
    assert!(text.contains("Images are identical"), "{text}");
}

fn fetched(c: &Cluster) -> (u64, u64, u64) {
    let st = status(c);
    (
        st.chunks_fetched,
        st.pieces_fetched,
        image_sum(&st, |i| i.bytes_fetched),
    )
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// The offset in a qcow2 file of the data of guest cluster 0 (which must be
/// allocated), read from its header, L1 and L2 tables.
fn first_data_cluster(f: &File) -> u64 {
    let mut header = [0u8; 104];
    f.read_exact_at(&mut header, 0).unwrap();
    let mut entry = [0u8; 8];
    f.read_exact_at(&mut entry, be64(&header, 40)).unwrap();
    let l2 = be64(&entry, 0) & !(1 << 63);
    f.read_exact_at(&mut entry, l2).unwrap();
    be64(&entry, 0) & !(1 << 63)
}

/// A 24 MiB image of random, repeated and all-zero MiB (no tail: whole
/// sectors), pushed as `deb:12` over three stores, code 2+1.
fn setup() -> (Cluster, PathBuf, String) {
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    let img = c.path("img.raw");
    write_image(&img, 24);
    File::options()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(24 * MIB)
        .unwrap();
    let data = std::fs::read(&img).unwrap();
    let zero = data
        .chunks(CHUNK as usize)
        .filter(|c| c.iter().all(|&b| b == 0))
        .count();
    assert!(zero >= 4, "the image needs all-zero chunks: {zero}");
    let id = c.push(&img, "deb", "12").trim().to_string();
    (c, img, id)
}

#[test]
fn each_view_passes_qemu_img_and_get_writes_the_same_bytes() {
    let (c, img, id) = setup();
    let size = 24 * MIB;
    let mnt = mountpoint("qemu-img");
    let d = Daemon::start(&c, &mnt);
    let mut names: Vec<String> = std::fs::read_dir(mnt.join("deb"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["12.qcow2", "12.raw", "12.vhd", "12.vmdk"]);

    // Metadata alone fetches nothing: the VMDK descriptor, the VHD footer,
    // the qcow2 header, tables and `qemu-img info` of the qcow2 and VMDK.
    let vmdk = std::fs::read_to_string(mnt.join("deb/12.vmdk")).unwrap();
    assert!(vmdk.contains("RW 49152 FLAT \"12.raw\" 0"), "{vmdk}");
    let vhd = File::open(mnt.join("deb/12.vhd")).unwrap();
    assert_eq!(vhd.metadata().unwrap().len(), size + 512);
    let mut footer = [0u8; 512];
    vhd.read_exact_at(&mut footer, size).unwrap();
    assert_eq!(&footer[..8], b"conectix");
    let qcow2 = File::open(mnt.join("deb/12.qcow2")).unwrap();
    let data_at = first_data_cluster(&qcow2);
    for (ext, fmt) in [("qcow2", "qcow2"), ("vmdk", "vmdk")] {
        assert_eq!(virtual_size(&mnt.join(format!("deb/12.{ext}")), fmt), size);
    }
    assert_eq!(fetched(&c), (0, 0, 0), "{}", d.log_text());
    // A read of the qcow2's first data cluster fetches only the chunk under
    // it (chunk 0 of the raw image), or part of it.
    let src = std::fs::read(&img).unwrap();
    let mut buf = vec![0u8; 4096];
    qcow2.read_exact_at(&mut buf, data_at).unwrap();
    assert!(buf[..] == src[..4096]);
    let (chunks, pieces, bytes) = fetched(&c);
    assert!(chunks + pieces <= 1 && bytes <= CHUNK, "{:?}", fetched(&c));

    // qemu-img on every view, by tag and by id.
    for (dir, stem) in [("deb", "12".to_string()), (".by-id", id.clone())] {
        let raw = mnt.join(format!("{dir}/{stem}.raw"));
        for (ext, fmt) in VIEWS {
            let view = mnt.join(format!("{dir}/{stem}.{ext}"));
            assert_eq!(virtual_size(&view, fmt), size, "{}", view.display());
            check_and_compare(&view, fmt, &raw);
        }
        let text = std::fs::read_to_string(mnt.join(format!("{dir}/{stem}.vmdk"))).unwrap();
        assert!(text.contains(&format!("FLAT \"{stem}.raw\" 0")), "{text}");
    }
    // The qcow2 stores only the non-zero clusters.
    let zero_bytes = src
        .chunks(CHUNK as usize)
        .filter(|c| c.iter().all(|&b| b == 0))
        .count() as u64
        * CHUNK;
    let qcow2_len = qcow2.metadata().unwrap().len();
    assert!(qcow2_len - data_at == size - zero_bytes, "{qcow2_len}");

    // `get --format` writes the view's bytes; a VMDK's data lands beside it.
    let out = tempfile::tempdir_in(c.dir.path()).unwrap();
    for (ext, fmt) in VIEWS {
        let file = out.path().join(format!("disk.{ext}"));
        c.ok(&["get", "deb:12", file.to_str().unwrap(), "--format", ext]);
        if ext == "vmdk" {
            let flat = out.path().join("disk-flat.vmdk");
            assert!(same_file(&flat, &img));
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(text.contains("FLAT \"disk-flat.vmdk\" 0"), "{text}");
            assert_eq!(
                text.len(),
                vmdk.len() + "disk-flat.vmdk".len() - "12.raw".len()
            );
        } else {
            assert!(
                same_file(&file, &mnt.join(format!("deb/12.{ext}"))),
                "{ext}"
            );
        }
        assert_eq!(virtual_size(&file, fmt), size);
        check_and_compare(&file, fmt, &img);
    }
    let mut left: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["disk-flat.vmdk", "disk.qcow2", "disk.vhd", "disk.vmdk"]
    );

    // A bad format: one line, nothing written.
    let bad = out.path().join("bad.vdi");
    let o = c.vmifs(&["get", "deb:12", bad.to_str().unwrap(), "--format", "vdi"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("vmifs: error: --format: unknown format \"vdi\""),
        "{err}"
    );
    assert!(!bad.exists());
}

#[test]
fn a_guest_boots_from_each_view() {
    let Some(guest) = small_guest() else {
        return;
    };
    let root = &guest.iter().find(|(k, _)| k == "GUEST_ROOT").unwrap().1;
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    c.ok(&["push", root, "--name", "small", "--tag", "ci"]);
    let mnt = mountpoint("boot");
    let d = Daemon::start(&c, &mnt);
    for (ext, fmt) in VIEWS {
        let view = mnt.join(format!("small/ci.{ext}"));
        let console = c.path(&format!("console-{ext}.log"));
        let (ok, stdout, stderr) = Boot::start_as(&c, &view, fmt, &guest, &console).wait();
        let console_text = std::fs::read_to_string(&console).unwrap_or_default();
        assert!(
            ok && console_text.lines().any(|l| l.contains(MARKER)),
            "no boot marker from the {ext} view: {stderr}\nconsole:\n{console_text}\nmount log:\n{}",
            d.log_text()
        );
        assert!(
            !console_text.contains("VMIFS-BOOT-FAILED"),
            "{console_text}"
        );
        eprintln!("booted from the {ext} view in {} s", stdout.trim());
    }
}
