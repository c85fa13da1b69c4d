#!/usr/bin/env python3
"""A test bed of real hosts for peer chunk sharing: N mount daemons, each in its
own network namespace, reading one image from stores behind an emulated WAN.

    scripts/peer-bed.py                                  # 8 hosts, 1 GiB, unicast, baseline N=1 first
    scripts/peer-bed.py --hosts 1,4,8 --json bed.json    # one round per host count
    scripts/peer-bed.py --hosts 4 --size 128MiB --no-baseline
    scripts/peer-bed.py --peers on --mode trace --trace benches/traces/debian-boot.trace
    scripts/peer-bed.py --fault stop --fault-at 3 --stop-for 5

The network, all of it made by this script and removed when it ends:

- a bridge in the root namespace (`vmifs<name>0`, no address of its own, no
  other port), the site's LAN, 10.77.0.0/24 by default;
- per host i (1..N) a namespace `vmifs-<name>-h<i>` joined to the bridge by a
  veth pair, address 10.77.0.(10+i), a `tbf` of --lan-rate on both ends of its
  link (what the host sends and what it receives);
- the origin: a namespace `vmifs-<name>-origin` at 10.77.0.2 running --stores
  `vmifs serve` stores (on its loopback), each behind a scripts/wan-proxy.py
  link that adds --wan-rtt (the kernel here has no netem, so the delay is in
  user space), and a `tbf` of --wan-rate on both ends of the origin's veth: one
  shared WAN link, as the origin's egress. Origin egress is the bytes the
  origin's veth delivered to the bridge (`/sys/class/net/.../statistics`).

No namespace has a default route, so nothing in the bed can address anything
outside the bridge; a tcpdump on the bridge counts, for the whole run, IPv4
packets with an address outside the bed's subnet (reported; must be 0), and a
probe datagram from every host proves the capture sees the bed's traffic.

One image (random non-zero bytes of --size, or --image FILE) is pushed once
(k=4, m=2, 256 KiB chunks) into the stores. Then, per round, N daemons start
with `nsenter --net=/run/netns/...` (not `ip netns exec`, which would also
unshare the mount namespace and hide the FUSE mount), each with its own cache
and config (`[peers]` with --peers on: listen = the host's address, site =
"bed-r<round>", a new site per round so that no host of an earlier round
counts as live, lease = --lease), and the readers run in this process, in
the root namespace, through each host's mount, all released at once (with
--peers on, once every daemon's status counts all the others as live):

- --mode all: every host reads the whole image in --block pieces, in order,
  and compares each piece with the source (a cmp in the same pass);
- --mode trace: every host replays a read trace in order (lines "OFFSET LENGTH",
  or a QEMU trace log with blk_co_preadv events), compared the same way.

Reported per host: completion time, bytes read, first differing offset (none
is the only good answer), read latency p50/p99/max and the stall (the longest
gap between successive completed reads, counted from the common start), its
daemon's CPU seconds and, with --peers on, its bytes from peers and from the
stores and its peers' charges and states (`vmifs status --json`); over
the hosts: completion p50/p99 and origin egress, each also against one host
alone (a round with N=1 run first in the same invocation; --no-baseline skips
it). Rounds run in order of host count, each with fresh daemons and caches;
--repeat R runs that sequence R times, each round compared with the latest
round of one host alone, so that on a busy machine A and B alternate. --json
FILE writes it all; a short table goes to stderr.

Faults, on the last host, --fault-at seconds after the start: `kill` (kill -9
its daemon), `stop` (SIGSTOP, SIGCONT after --stop-for seconds), `leave` (its
daemon ends with SIGTERM, the host's reader stops), `join` (the host's daemon
starts only then, and its reader with it). The faulted host is reported, but
only `stop` and `join` hosts must still read identical bytes.

Everything it starts is stopped by PID (SIGTERM, then SIGKILL after a timeout),
every mount unmounted, the namespaces and links deleted in a `finally`;
leftovers of an earlier run of the same --name are removed first. Every wait
has a timeout (--timeout for a round's reads). Exit status: 0 when every host
that should read identical bytes did and nothing left the bed; 1 otherwise
(one line on stderr); 2 for bad arguments. Runs as root; Python 3 standard
library only.
"""

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

PROG = "peer-bed.py"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MIB = 2**20
STORE_PORT = 9000  # `vmifs serve` on the origin's loopback
LINK_PORT = 8000  # its WAN link on the origin's bed address
PEER_PORT = 7070
sys.dont_write_bytecode = True


class Fail(Exception):
    """Stops the run; its message is the one line printed on stderr."""


def say(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- arguments ----


def parse_size(s):
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B?|B)?\s*", s, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {s!r} (e.g. 1GiB, 128MiB)")
    unit = (m.group(2) or "B").upper().rstrip("B").rstrip("I")
    n = int(float(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit])
    if n <= 0:
        raise argparse.ArgumentTypeError(f"bad size {s!r}: must be above 0")
    return n


def parse_rate(s):
    """Bits per second from e.g. 1Gbit, 100Mbit, 500kbit."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmg]?)(bit)?\s*", s, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad rate {s!r} (e.g. 1Gbit, 100Mbit)")
    n = int(float(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2).lower()])
    if n < 8000:
        raise argparse.ArgumentTypeError(f"bad rate {s!r}: at least 8kbit")
    return n


def parse_ms(s):
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s)?\s*", s)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {s!r} (e.g. 40ms)")
    return float(m.group(1)) * (1000.0 if m.group(2) == "s" else 1.0)


def parse_lease(s):
    if not re.fullmatch(r"[1-9][0-9]*(ms|s|m)", s) or (s.endswith("ms") and int(s[:-2]) < 1000):
        raise argparse.ArgumentTypeError(f"bad lease {s!r} (e.g. 3s, 30s; at least 1s)")
    return s


def parse_hosts(s):
    try:
        ns = [int(x) for x in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad host count {s!r} (e.g. 8 or 1,4,8)") from None
    if not ns or any(not 1 <= n <= 200 for n in ns):
        raise argparse.ArgumentTypeError(f"bad host count {s!r}: each 1..200")
    return ns


def parse_name(s):
    if not re.fullmatch(r"[a-z0-9]{1,6}", s):
        raise argparse.ArgumentTypeError(f"bad name {s!r} (1-6 of a-z0-9)")
    return s


def options(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["all", "trace"], default="all")
    p.add_argument("--hosts", type=parse_hosts, default=[8],
                   help="hosts of the site; a list (1,4,8) runs one round per count (default 8)")
    p.add_argument("--size", type=parse_size, default=parse_size("1GiB"), help="image size (default 1GiB)")
    p.add_argument("--image", help="push this file instead of random bytes of --size")
    p.add_argument("--trace", help="read trace for --mode trace (default benches/traces/debian-boot.trace)")
    p.add_argument("--peers", choices=["on", "off"], default="off",
                   help="on: each daemon gets a [peers] section (default off: unicast)")
    p.add_argument("--lease", type=parse_lease, default="3s",
                   help="[peers] lease of every daemon with --peers on (default 3s: joins and leaves seen within 1 s)")
    p.add_argument("--wan-rate", type=parse_rate, default=parse_rate("1Gbit"),
                   help="the origin's link, each way (default 1Gbit)")
    p.add_argument("--wan-rtt", type=parse_ms, default=parse_ms("40ms"),
                   help="round trip added to every store connection (default 40ms; 0: no WAN proxy)")
    p.add_argument("--lan-rate", type=parse_rate, default=parse_rate("1Gbit"),
                   help="each host's link, each way (default 1Gbit)")
    p.add_argument("--stores", type=int, default=3, help="stores at the origin (default 3)")
    p.add_argument("--block", type=parse_size, default=parse_size("1MiB"), help="read size of --mode all")
    p.add_argument("--no-baseline", action="store_true", help="skip the round with one host alone")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the rounds of all host counts this many times, alternating (default 1)")
    p.add_argument("--fault", choices=["kill", "stop", "leave", "join"], help="applied to the last host")
    p.add_argument("--fault-at", type=float, default=3.0, help="seconds after the start (default 3)")
    p.add_argument("--stop-for", type=float, default=5.0, help="seconds a stopped daemon stays stopped")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds allowed for a round's reads")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--name", type=parse_name, default="bed",
                   help="names of this bed's namespaces and bridge (default bed; two beds need two names)")
    p.add_argument("--subnet", default="10.77.0", help="first three octets of the bed's /24 (default 10.77.0)")
    p.add_argument("--vmifs", help="the vmifs binary (default: cargo build --release, then its binary)")
    p.add_argument("--mount-extra", default="", help="more [mount] lines for every daemon")
    p.add_argument("--log", default="info", help="VMIFS_LOG of the daemons (default info)")
    p.add_argument("--work", help="work directory (default: a new one under $TMPDIR, removed at the end)")
    o = p.parse_args(argv)
    if not 1 <= o.stores <= 20:
        p.error("--stores must be 1..20")
    if not re.fullmatch(r"10\.\d{1,3}\.\d{1,3}", o.subnet) or max(map(int, o.subnet.split("."))) > 255:
        p.error(f"--subnet {o.subnet!r}: want three octets of a 10.x.y.0/24")
    # Rounds in order of host count; one host alone first as the baseline.
    o.counts = sorted(set(o.hosts) | (set() if o.no_baseline else {1}))
    o.most = max(o.counts)
    if not 1 <= o.repeat <= 20:
        p.error("--repeat must be 1..20")
    if o.fault and o.most < 2:
        p.error("--fault needs at least 2 hosts")
    if o.image and not os.path.isfile(o.image):
        p.error(f"--image {o.image}: no such file")
    if o.mode == "trace":
        o.trace = o.trace or os.path.join(ROOT, "benches", "traces", "debian-boot.trace")
        if not os.path.isfile(o.trace):
            p.error(f"--trace {o.trace}: no such file")
    return o


# ---- small helpers ----


def run(cmd, check=True, timeout=60):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    if check and r.returncode:
        why = ((r.stderr or r.stdout).strip().splitlines() or ["failed"])[-1]
        raise Fail(f"{' '.join(cmd)}: {why}")
    return r


def mounts():
    with open("/proc/mounts") as f:
        return [p[1].replace("\\040", " ") for p in map(str.split, f) if len(p) > 1]


def umount(path):
    if path in mounts():
        if subprocess.run(["umount", path], stderr=subprocess.DEVNULL, timeout=30).returncode:
            subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL, timeout=30)


def terminate(proc):
    """SIGTERM, with SIGCONT first in case it was stopped; nothing if it has exited."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
        except ProcessLookupError:
            pass


def stop(proc, grace=10):
    """`terminate`, then SIGKILL after `grace` seconds."""
    terminate(proc)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_for(cond, seconds, what, proc=None, log=None):
    end = time.monotonic() + seconds
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise Fail(f"{what}: exited ({last_line(log)})")
        if time.monotonic() > end:
            raise Fail(f"{what}: not ready after {seconds:.0f} s ({last_line(log)})")
        time.sleep(0.05)


def last_line(path):
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else "no output"
    except (OSError, TypeError):
        return "no output"


def pct(xs, q):
    """The q-th percentile (nearest rank) of xs."""
    xs = sorted(xs)
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, int(-(-q * len(xs) // 100)) - 1))]


def counter(dev, name):
    with open(f"/sys/class/net/{dev}/statistics/{name}") as f:
        return int(f.read())


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            w = f.read().rsplit(")", 1)[1].split()
        return (int(w[11]) + int(w[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def burst(rate_bits):
    """tbf's bucket: a few ms of the rate, at least 64 KiB (GSO packets reach 64 KiB)."""
    return max(128 * 1024, rate_bits // 8 // 250)


def read_trace(path, size):
    """[(offset, length)] in order, from "OFFSET LENGTH" lines or a QEMU trace log
    (blk_co_preadv events); reads past `size` are cut to it or dropped."""
    out, cut = [], 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "blk_co_preadv" in line:
                w = line.split()
                try:
                    off, n = int(w[w.index("offset") + 1]), int(w[w.index("bytes") + 1])
                except (ValueError, IndexError):
                    continue
            elif re.fullmatch(r"\d+\s+\d+", line):
                off, n = map(int, line.split())
            else:
                raise Fail(f"{path}: not a read trace: {line[:60]!r}")
            if off >= size or n == 0:
                cut += 1
                continue
            out.append((off, min(n, size - off)))
    if not out:
        raise Fail(f"{path}: no reads within the image")
    return out, cut


# ---- the bed ----


class Bed:
    def __init__(self, o, vmifs):
        self.o = o
        self.vmifs = vmifs
        self.ns_prefix = f"vmifs-{o.name}-"
        self.bridge = f"vmifs{o.name}0"
        self.veth_prefix = f"v{o.name}"
        self.origin = self.ns_prefix + "origin"
        self.origin_ip = f"{o.subnet}.2"
        self.made_work = not o.work
        self.work = os.path.realpath(o.work or tempfile.mkdtemp(prefix=f"vmifs-{o.name}."))
        os.makedirs(self.work, exist_ok=True)
        self.procs = []  # (Popen, what): everything started, stopped by close()
        self.mnts = []
        self.netns = []
        self.links = []
        self.capture = None

    # -- names --

    def host_ns(self, i):
        return f"{self.ns_prefix}h{i}"

    def host_ip(self, i):
        return f"{self.o.subnet}.{10 + i}"

    def host_veth(self, i):
        return f"{self.veth_prefix}h{i}"

    def origin_veth(self):
        return f"{self.veth_prefix}o"

    def nsenter(self, ns):
        return ["nsenter", f"--net=/run/netns/{ns}", "--"]

    def path(self, *p):
        return os.path.join(self.work, *p)

    # -- processes --

    def spawn(self, cmd, log, what, env=None):
        with open(log, "ab") as f:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
        self.procs.append((p, what))
        return p

    # -- stale leftovers and cleanup --

    def sweep(self):
        """Removes what an earlier run with this --name left: its daemons and
        servers (the processes inside its namespaces, by PID), mounts, namespaces
        and links."""
        r = run(["ip", "netns", "list"], check=False)
        stale = [w.split()[0] for w in r.stdout.splitlines() if w.startswith(self.ns_prefix)]
        pids = set()
        for ns in stale:
            pids |= {int(x) for x in run(["ip", "netns", "pids", ns], check=False).stdout.split()}
        marker = f"/vmifs-{self.o.name}."
        for m in mounts():
            if marker in m and m.endswith("/mnt"):
                umount(m)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for ns in stale:
            run(["ip", "netns", "delete", ns], check=False)
        for link in os.listdir("/sys/class/net"):
            if link == self.bridge or link.startswith(self.veth_prefix + "h") or link == self.origin_veth():
                run(["ip", "link", "delete", link], check=False)
        # Work directories of runs that never reached their cleanup (caches of a GiB each).
        tmp = tempfile.gettempdir()
        dirs = [os.path.join(tmp, d) for d in os.listdir(tmp) if d.startswith(f"vmifs-{self.o.name}.")]
        dirs = [d for d in dirs if os.path.realpath(d) != self.work
                and not any(m.startswith(os.path.realpath(d) + "/") for m in mounts())]
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        if stale or pids or dirs:
            say(f"== removed leftovers of an earlier run: {len(stale)} namespaces, {len(pids)} processes, "
                f"{len(dirs)} work directories")

    def close(self):
        """Stops everything this run started and removes what it made, also
        after a failure or an interrupt."""
        for m in reversed(self.mnts):
            umount(m)
        for p, _ in reversed(self.procs):
            terminate(p)
        for p, _ in reversed(self.procs):
            stop(p, 10)
        for m in reversed(self.mnts):
            umount(m)
        for ns in reversed(self.netns):
            run(["ip", "netns", "delete", ns], check=False)
        for link in reversed(self.links):
            if os.path.exists(f"/sys/class/net/{link}"):
                run(["ip", "link", "delete", link], check=False)
        busy = [m for m in mounts() if m.startswith(self.work + "/")]
        if busy:
            say(f"{PROG}: still mounted, {self.work} kept: {' '.join(busy)}")
        elif self.made_work:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- network --

    def make_bridge(self):
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self.links.append(self.bridge)
        run(["ip", "link", "set", self.bridge, "up"])

    def make_ns(self, ns, veth, ip, rate):
        """A namespace joined to the bridge, `rate` on both ends of its link."""
        run(["ip", "netns", "add", ns])
        self.netns.append(ns)
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        self.links.append(veth)
        run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        for dev, where in ((veth, []), ("eth0", ["-n", ns])):
            run(["tc"] + where + ["qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate}bit",
                                  "burst", str(burst(rate)), "latency", "100ms"])

    def isolation(self, names):
        """Proof that no namespace of the bed can send outside it: no default
        route, no route to an outside address, and the bridge has no address and
        no port but the bed's."""
        for ns in names:
            if run(["ip", "-n", ns, "route", "show", "default"]).stdout.strip():
                raise Fail(f"{ns} has a default route")
            if run(["ip", "-n", ns, "-6", "route", "show", "default"]).stdout.strip():
                raise Fail(f"{ns} has an IPv6 default route")
            for outside in ("192.0.2.1", "2001:db8::1"):
                if run(["ip", "-n", ns, "route", "get", outside], check=False).returncode == 0:
                    raise Fail(f"{ns} can route to {outside}")
        if run(["ip", "-4", "addr", "show", "dev", self.bridge]).stdout.count("inet "):
            raise Fail(f"{self.bridge} has an address")
        ports = sorted(os.listdir(f"/sys/class/net/{self.bridge}/brif"))
        ours = {self.origin_veth()} | {self.host_veth(i) for i in range(1, self.o.most + 1)}
        if set(ports) - ours:
            raise Fail(f"{self.bridge} has ports that are not the bed's: {set(ports) - ours}")
        return {"namespaces": len(names), "default_routes": 0, "bridge_ports": ports}

    def start_capture(self):
        """tcpdump on the bridge (promiscuous, so it sees what the bridge
        forwards between its ports): unicast IPv4 packets with an address outside
        the bed, and the probe datagrams (UDP port 9 to the origin). Link-local
        multicast (IGMP reports of a new interface) and broadcast never leave a
        link and are not counted."""
        net = f"{self.o.subnet}.0/24"
        log = self.path("capture.txt")
        self.capture_log = log
        self.capture = self.spawn(["tcpdump", "-i", self.bridge, "-n", "-l", "-q",
                                   f"ip and not ip multicast and not ip broadcast and "
                                   f"(not (src net {net} and dst net {net}) or "
                                   f"(udp and dst port 9 and dst host {self.origin_ip}))"],
                                  log, "tcpdump")
        wait_for(lambda: "listening on" in open(log, errors="replace").read(), 15, "tcpdump", self.capture, log)

    def probe(self, i):
        """One datagram from host i to the origin's discard port: the capture must see it."""
        code = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'bed', ('{self.origin_ip}', 9))"
        run(self.nsenter(self.host_ns(i)) + [sys.executable, "-c", code])

    def capture_counts(self):
        """(outside packets, probe packets) seen so far."""
        time.sleep(0.3)
        outside = probes = 0
        with open(self.capture_log, errors="replace") as f:
            for line in f:
                m = re.search(r"IP (\S+) > (\S+?):", line)
                if not m:
                    continue
                src, dst = (a.rsplit(".", 1)[0] for a in m.groups())
                inside = all(a.startswith(self.o.subnet + ".") for a in (src, dst))
                if inside and dst == self.origin_ip and m.group(2).endswith(".9"):
                    probes += 1
                elif not inside:
                    outside += 1
        return outside, probes

    # -- the origin --

    def start_origin(self):
        self.make_ns(self.origin, self.origin_veth(), self.origin_ip, self.o.wan_rate)
        # One write token for the push and every daemon (hosts of a site write their records).
        self.token = os.urandom(32).hex()
        tokens = self.path("tokens")
        with open(os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(f"write {self.token}\n")
        self.links_ports = []
        for s in range(self.o.stores):
            root = self.path(f"store-{s}")
            os.makedirs(root, exist_ok=True)
            sport = STORE_PORT + s
            # Without a delay the store listens on the origin's bed address itself.
            listen = f"127.0.0.1:{sport}" if self.o.wan_rtt > 0 else f"{self.origin_ip}:{sport}"
            log = self.path(f"serve-{s}.log")
            p = self.spawn(self.nsenter(self.origin) + [self.vmifs, "serve", "--no-fsync", "--root", root,
                                                        "--tokens", tokens, "--listen", listen], log, f"store {s}")
            wait_for(lambda: "listening on" in open(log, errors="replace").read(), 30, f"store {s}", p, log)
            lport = sport
            if self.o.wan_rtt > 0:
                lport = LINK_PORT + s
                plog = self.path(f"wan-{s}.log")
                p = self.spawn(self.nsenter(self.origin) + [
                    sys.executable, os.path.join(HERE, "wan-proxy.py"), "--listen", f"{self.origin_ip}:{lport}",
                    "--target", f"127.0.0.1:{sport}", "--rtt", f"{self.o.wan_rtt}ms", "--rate", "0", "--ready"],
                    plog, f"WAN link {s}")
                wait_for(lambda: re.search(r"^ready", open(plog, errors="replace").read(), re.M), 30,
                         f"WAN link {s}", p, plog)
            self.links_ports.append((sport, lport))

    def config(self, path, direct, cache=None, extra=""):
        text = '[erasure]\ndata = 4\nparity = 2\nchunk_size = "256KiB"\n'
        for s, (sport, lport) in enumerate(self.links_ports):
            host = "127.0.0.1" if direct and self.o.wan_rtt > 0 else self.origin_ip
            url = f"http://{host}:{sport if direct else lport}"
            text += f'\n[[store]]\nname = "origin-{s}"\nurl = "{url}"\ntoken = "{self.token}"\nallow_plain_http = true\n'
        if cache:
            text += f'\n[cache]\ndir = {json.dumps(cache)}\nmax_size = "{max(2 * self.size // MIB, 256)}MiB"\n'
        text += extra
        with open(path, "w") as f:
            f.write(text)
        return path

    def publish(self):
        if self.o.image:
            src = os.path.realpath(self.o.image)
        else:
            src = self.path("image.raw")
            rng = random.Random(20261207)
            with open(src, "wb") as f:
                left = self.o.size
                while left:
                    n = min(left, 4 * MIB)
                    # random bytes with no all-zero 256 KiB chunk: every chunk is stored
                    f.write(rng.randbytes(n))
                    left -= n
        self.source = src
        self.size = os.path.getsize(src)
        cfg = self.config(self.path("push.toml"), True, cache=self.path("push-cache"))
        say(f"== pushing {self.size / MIB:.0f} MiB to {self.o.stores} stores")
        r = subprocess.run(self.nsenter(self.origin) + [self.vmifs, "--config", cfg, "push", src, "--name", "bed",
                                                        "--tag", "v1"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=1800)
        if r.returncode or not r.stdout.strip():
            raise Fail(f"vmifs push failed: {(r.stderr.strip().splitlines() or ['no output'])[-1]}")
        self.image_id = r.stdout.strip()

    # -- hosts and their daemons --

    def add_host(self, i):
        ns = self.host_ns(i)
        if ns not in self.netns:
            self.make_ns(ns, self.host_veth(i), self.host_ip(i), self.o.lan_rate)
            self.probe(i)

    def remove_host(self, i):
        ns = self.host_ns(i)
        if ns in self.netns:
            run(["ip", "netns", "delete", ns], check=False)
            self.netns.remove(ns)
        veth = self.host_veth(i)
        if os.path.exists(f"/sys/class/net/{veth}"):
            run(["ip", "link", "delete", veth], check=False)
        if veth in self.links:
            self.links.remove(veth)

    def start_daemon(self, rnd, i):
        d = self.path(f"r{rnd}-h{i}")
        os.makedirs(os.path.join(d, "mnt"), exist_ok=True)
        extra = ("\n[mount]\nboot_profiles = false\nauto_profiles = false\nhydrate = false\n"
                 + (self.o.mount_extra.replace("\\n", "\n") + "\n" if self.o.mount_extra else ""))
        if self.o.peers == "on":
            # A site per round: the leased records of an earlier round's hosts
            # (gone, but their leases still running) must not count as live.
            extra += (f'\n[peers]\nlisten = "{self.host_ip(i)}:{PEER_PORT}"\nsite = "bed-r{rnd}"\n'
                      f'lease = "{self.o.lease}"\n')
        cfg = self.config(os.path.join(d, "config.toml"), False, cache=os.path.join(d, "cache"), extra=extra)
        mnt = os.path.join(d, "mnt")
        log = os.path.join(d, "daemon.log")
        env = dict(os.environ, VMIFS_LOG=self.o.log)
        env.pop("VMIFS_CONFIG", None)
        p = self.spawn(self.nsenter(self.host_ns(i)) + [self.vmifs, "--config", cfg, "mount", mnt], log,
                       f"daemon h{i}", env=env)
        self.mnts.append(mnt)
        img = os.path.join(mnt, "bed", "v1.raw")
        wait_for(lambda: mnt in mounts() and os.path.exists(img), 60, f"daemon of host {i}", p, log)
        return {"proc": p, "mnt": mnt, "image": img, "config": cfg, "log": log}

    def stop_daemon(self, h):
        umount(h["mnt"])
        stop(h["proc"], 10)
        umount(h["mnt"])

    def status(self, h):
        r = subprocess.run([self.vmifs, "--config", h["config"], "status", "--json"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=10)
        if r.returncode:
            return None
        try:
            st = json.loads(r.stdout)
        except ValueError:
            return None
        out = {"chunks_fetched": st.get("chunks_fetched"),
               "bytes_fetched": sum(i.get("bytes_fetched", 0) for i in st.get("images", [])),
               "bytes_from_peers": sum(i.get("bytes_from_peers", 0) for i in st.get("images", [])),
               "store_bytes": sum(s.get("bytes", 0) for s in st.get("stores", []))}
        if st.get("site"):
            out["site"] = st["site"]
        return out

    # -- one round --

    def round(self, rnd, n, fault):
        """N hosts read at once; returns the round's results."""
        for i in range(1, n + 1):
            self.add_host(i)
        late = n if fault == "join" else None
        hosts = {}
        try:
            for i in range(1, n + 1):
                if i != late:
                    hosts[i] = self.start_daemon(rnd, i)
            if self.o.peers == "on":
                self.settle(hosts)
            wan_before = counter(self.origin_veth(), "rx_bytes")
            origin_cpu = sum(cpu_seconds(p.pid) for p, what in self.procs if what.startswith(("store", "WAN")))
            lan_before = {i: counter(self.host_veth(i), "rx_bytes") for i in range(1, n + 1)}
            readers = {i: Reader(self, i) for i in range(1, n + 1)}
            start = threading.Barrier(n + 1)
            for i, r in readers.items():
                r.thread = threading.Thread(target=r.run, args=(hosts.get(i), start), daemon=True)
                r.thread.start()
            start.wait(30)
            t0 = time.monotonic()
            own_cpu = sum(os.times()[:2])
            for r in readers.values():
                r.t0 = t0
            faulted = self.fault(rnd, fault, n, hosts, readers, t0) if fault else None
            end = t0 + self.o.timeout
            for r in readers.values():
                r.thread.join(max(0.0, end - time.monotonic()))
            slow = [i for i, r in readers.items() if r.thread.is_alive()]
            if slow:
                raise Fail(f"round {rnd}: hosts {slow} did not finish within --timeout {self.o.timeout:.0f} s")
            own_cpu = sum(os.times()[:2]) - own_cpu
            wan = counter(self.origin_veth(), "rx_bytes") - wan_before
            origin_cpu = sum(cpu_seconds(p.pid) for p, what in self.procs
                             if what.startswith(("store", "WAN"))) - origin_cpu
            lan_up = {i: counter(self.host_veth(i), "rx_bytes") - lan_before[i] for i in range(1, n + 1)}
            per = []
            for i, r in readers.items():
                res = r.result()
                res["host"] = i
                res["lan_sent_bytes"] = lan_up[i]
                if i == faulted:
                    res["fault"] = fault
                if i in hosts and hosts[i]["proc"].poll() is None:
                    res["status"] = self.status(hosts[i])
                if i in hosts:
                    res["daemon_cpu_s"] = round(cpu_seconds(hosts[i]["proc"].pid), 2)
                per.append(res)
            return {"hosts": n, "peers": self.o.peers, "mode": self.o.mode, "fault": fault,
                    "origin_egress_bytes": wan, "origin_cpu_s": round(origin_cpu, 2),
                    "reader_cpu_s": round(own_cpu, 2), "round_s": round(time.monotonic() - t0, 2),
                    "loadavg": open("/proc/loadavg").read().split()[:3], "per_host": per}
        finally:
            for h in hosts.values():
                self.stop_daemon(h)
            for i in range(1, n + 1):
                self.remove_host(i)

    def settle(self, hosts):
        """Waits until every started daemon counts all the others as live
        peers: daemons start one after the other and see a new host at their
        next lease/3 refresh; a read before that asks a peer that does not
        know it yet (refused) or picks another designated fetcher."""
        want = len(hosts) - 1

        def settled():
            for h in hosts.values():
                site = (self.status(h) or {}).get("site") or {}
                if sum(p["state"] == "live" for p in site.get("peers", [])) < want:
                    return False
            return True
        wait_for(settled, 30, f"{len(hosts)} daemons to see each other as live peers")

    def fault(self, rnd, fault, n, hosts, readers, t0):
        """Applies `fault` to host n at --fault-at; returns n."""
        time.sleep(max(0.0, t0 + self.o.fault_at - time.monotonic()))
        say(f"   fault at {time.monotonic() - t0:.1f} s: {fault} host {n}")
        if fault == "join":
            h = hosts[n] = self.start_daemon(rnd, n)
            readers[n].late_start(h)
        elif fault == "kill":
            readers[n].expect_failure = True
            os.kill(hosts[n]["proc"].pid, signal.SIGKILL)
        elif fault == "stop":
            os.kill(hosts[n]["proc"].pid, signal.SIGSTOP)

            def resume(p=hosts[n]["proc"]):
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGCONT)
            threading.Timer(self.o.stop_for, resume).start()
        elif fault == "leave":
            readers[n].expect_failure = True
            readers[n].leave.set()
            hosts[n]["proc"].terminate()
        return n


class Reader:
    """Reads one host's mount in order, comparing every piece with the source,
    and notes when each read completed."""

    def __init__(self, bed, host):
        self.bed = bed
        self.host = host
        self.t0 = None
        self.done = []  # (completed at, seconds the read took)
        self.bytes = 0
        self.sha = hashlib.sha256()
        self.first_diff = None
        self.error = None
        self.expect_failure = False
        self.leave = threading.Event()
        self.joined = threading.Event()
        self.mount = None
        self.finished = None
        self.started = None

    def plan(self):
        if self.bed.o.mode == "trace":
            return self.bed.trace
        b = self.bed.o.block
        return [(off, min(b, self.bed.size - off)) for off in range(0, self.bed.size, b)]

    def late_start(self, h):
        self.mount = h
        self.joined.set()

    def run(self, h, barrier):
        try:
            barrier.wait(30)
        except threading.BrokenBarrierError:
            self.error = "start barrier broken"
            return
        if h is None:
            if not self.joined.wait(self.bed.o.timeout):
                self.error = "never joined"
                return
            h = self.mount
        self.started = time.monotonic()
        try:
            src = os.open(self.bed.source, os.O_RDONLY)
            fd = os.open(h["image"], os.O_RDONLY)
        except OSError as e:
            self.error = f"open: {e}"
            return
        try:
            for off, n in self.plan():
                if self.leave.is_set():
                    break
                t = time.monotonic()
                got = os.pread(fd, n, off)
                now = time.monotonic()
                want = os.pread(src, n, off)
                self.done.append((now, now - t))
                self.bytes += len(got)
                self.sha.update(got)
                if got != want and self.first_diff is None:
                    k = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                    self.first_diff = off + k
        except OSError as e:
            self.error = f"read: {e}"
        finally:
            self.finished = time.monotonic()
            for f in (fd, src):
                try:
                    os.close(f)
                except OSError:
                    pass  # a killed daemon's mount answers ENOTCONN to close too

    def result(self):
        t0 = self.t0
        start = self.started or t0
        times = [t for t, _ in self.done]
        gaps = [b - a for a, b in zip([start] + times, times)]
        lat = [d for _, d in self.done]
        want = sum(n for _, n in self.plan())
        ok = self.error is None and self.first_diff is None and self.bytes == want
        return {
            "identical": ok,
            "expected_failure": self.expect_failure,
            "bytes_read": self.bytes,
            "bytes_wanted": want,
            "first_difference": self.first_diff,
            "sha256": self.sha.hexdigest(),
            "error": self.error,
            "reads": len(self.done),
            "started_s": round(start - t0, 3),
            "completion_s": round(self.finished - t0, 3) if self.finished else None,
            "read_p50_ms": round(pct(lat, 50) * 1000, 2) if lat else None,
            "read_p99_ms": round(pct(lat, 99) * 1000, 2) if lat else None,
            "read_max_ms": round(max(lat) * 1000, 2) if lat else None,
            "stall_s": round(max(gaps), 3) if gaps else None,
        }


# ---- the run ----


def summarise(r, base):
    ok = [h for h in r["per_host"] if not h.get("fault")]
    comp = [h["completion_s"] for h in ok if h["completion_s"] is not None]
    r["completion_p50_s"] = pct(comp, 50)
    r["completion_p99_s"] = pct(comp, 99)
    r["stall_max_s"] = max((h["stall_s"] or 0) for h in ok) if ok else None
    sts = [h["status"] for h in r["per_host"] if h.get("status")]
    r["bytes_from_stores"] = sum(st["bytes_fetched"] for st in sts)
    r["bytes_from_peers"] = sum(st.get("bytes_from_peers", 0) for st in sts)
    r["peer_errors"] = sum(p["errors"] for st in sts for p in (st.get("site") or {}).get("peers", []))
    r["daemon_cpu_s"] = round(sum(h.get("daemon_cpu_s") or 0 for h in r["per_host"]), 2)
    r["identical"] = all(h["identical"] for h in r["per_host"] if not h["expected_failure"])
    if base:
        b = base["per_host"][0]["completion_s"]
        r["completion_p50_vs_one"] = round(r["completion_p50_s"] / b, 3) if b and comp else None
        r["completion_p99_vs_one"] = round(r["completion_p99_s"] / b, 3) if b and comp else None
        be = base["origin_egress_bytes"]
        r["origin_egress_vs_one"] = round(r["origin_egress_bytes"] / be, 3) if be else None


def table(rounds, size):
    say(f"\n{'hosts':>5} {'peers':>5} {'fault':>5} {'p50 s':>8} {'p99 s':>8} {'p99/one':>8} "
        f"{'egress MiB':>11} {'copies':>7} {'egress/one':>10} {'stall s':>8} {'peers MiB':>9} {'cpu s':>6}  bytes")
    for r in rounds:
        f = lambda v, fmt: format(v, fmt) if v is not None else "-"  # noqa: E731
        say(f"{r['hosts']:>5} {r['peers']:>5} {r['fault'] or '-':>5} {f(r['completion_p50_s'], '8.2f')} "
            f"{f(r['completion_p99_s'], '8.2f')} {f(r.get('completion_p99_vs_one'), '8.2f')} "
            f"{r['origin_egress_bytes'] / MIB:>11.0f} {r['origin_egress_bytes'] / size:>7.2f} "
            f"{f(r.get('origin_egress_vs_one'), '10.2f')} {f(r['stall_max_s'], '8.2f')} "
            f"{r['bytes_from_peers'] / MIB:>9.0f} {r['daemon_cpu_s']:>6.1f}  "
            f"{'identical' if r['identical'] else 'DIFFER'}")


def build():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/vmifs/target"))
    say("== cargo build --release")
    if subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "vmifs"], cwd=ROOT).returncode:
        raise Fail("cargo build failed")
    return os.path.join(target, "release", "vmifs")


def interrupted(_sig, _frame):
    raise KeyboardInterrupt


def main(argv=None):
    o = options(argv)
    if os.geteuid() != 0:
        raise Fail("must run as root (namespaces, bridge, tc, FUSE)")
    for tool in ("ip", "tc", "nsenter", "tcpdump"):
        if not shutil.which(tool):
            raise Fail(f"{tool} is not installed")
    vmifs = os.path.realpath(o.vmifs) if o.vmifs else build()
    if not os.access(vmifs, os.X_OK):
        raise Fail(f"{vmifs}: not an executable")
    bed = Bed(o, vmifs)
    signal.signal(signal.SIGTERM, interrupted)
    rounds = []
    try:
        bed.sweep()
        bed.make_bridge()
        bed.start_capture()
        bed.start_origin()
        bed.publish()
        if o.mode == "trace":
            bed.trace, cut = read_trace(o.trace, bed.size)
            say(f"== trace {os.path.basename(o.trace)}: {len(bed.trace)} reads, "
                f"{sum(n for _, n in bed.trace) / MIB:.1f} MiB" + (f", {cut} past the image dropped" if cut else ""))
        # The isolation of every namespace, checked once with all of them made.
        for i in range(1, o.most + 1):
            bed.add_host(i)
        iso = bed.isolation([bed.origin] + [bed.host_ns(i) for i in range(1, o.most + 1)])
        for i in range(1, o.most + 1):
            bed.remove_host(i)
        plan = [(n, o.fault if n > 1 else None) for _ in range(o.repeat) for n in o.counts]
        base = None
        for rnd, (n, fault) in enumerate(plan):
            say(f"== round {rnd}: {n} host{'s' if n > 1 else ''} read at once ({o.mode}, peers {o.peers}"
                + (f", fault {fault}" if fault else "") + ")")
            r = bed.round(rnd, n, fault)
            summarise(r, base)
            if n == 1:
                # Later rounds are compared with the latest host alone: with
                # --repeat, A/B alternate and load drifts cancel out.
                base = r
                summarise(r, base)
            rounds.append(r)
            for h in r["per_host"]:
                st = h.get("status") or {}
                site = st.get("site") or {}
                peers = site.get("peers", [])
                via = (f", stores {st['bytes_fetched'] / MIB:.0f} MiB, peers {st['bytes_from_peers'] / MIB:.0f} MiB"
                       f", peer errors {sum(p['errors'] for p in peers)}, not live "
                       f"{sum(p['state'] != 'live' for p in peers)}/{len(peers)}") if site else ""
                say(f"   host {h['host']}: {h['completion_s']} s, stall {h['stall_s']} s, "
                    f"{h['bytes_read'] / MIB:.0f} MiB{via}, cpu {h.get('daemon_cpu_s')} s, "
                    f"{'identical' if h['identical'] else 'NOT IDENTICAL'}"
                    + (f" ({h['error']})" if h["error"] else "")
                    + (f" [{h['fault']}]" if h.get("fault") else ""))
        outside, probes = bed.capture_counts()
    finally:
        bed.close()
    left = [w.split()[0] for w in run(["ip", "netns", "list"], check=False).stdout.splitlines()
            if w.startswith(bed.ns_prefix)]
    result = {
        "bed": {"hosts": o.counts, "size": bed.size, "image_id": bed.image_id, "stores": o.stores,
                "wan_rate_bit": o.wan_rate, "wan_rtt_ms": o.wan_rtt, "lan_rate_bit": o.lan_rate,
                "peers": o.peers, "mode": o.mode, "block": o.block, "name": o.name,
                "trace": os.path.basename(o.trace) if o.mode == "trace" else None,
                "trace_reads": len(bed.trace) if o.mode == "trace" else None,
                "loadavg": open("/proc/loadavg").read().split()[:3]},
        "isolation": dict(iso, outside_packets=outside, probe_packets=probes),
        "cleanup": {"namespaces_left": left, "mounts_left": [m for m in mounts() if m.startswith(bed.work + "/")]},
        "rounds": rounds,
    }
    if o.json:
        with open(o.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    table(rounds, bed.size)
    if probes < o.most:
        raise Fail(f"the capture on the bridge saw {probes} of {o.most} probes: it does not see the bed")
    if outside:
        raise Fail(f"{outside} packets with an address outside the bed crossed the bridge")
    bad = [(r["hosts"], h["host"]) for r in rounds for h in r["per_host"]
           if not h["identical"] and not h["expected_failure"]]
    if bad:
        raise Fail(f"hosts read bytes that differ from the source (round hosts, host): {bad}")
    if left or result["cleanup"]["mounts_left"]:
        raise Fail(f"left behind: {left} {result['cleanup']['mounts_left']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Fail as e:
        say(f"{PROG}: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        say(f"{PROG}: interrupted")
        sys.exit(130)
