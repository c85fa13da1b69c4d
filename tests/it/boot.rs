//! A real guest boots from the mount: QEMU (TCG) boots the `small` guest of
//! `scripts/guest.sh` through `scripts/boot.sh`, from a fresh qcow2 overlay whose
//! backing file is the guest's raw root image on a `vmifs mount`. The image is
//! pushed with k=4, m=2 over three `vmifs serve` stores and one S3 store, and one
//! store is killed with SIGKILL as soon as the guest starts reading its disk. The
//! guest checks a 16 MiB random file on its root file system against its sha256
//! before it prints the boot marker, so the marker means the bytes were right.
//!
//! Needs `qemu-system-x86_64` and the tools of `scripts/install-qemu.sh`
//! (`scripts/test.sh` installs them); without them the test fails, unless
//! `VMIFS_SKIP_BOOT=1` says to skip it. The mount point is under
//! `/tmp/vmifs-boot-tests/`; the [`Daemon`] guard always unmounts and kills the
//! daemon by PID, and the [`Boot`] guard kills QEMU's process group.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::mount::{Daemon, image_sum, status};
use crate::harness::{ChildGuard, Cluster};
use vmifs::mount::control::Status;

const CHUNK: u64 = 256 * 1024;
const MNT_ROOT: &str = "/tmp/vmifs-boot-tests";
pub(crate) const MARKER: &str = "VMIFS-BOOT-OK";
/// The limit `scripts/boot.sh` puts on one boot (a TCG boot here takes seconds,
/// but the machine may be busy).
const BOOT_TIMEOUT_S: u64 = 600;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// The kernel, initramfs and root image of the `small` guest, built (or found in
/// the cache) by `scripts/guest.sh`; `None` only when `VMIFS_SKIP_BOOT=1`.
pub(crate) fn small_guest() -> Option<Vec<(String, String)>> {
    if std::env::var("VMIFS_SKIP_BOOT").as_deref() == Ok("1") {
        eprintln!("boot test skipped: VMIFS_SKIP_BOOT=1");
        return None;
    }
    let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
    assert!(
        qemu.is_ok_and(|o| o.status.success()),
        "qemu-system-x86_64 is not installed: run scripts/install-qemu.sh \
         (or set VMIFS_SKIP_BOOT=1 to skip this test)"
    );
    let out = Command::new(scripts().join("guest.sh"))
        .arg("small")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/guest.sh small failed (set VMIFS_SKIP_BOOT=1 to skip this test): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vars: Vec<(String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), unquote(v)))
        .collect();
    for key in ["GUEST_KERNEL", "GUEST_INITRD", "GUEST_ROOT", "GUEST_APPEND"] {
        assert!(
            vars.iter().any(|(k, _)| k == key),
            "scripts/guest.sh printed no {key}: {vars:?}"
        );
    }
    Some(vars)
}

/// Undo bash's `printf %q` for printable text: a backslash quotes the next byte.
fn unquote(v: &str) -> String {
    assert!(!v.starts_with("$'"), "unexpected quoting: {v}");
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

fn mountpoint(test: &str) -> PathBuf {
    crate::harness::mount::mountpoint(MNT_ROOT, test)
}

/// `scripts/boot.sh` with its QEMU, in a process group of their own; dropping it
/// kills the group (through its [`ChildGuard`]).
pub(crate) struct Boot {
    child: ChildGuard,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Boot {
    fn start(c: &Cluster, raw: &Path, guest: &[(String, String)], console: &Path) -> Boot {
        Self::start_as(c, raw, "raw", guest, console)
    }

    /// Boot from `image`, in QEMU format `format` (raw, vpc, vmdk, qcow2).
    pub(crate) fn start_as(
        c: &Cluster,
        image: &Path,
        format: &str,
        guest: &[(String, String)],
        console: &Path,
    ) -> Boot {
        let (stdout, stderr) = (c.path("boot.out"), c.path("boot.err"));
        let mut cmd = Command::new(scripts().join("boot.sh"));
        cmd.arg(image)
            .env("BOOT_BACKING_FORMAT", format)
            .envs(guest.iter().map(|(k, v)| (k, v)))
            .env("BOOT_TIMEOUT", BOOT_TIMEOUT_S.to_string())
            .env("BOOT_MEM", "256")
            .env("BOOT_LOG", console)
            .env("TMPDIR", c.dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .process_group(0);
        let child = ChildGuard::spawn_group(&mut cmd, "scripts/boot.sh");
        Boot {
            child,
            stdout,
            stderr,
        }
    }

    fn finished(&mut self) -> bool {
        self.child.try_wait().is_some()
    }

    /// Waits for boot.sh (which bounds the boot itself); its exit status,
    /// stdout and stderr.
    pub(crate) fn wait(&mut self) -> (bool, String, String) {
        let status = self.child.wait_for_exit(BOOT_TIMEOUT_S + 120);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        (status.success(), read(&self.stdout), read(&self.stderr))
    }
}

fn bytes_read(st: &Status) -> u64 {
    image_sum(st, |i| i.bytes_read)
}

#[test]
fn a_guest_boots_from_the_mount_while_a_store_dies() {
    let Some(guest) = small_guest() else {
        return;
    };
    let root = &guest.iter().find(|(k, _)| k == "GUEST_ROOT").unwrap().1;
    let mut c = Cluster::start(3, 1, 4, 2, CHUNK);
    c.ok(&["push", root, "--name", "small", "--tag", "ci"]);

    let mnt = mountpoint("boot");
    let d = Daemon::start(&c, &mnt);
    let backing = mnt.join("small/ci.raw");
    assert_eq!(
        std::fs::metadata(&backing).unwrap().len(),
        std::fs::metadata(root).unwrap().len()
    );

    let console = c.path("console.log");
    let mut boot = Boot::start(&c, &backing, &guest, &console);
    // Kill one HTTP store once the guest has begun to read its disk.
    let deadline = Instant::now() + Duration::from_secs(BOOT_TIMEOUT_S);
    while bytes_read(&status(&c)) == 0 && !boot.finished() {
        assert!(
            Instant::now() < deadline,
            "the guest never read its disk: {}",
            std::fs::read_to_string(&console).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let read_at_kill = bytes_read(&status(&c));
    c.servers[1].stop(); // SIGKILL

    let (ok, stdout, stderr) = boot.wait();
    let console_text = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(
        ok,
        "no boot marker: {stderr}\nconsole:\n{console_text}\nmount log:\n{}",
        d.log_text()
    );
    assert!(console_text.lines().any(|l| l.contains(MARKER)));
    assert!(
        !console_text.contains("VMIFS-BOOT-FAILED"),
        "{console_text}"
    );
    let seconds: f64 = stdout.trim().parse().expect("boot.sh prints seconds");

    // The guest read its root file system (at least the 16 MiB payload) through
    // the mount; what it read after the kill needed the other stores.
    let st = status(&c);
    let read = bytes_read(&st);
    eprintln!(
        "booted from the mount in {seconds:.1} s; read {read} bytes, {read_at_kill} before the store was killed; {} degraded chunk reads",
        st.degraded_reads
    );
    assert!(read >= 16 << 20, "the guest read only {read} bytes: {st:?}");
    if read - read_at_kill >= 1 << 20 {
        assert!(st.degraded_reads > 0, "{st:?}");
    }
}
