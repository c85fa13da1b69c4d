#!/usr/bin/env python3
"""One timed QEMU boot for scripts/bench-boot.py (which imports its boot()).

    boot-once.py --overlay vm.qcow2 --kernel K --initrd I --append A \
                 [--proxy-control PORT]... [--timeout 300] [--trace FILE] \
                 [--console FILE] [--mem 512]

Boots the guest under TCG from the qcow2 overlay (whose backing file is the
image under test), reads its serial console line by line, and prints one JSON
object:

  seconds        QEMU start to the first console line holding VMIFS-BOOT-OK
  down_marker    bytes the WAN proxies had delivered towards this host when the
                 marker came (summed over --proxy-control ports, counted from
                 QEMU's start: callers subtract their own baseline if they want
                 set-up traffic counted too)
  down_end       the same once QEMU has exited
  proxies_start / proxies_marker / proxies_end   each proxy's counters
  guest          the guest disk's read statistics at the marker (QEMU's
                 query-blockstats): rd_bytes, rd_operations, rd_total_time_ns
                 (time read requests spent in flight, summed over requests)
  backing_marker / backing_end   with --trace: reads that reached the image
                 under test (reads, bytes, distinct bytes) by the marker / in all

With --trace, QEMU's blk_co_preadv and bdrv_co_preadv_part trace events (every
read at every node of the drive, with a timestamp) go to FILE. Exits 1 (JSON still printed, with "error") when there is
no marker within --timeout seconds.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

MARKER = "VMIFS-BOOT-OK"


def proxy_stats(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            data = b""
            while not data.endswith(b"\n"):
                more = s.recv(65536)
                if not more:
                    break
                data += more
        return json.loads(data)
    except (OSError, ValueError) as e:
        return {"error": str(e), "down": 0, "up": 0}


class Qmp:
    def __init__(self, path, deadline):
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.sock.settimeout(10)
        self.buf = b""
        self.read()  # greeting
        self.call("qmp_capabilities")

    def read(self):
        while b"\n" not in self.buf:
            more = self.sock.recv(1 << 20)
            if not more:
                raise OSError("QMP closed")
            self.buf += more
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def call(self, cmd, **args):
        self.sock.sendall(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
        while True:
            msg = self.read()
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise OSError(f"QMP {cmd}: {msg['error']}")


def guest_stats(qmp):
    """The guest disk's read statistics (QEMU accounts them per drive only)."""
    for dev in qmp.call("query-blockstats"):
        st = dev["stats"]
        return {k: st.get(k) for k in ("rd_bytes", "rd_operations", "rd_total_time_ns")}
    return None


def backing_reads(trace, until):
    """Reads that reached the backing image (the image under test), from the
    trace: the guest's reads the overlay could not answer, plus the reads qcow2
    makes to fill a cluster on a partial write. Returns (reads, distinct bytes),
    reads as [(unix time, offset, bytes)], up to time `until`.

    The log has `PID@SEC.USEC:event args` lines. The backing node is found by
    order: the first guest read (blk_co_preadv on the overlay node) goes down to
    the overlay node, then to the backing node with the same offset and length
    (a fresh overlay has nothing allocated)."""
    events = []
    with open(trace) as f:
        for line in f:
            head, _, rest = line.partition(":")
            if "@" not in head:
                continue
            parts = rest.split()
            if len(parts) < 9:
                continue
            t = float(head.split("@")[1])
            fields = dict(zip(parts[1::2], parts[2::2]))
            events.append((t, parts[0], fields.get("bs"), int(fields.get("offset", 0)),
                           int(fields.get("bytes", 0))))
    first = next((e for e in events if e[1] == "blk_co_preadv"), None)
    if first is None:
        return [], 0
    top = first[2]
    i = events.index(first)
    backing = next((e[2] for e in events[i + 1:] if e[1] == "bdrv_co_preadv_part"
                    and e[2] != top and (e[3], e[4]) == (first[3], first[4])), None)
    reads = [(t, off, n) for t, ev, bs, off, n in events
             if ev == "bdrv_co_preadv_part" and bs == backing and t <= until]
    spans = sorted((off, off + n) for _, off, n in reads)
    distinct, end = 0, 0
    for a, b in spans:
        if b > end:
            distinct += b - max(a, end)
            end = b
    return reads, distinct


def boot(overlay, kernel, initrd, append, proxy_control=(), timeout=300.0, trace=None,
         console=None, mem="512"):
    """One boot; returns the result described above ("seconds" is None, with
    "error", when no marker came). QEMU is stopped however this returns."""
    tmp = tempfile.mkdtemp(prefix="vmifs-boot-")
    qmp_path = os.path.join(tmp, "qmp.sock")
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", str(mem), "-nodefaults", "-no-user-config",
        "-display", "none", "-no-reboot", "-nic", "none",
        "-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
        "-kernel", kernel, "-initrd", initrd, "-append", append,
        "-drive", f"file={overlay},if=virtio,format=qcow2",
        "-qmp", f"unix:{qmp_path},server=on,wait=off",
    ]
    if trace:
        cmd += ["-msg", "timestamp=on", "-trace", "enable=blk_co_preadv", "-trace",
                "enable=bdrv_co_preadv_part", "-D", trace]
    result = {"seconds": None}
    console = open(console or os.devnull, "w")
    qemu = None
    try:
        start_stats = [proxy_stats(port) for port in proxy_control]
        t0 = time.monotonic()
        result["start_unix"] = time.time()
        qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        _watch(qemu, result, console, proxy_control, t0, t0 + timeout, qmp_path, timeout)
        result["proxies_end"] = [proxy_stats(port) for port in proxy_control]
        result["proxies_start"] = start_stats

        def down(stats):
            return sum(s.get("down", 0) for s in stats)

        base = down(start_stats)
        if "proxies_marker" in result:
            result["down_marker"] = down(result["proxies_marker"]) - base
        result["down_end"] = down(result["proxies_end"]) - base
        if trace and result["seconds"] is not None:
            until = result["start_unix"] + result["seconds"]
            reads, distinct = backing_reads(trace, until)
            result["backing_marker"] = {"reads": len(reads), "bytes": sum(n for _, _, n in reads),
                                        "distinct_bytes": distinct}
            reads, distinct = backing_reads(trace, float("inf"))
            result["backing_end"] = {"reads": len(reads), "bytes": sum(n for _, _, n in reads),
                                     "distinct_bytes": distinct}
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        console.close()
        try:
            os.unlink(qmp_path)
        except OSError:
            pass
        try:
            os.rmdir(tmp)
        except OSError:
            pass
    return result


def _watch(qemu, result, console, proxy_control, t0, deadline, qmp_path, timeout):
    """Reads the console until the marker (or the deadline, or QEMU's exit),
    then lets the guest power off; fills in `result`."""
    marker = threading.Event()
    marker_at = []
    tail = []

    def read_console():
        for raw in qemu.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            console.write(line + "\n")
            tail.append(line)
            del tail[:-25]
            if MARKER in line and not marker.is_set():
                marker_at.append(time.monotonic())
                marker.set()

    reader = threading.Thread(target=read_console, daemon=True)
    reader.start()
    qmp = None
    try:
        qmp = Qmp(qmp_path, min(deadline, time.monotonic() + 30))
    except OSError as e:
        result["qmp_error"] = str(e)
    while not marker.wait(0.05):
        if time.monotonic() > deadline or qemu.poll() is not None:
            break
    if marker.is_set():
        result["seconds"] = round(marker_at[0] - t0, 3)
        result["proxies_marker"] = [proxy_stats(port) for port in proxy_control]
        if qmp is not None:
            try:
                result["guest"] = guest_stats(qmp)
            except (OSError, ValueError) as e:
                result["qmp_error"] = str(e)
        try:  # the guest powers off after the marker
            qemu.wait(timeout=30)
        except subprocess.TimeoutExpired:
            result["note"] = "guest did not power off within 30 s of the marker"
    else:
        result["error"] = ("no marker within %.0f s" % timeout) if qemu.poll() is None \
            else f"QEMU exited ({qemu.returncode}) before the marker"
        result["console_tail"] = tail[-15:]
    if qmp is not None:
        qmp.sock.close()
    if qemu.poll() is None:
        qemu.kill()
        qemu.wait()
    result["qemu_stderr"] = qemu.stderr.read().decode(errors="replace")[-2000:]
    if not result["qemu_stderr"]:
        del result["qemu_stderr"]
    reader.join(5)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--overlay", required=True)
    p.add_argument("--kernel", required=True)
    p.add_argument("--initrd", required=True)
    p.add_argument("--append", required=True)
    p.add_argument("--proxy-control", type=int, action="append", default=[])
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--trace")
    p.add_argument("--console")
    p.add_argument("--mem", default="512")
    a = p.parse_args()
    result = boot(a.overlay, a.kernel, a.initrd, a.append, a.proxy_control, a.timeout, a.trace,
                  a.console, a.mem)
    print(json.dumps(result))
    sys.exit(0 if result["seconds"] is not None else 1)


if __name__ == "__main__":
    main()
