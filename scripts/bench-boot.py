#!/usr/bin/env python3
"""Boots a real VM from an image behind emulated WAN links, side by side in one
run: vmifs against what users would use instead.

    scripts/bench-boot.py
    BENCH_RUNS=5 BENCH_BOOT_MD=boot.md scripts/bench-boot.py
    scripts/bench-boot.py --runs 1 --variants "e c d"
    scripts/bench-boot.py --list          # the variants

Three `vmifs serve` stores, each behind its own scripts/wan-proxy.py link
(default RTT 10, 40 and 80 ms, 100 Mbit/s each way). The Debian guest of
scripts/guest.sh is pushed with k=4 m=2 (two shards of every chunk on each
store), and its raw file is also dropped into every store's root as a plain
HTTP file (plain/guest.raw). Each boot goes through a fresh qcow2 overlay whose
backing file (backing_fmt=raw) is the image under test, as libvirt does, and
is timed from QEMU's start to VMIFS-BOOT-OK on the serial console. The page
cache is dropped before every boot. The variants (e, a, g, b, c, h, d, c2, ap, rclone,
nbdkit, httpdirfs) are the table VARIANTS below; `--list` prints it.

Before the timed boots, every lazy variant's data is checked on a cold
instance: random ranges (and the ranges this boot reads) read through it
must equal the image. Wrong bytes are reported, not hidden.

Options, each with the environment variable it overrides:
  --runs N          BENCH_RUNS       boots per variant (default 3)
  --variants LIST   BENCH_VARIANTS   subset, in the order run within each round
                                     (default: all of them, in the order of --list)
  --rtts LIST       BENCH_RTTS       RTT per store in ms, nearest first (default "10 40 80")
  --rate RATE       BENCH_RATE       link rate per store and direction (default 100Mbit)
  --guest KIND      BENCH_GUEST      guest kind of scripts/guest.sh (default debian)
  --md FILE         BENCH_BOOT_MD    also write the result table as markdown to this file
  --out DIR         BENCH_BOOT_OUT   keep per-run JSON, console logs, read traces and the
                                     chunk trace summary here (default: a new directory
                                     under $TMPDIR)
  --push-format N   BENCH_PUSH_FORMAT  manifest format of the push: 1 (one object per shard)
                                     or 2 (packs); default: vmifs's default (2)
  --mount-extra S   BENCH_MOUNT_EXTRA  more [mount] settings for the vmifs variants, e.g.
                                     $'readahead_chunks = 0\\nkernel_readahead = "128KiB"'
  --profile-window S  BENCH_PROFILE_WINDOW  seconds the first host of variant ap records its
                                     automatic profile for (default 60, vmifs's default: it must
                                     cover that host's boot, which takes 20-50 s under TCG)
  --timeout S       BOOT_TIMEOUT     seconds allowed per boot (default 300)
  --log FILTER      VMIFS_BENCH_LOG  log filter of the vmifs daemon (default info)
  --no-build        BENCH_NO_BUILD=1  use the vmifs already built at
                                     $CARGO_TARGET_DIR/release/vmifs instead of running
                                     `cargo build --release` first
CARGO_TARGET_DIR defaults to ~/.cache/vmifs/target. Runs as root; installs what
it needs with scripts/install-bench-tools.sh. The report is that of
scripts/bench-boot-report.py, which can also be run again on a kept directory.
"""

import argparse
import collections
import dataclasses
import importlib.util
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

PROG = "bench-boot.py"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MIB = 2**20
sys.dont_write_bytecode = True  # no __pycache__ beside the scripts


def load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, file))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


boot_once = load("boot_once", "boot-once.py")
wan_proxy = load("wan_proxy", "wan-proxy.py")
report = load("bench_boot_report", "bench-boot-report.py")


class Fail(Exception):
    """Stops the run; its message is the one line printed on stderr."""


INTERRUPTED = []  # the signals (SIGINT, SIGTERM) received


def on_signal(sig, _frame):
    INTERRUPTED.append(sig)
    raise KeyboardInterrupt


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_seconds(pid):
    """(user, system) CPU seconds process pid has used so far, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except (OSError, IndexError, ValueError):
        return None


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def mounted(path):
    with open("/proc/mounts") as f:
        return any(len(p) > 1 and p[1].replace("\\040", " ") == path for p in map(str.split, f))


def umount(path):
    """Unmounts path if it is mounted, lazily if it is busy."""
    if mounted(path):
        if subprocess.run(["umount", path], stderr=subprocess.DEVNULL).returncode:
            subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)


def stop(proc, grace):
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(cond, seconds, proc):
    """True once cond() holds (polled every 0.1 s); False after `seconds`, or once
    proc has exited without it."""
    end = time.monotonic() + seconds
    while not cond():
        if proc.poll() is not None:
            return cond()
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def tail(path, n):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def diff_bytes(got, want):
    return sum(a != b for a, b in zip(got, want)) + abs(len(got) - len(want))


def check_line(name, ranges, bad, total, per_range_bytes=True, errors=()):
    """One line of checks.txt: NAME <tab> what was read <tab> the verdict. `bad`
    holds (offset, length, bytes differing), `errors` (offset, length, why) of
    the ranges that could not be read."""
    verdict = []
    if bad and per_range_bytes:
        verdict.append(f"WRONG DATA: {len(bad)} ranges, {sum(b for *_, b in bad)} bytes differ, "
                       f"e.g. offset {bad[0][0]} length {bad[0][1]}")
    elif bad:
        verdict.append(f"WRONG DATA: {len(bad)} ranges, e.g. offset {bad[0][0]}")
    if errors:
        verdict.append(f"READ ERRORS: {len(errors)} ranges, e.g. offset {errors[0][0]} length {errors[0][1]}: "
                       f"{errors[0][2]}")
    return f"{name}\t{ranges} ranges, {total / MIB:.1f} MiB\t{'; '.join(verdict) or 'all bytes match'}"


def check_nbd_here(name, sock, ref, ranges):
    """Reads the ranges from the NBD server on `sock` with libnbd (python3-libnbd
    belongs to the system's python3: see check_nbd)."""
    import nbd
    h = nbd.NBD()
    h.connect_unix(sock)
    bad, errors = [], []
    with open(ref, "rb") as rf:
        for off, n in ranges:
            try:
                got = h.pread(n, off)
            except nbd.Error as e:
                errors.append((off, n, e))
                continue
            d = diff_bytes(got, os.pread(rf.fileno(), n, off))
            if d:
                bad.append((off, n, d))
    return check_line(name, len(ranges), bad, sum(n for _, n in ranges), errors=errors)


def read_ranges(path):
    with open(path) as f:
        return [tuple(map(int, line.split())) for line in f if line.strip()]


@dataclasses.dataclass(frozen=True)
class Store:
    name: str
    sport: int  # `vmifs serve`
    pport: int  # its WAN link
    cport: int  # the link's counters


class Bench:
    """One run: the stores and links, what each variant starts, and the cleanup
    of all of it (close)."""

    def __init__(self, opts, vmifs, guest):
        self.o = opts
        self.vmifs = vmifs
        self.kernel, self.initrd, self.image, self.append = guest
        self.size = os.stat(self.image).st_size
        out = opts.out or tempfile.mkdtemp(prefix="vmifs-bench-boot.")
        os.makedirs(out, exist_ok=True)
        self.out = os.path.realpath(out)
        self.results = self.o_path("results.jsonl")
        open(self.results, "w").close()
        self.work = os.path.realpath(tempfile.mkdtemp(prefix="vmifs."))
        self.mnt = os.path.join(self.work, "mnt")
        self.procs = []  # every process started, stopped by close()
        self.mounts = []  # every mount point used, unmounted by close()
        self.side = []  # (process, mount point or None): helpers of one variant's run
        self.mount_proc = None  # the vmifs mount daemon
        self.serve_pids, self.link_pids = [], []  # per store: its `vmifs serve`, its WAN link
        self.at_up = ([], [])  # helpers_cpu() when the mount started
        self.stores = []
        self.prepared = set()

    def w_path(self, name):
        return os.path.join(self.work, name)

    def o_path(self, name):
        return os.path.join(self.out, name)

    # ---- processes ----

    def spawn(self, cmd, stdout=None, stderr=None, append=False, env=None):
        """Starts cmd in the background with stdout/stderr to files (the same file
        for both when they name the same one); close() stops it."""
        mode = "ab" if append else "wb"
        files = []
        try:
            def sink(path):
                if path is None:
                    return subprocess.DEVNULL
                files.append(open(path, mode))
                return files[-1]
            out = sink(stdout)
            err = subprocess.STDOUT if stderr is not None and stderr == stdout else sink(stderr)
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        except OSError as e:
            raise Fail(f"cannot start {cmd[0]}: {e}") from None
        finally:
            for f in files:
                f.close()
        self.procs.append(p)
        return p

    def ready_line(self, path, pattern, proc):
        """The first line of `path` matching `pattern`, waiting up to 10 s."""
        found = []

        def look():
            try:
                with open(path, errors="replace") as f:
                    found[:] = [line for line in f if re.search(pattern, line)][:1]
            except OSError:
                pass
            return bool(found)
        if not wait_for(look, 10, proc):
            sys.stderr.write(tail(path, 20))
            raise Fail(f"{path}: not ready")
        return found[0].strip()

    def close(self):
        """Stops everything this run started and unmounts what it mounted, also
        after a failure or an interrupt; keeps the output directory."""
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, lambda sig, _: INTERRUPTED.append(sig))  # noted, not raised: finish this
        helpers = [p for p, _ in self.side] + ([self.mount_proc] if self.mount_proc else [])
        for p in helpers:
            if p.poll() is None:
                p.terminate()
        for m in reversed(self.mounts):
            if mounted(m):
                subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            stop(p, 5)
        with open("/proc/mounts") as f:
            busy = [p[1] for p in map(str.split, f) if len(p) > 1 and p[1].startswith(self.work + "/")]
        if busy:
            say(f"{PROG}: still mounted, {self.work} kept: {' '.join(busy)}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # ---- stores behind WAN links ----

    def start_stores(self):
        for i, rtt in enumerate(self.o.rtts):
            root = self.w_path(f"store-{i}")
            os.makedirs(root)
            log = self.w_path(f"serve-{i}.log")
            p = self.spawn([self.vmifs, "serve", "--no-fsync", "--root", root, "--listen", "127.0.0.1:0",
                            "--access-log", self.w_path(f"access-{i}.log")], stderr=log)
            sport = int(re.search(r"127\.0\.0\.1:(\d+)", self.ready_line(log, "listening on", p)).group(1))
            self.serve_pids.append(p.pid)
            ready = self.w_path(f"proxy-{i}.out")
            p = self.spawn([sys.executable, os.path.join(HERE, "wan-proxy.py"), "--listen", "127.0.0.1:0",
                            "--target", f"127.0.0.1:{sport}", "--rtt", f"{rtt}ms", "--rate", self.o.rate,
                            "--control", "0", "--ready"], stdout=ready, stderr=self.w_path(f"proxy-{i}.log"))
            _, pport, cport = self.ready_line(ready, "^ready", p).split()
            self.link_pids.append(p.pid)
            self.stores.append(Store(f"rtt{rtt}ms-{i}", sport, int(pport), int(cport)))
        self.plain_url = f"http://127.0.0.1:{self.stores[0].pport}/plain/guest.raw"

    def config(self, path, direct, *settings):
        text = '[erasure]\ndata = 4\nparity = 2\nchunk_size = "256KiB"\n'
        if self.o.push_format:
            text += f"\n[push]\nformat = {self.o.push_format}\n"
        for s in self.stores:
            text += (f'\n[[store]]\nname = "{s.name}"\n'
                     f'url = "http://127.0.0.1:{s.sport if direct else s.pport}"\n')
        text += f'\n[cache]\ndir = {json.dumps(self.w_path("cache"))}\nmax_size = "4GiB"\n'
        # A key of --mount-extra overrides the variant's own setting of it.
        extra = {l.split("=")[0].strip() for l in self.o.mount_extra.splitlines() if "=" in l}
        lines = [s for s in settings if s.split("=")[0].strip() not in extra]
        lines += [self.o.mount_extra] if self.o.mount_extra else []
        text += "\n[mount]\n" + ("\n".join(lines) + "\n" if lines else "\n")
        with open(path, "w") as f:
            f.write(text)
        return path

    def publish(self):
        self.has_profiles = subprocess.run([self.vmifs, "profile", "--help"], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL).returncode == 0
        push = self.config(self.w_path("push.toml"), True)
        self.cfg_hydrate = self.config(self.w_path("mount-hydrate.toml"), False, "boot_profiles = false",
                                       "hydrate = true")
        if self.has_profiles:
            # Hydration (on by default) is off but for h: the others measure what a boot fetches.
            self.cfg_plain = self.config(self.w_path("mount-noprofile.toml"), False, "boot_profiles = false",
                                         "hydrate = false")
            # c2 boots with the hand-recorded profile alone: no host publishes one by itself.
            self.cfg_profile = self.config(self.w_path("mount-profile.toml"), False, "boot_profiles = true",
                                           "auto_profiles = false", "hydrate = false")
            self.cfg_auto = self.config(self.w_path("mount-auto.toml"), False, "boot_profiles = true",
                                        "auto_profiles = true", f'profile_window = "{self.o.profile_window}s"',
                                        "hydrate = false")
        else:
            self.cfg_plain = self.config(self.w_path("mount-noprofile.toml"), False)
        st = os.stat(self.image)
        say(f"== pushing the {self.o.guest} guest ({st.st_size / MIB:.0f} MiB, "
            f"{st.st_blocks * 512 / MIB:.0f} MiB allocated)")
        r = subprocess.run([self.vmifs, "--config", push, "push", self.image, "--name", "guest", "--tag", "bench"],
                           stdout=subprocess.PIPE, text=True)
        if r.returncode or not r.stdout.strip():
            raise Fail("vmifs push failed")
        self.image_id = r.stdout.strip()
        self.check_placement()
        self.local = self.w_path("local.raw")
        subprocess.run(["cp", "--sparse=always", self.image, self.local], check=True)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with open(self.image, "rb") as f:
            want = os.pread(f.fileno(), MIB, MIB)
        for i, s in enumerate(self.stores):
            os.makedirs(self.w_path(f"store-{i}/plain"))
            subprocess.run(["cp", "--sparse=always", self.image, self.w_path(f"store-{i}/plain/guest.raw")],
                           check=True)
            # Served as a plain HTTP file, through the link: size and a range check.
            url = f"http://127.0.0.1:{s.pport}/plain/guest.raw"
            try:
                with opener.open(urllib.request.Request(url, method="HEAD"), timeout=60) as r:
                    length = r.headers.get("Content-Length")
                with opener.open(urllib.request.Request(url, headers={"Range": f"bytes={MIB}-{2 * MIB - 1}"}),
                                 timeout=60) as r:
                    got = r.read()
            except OSError as e:
                raise Fail(f"store {i} does not serve plain/guest.raw: {e}") from None
            if length != str(self.size):
                raise Fail(f"store {i} does not serve plain/guest.raw ({length} bytes, want {self.size})")
            if got != want:
                raise Fail(f"store {i} serves wrong bytes")
        say(f"== every store serves plain/guest.raw ({self.size} bytes) over HTTP")

    def check_placement(self):
        """k=4 m=2 over three stores: every store holds exactly two shards of every chunk
        (format 1: two shard objects per chunk; format 2: two shard columns in its packs)."""
        with open(self.w_path(f"store-0/manifests/{self.image_id}.json")) as f:
            m = json.load(f)
        chunks = {c for c in m["chunks"] if c}
        if m.get("packs"):
            per = collections.Counter(p["store"] for p in m["packs"])
            names = [s.name for s in self.stores]
            if set(per) != set(names):
                raise Fail(f"packs are not on every store: {dict(per)}")
            for i, s in enumerate(self.stores):
                for p in m["packs"]:
                    if p["store"] == s.name:
                        h = p["id"]
                        if not os.path.exists(self.w_path(f"store-{i}/packs/{h[:2]}/{h}")):
                            raise Fail(f"pack {h} missing on store {i}")
            say(f"== placement: {len(chunks)} non-zero chunks of {len(m['chunks'])} in "
                f"{len(m['packs'])} packs, " + ", ".join(f"{per[n]} on {n}" for n in names))
            return
        for i in range(len(self.stores)):
            per = collections.Counter()
            for _, _, files in os.walk(self.w_path(f"store-{i}/shards")):
                for name in files:
                    per[name.split(".")[0]] += 1
            bad = {c: per[c] for c in chunks if per[c] != 2}
            if bad or set(per) - chunks:
                raise Fail(f"shard placement is not two per store per chunk: store {i}: "
                           f"{len(bad)} chunks without exactly 2 shards")
        say(f"== placement: {len(chunks)} non-zero chunks of {len(m['chunks'])}, "
            f"2 shards of each on each of {len(self.stores)} stores")

    # ---- the steps of every boot ----

    def down_now(self):
        """Bytes delivered towards this host by all links so far."""
        return sum(boot_once.proxy_stats(s.cport).get("down", 0) for s in self.stores)

    def boot(self, name, rnd, backing):
        """One boot through a fresh overlay on `backing`, from a cold page cache:
        boot-once.py's result."""
        ov = self.w_path("vm.qcow2")
        if os.path.exists(ov):
            os.unlink(ov)
        r = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing, "-u", ov,
                            str(self.size)], stderr=subprocess.PIPE, text=True)
        if r.returncode:
            return {"seconds": None, "error": f"qemu-img create failed: {r.stderr.strip()[-300:]}"}
        drop_caches()
        try:
            return boot_once.boot(ov, self.kernel, self.initrd, self.append, [s.cport for s in self.stores],
                                  self.o.timeout, trace=self.o_path(f"trace-{name}-{rnd}.log"),
                                  console=self.o_path(f"console-{name}-{rnd}.log"))
        except (OSError, ValueError) as e:
            return {"seconds": None, "error": f"boot failed: {e}"}

    def record(self, v, rnd, pre, setup, res):
        """Appends one boot to results.jsonl (with the bytes pulled since `pre`
        and the set-up seconds counted in) and prints it."""
        res = dict(res, variant=v, round=rnd, setup_seconds=setup)

        def total(key):
            return sum(s.get("down", 0) for s in res.get(key, []))
        if res.get("seconds") is not None:
            res["total_seconds"] = round(setup + res["seconds"], 3)
            res["pulled_marker"] = total("proxies_marker") - pre
        if res.get("proxies_end"):
            res["pulled_end"] = total("proxies_end") - pre
        with open(self.results, "a") as f:
            f.write(json.dumps(res) + "\n")
        if res.get("seconds") is None:
            say(f"   {v:<10} round {rnd}: {res.get('error')}")
        else:
            say(f"   {v:<10} round {rnd}: {res['total_seconds']:7.2f} s to marker (set-up {setup:.2f} s), "
                f"{res['pulled_marker'] / MIB:7.1f} MiB pulled before it, "
                f"{res.get('pulled_end', 0) / MIB:7.1f} MiB in all")

    def run_variant(self, v, rnd):
        """reset, set-up (timed, and its traffic counted, where the variant says
        so), boot, record, the warm boots riding on it, teardown."""
        why = v.unavailable(self) if v.unavailable else None
        if why:
            self.record(v.name, rnd, 0, 0, {"seconds": None, "error": why})
            return
        if v.prepare and v.name not in self.prepared:
            v.prepare(self)
            self.prepared.add(v.name)
        if v.reset:
            v.reset(self)
        try:
            pre, t0 = self.down_now(), time.monotonic()
            backing = v.setup(self, v.name, rnd)
            if v.timed_setup:
                setup = round(time.monotonic() - t0, 3)
            else:
                pre, setup = self.down_now(), 0
            self.record(v.name, rnd, pre, setup, self.boot(v.name, rnd, backing))
            if v.after_boot:
                v.after_boot(self, v.name, rnd)
            for w in self.riders(v):
                pre = self.down_now()
                self.record(w.name, rnd, pre, 0, self.boot(w.name, rnd, backing))
                if v.after_boot:
                    v.after_boot(self, w.name, rnd)
        finally:
            if v.teardown:
                v.teardown(self)

    def riders(self, v):
        """The selected variants that boot a second time on v's set-up."""
        return [w for w in dict.fromkeys(self.o.variants) if w.warm_of == v.name]

    # ---- correctness of every lazy path (cold) ----

    def make_ranges(self):
        """What the guest reads while booting (from a local boot's trace) plus
        random ranges of any length and alignment."""
        ref = self.boot("e", 0, self.local)
        with open(self.o_path("reference-boot.json"), "w") as f:
            f.write(json.dumps(ref) + "\n")
        if ref.get("seconds") is None:
            say(f"{PROG}: warning: the reference boot from the local file failed: {ref.get('error')}")
        rng = random.Random(7)
        ranges = []
        try:
            with open(self.o_path("trace-e-0.log")) as f:
                for line in f:
                    if ":blk_co_preadv " in line:
                        p = line.split()
                        ranges.append((int(p[p.index("offset") + 1]), int(p[p.index("bytes") + 1])))
        except OSError as e:
            raise Fail(f"no read trace from the reference boot: {e}") from None
        ranges = rng.sample(ranges, min(len(ranges), 200))
        for _ in range(64):
            n = rng.choice([1, 511, 4096, 65537, 262144 + 3, 1 << 20, 3 << 20])
            ranges.append((rng.randrange(0, self.size - n), n))
        ranges.append((self.size - 5000, 5000))
        self.ranges = ranges
        self.ranges_file = self.w_path("ranges.txt")
        with open(self.ranges_file, "w") as f:
            f.writelines(f"{off} {n}\n" for off, n in ranges)

    def check_all(self):
        say("== checking the bytes each lazy path returns (cold cache, through the nearest link)")
        self.make_ranges()
        checks = self.o_path("checks.txt")
        open(checks, "w").close()
        done = set()
        for v in self.o.variants:
            if not v.check or v.name in done:
                continue
            done.add(v.name)
            if v.reset:
                v.reset(self)
            try:
                backing = v.setup(self, v.name, "check")
                drop_caches()
                line = v.check(self, v.check_label or v.name, backing)
            finally:
                if v.teardown:
                    v.teardown(self)
            with open(checks, "a") as f:
                f.write(line + "\n")
        with open(checks) as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
        widths = [max(len(r[i]) for r in rows if len(r) > i) for i in range(max(map(len, rows), default=0))]
        for r in rows:
            say("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())

    def check_file(self, name, path):
        """Reads the ranges through the file at `path`, 4 threads at once, as QEMU does."""
        fd, rfd = os.open(path, os.O_RDONLY), os.open(self.image, os.O_RDONLY)

        def one(r):
            off, n = r
            got = b""
            try:
                while len(got) < n:  # a short read is allowed; end of file is not
                    more = os.pread(fd, n - len(got), off + len(got))
                    if not more:
                        break
                    got += more
            except OSError as e:
                return off, n, None, e.strerror
            return off, n, diff_bytes(got, os.pread(rfd, n, off)), None
        ex = ThreadPoolExecutor(4)
        try:
            res = list(ex.map(one, self.ranges))
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
            os.close(fd)
            os.close(rfd)
        return check_line(name, len(res), [r[:3] for r in res if r[2]], sum(r[1] for r in res),
                          errors=[(off, n, e) for off, n, _, e in res if e])

    def check_nbd(self, name, _backing):
        if importlib.util.find_spec("nbd") is None:
            # python3-libnbd belongs to the system's python3: read in one of those.
            r = subprocess.run(["/usr/bin/python3", os.path.abspath(__file__), "--check-nbd", self.nbd_sock,
                                self.image, self.ranges_file, name], stdout=subprocess.PIPE, text=True)
            if r.returncode or not r.stdout.strip():
                raise Fail("the NBD check failed (is python3-libnbd installed?)")
            return r.stdout.strip()
        return check_nbd_here(name, self.nbd_sock, self.image, self.ranges)

    def check_qemu_http(self, name, _backing):
        """A sample of the ranges through QEMU's http driver (qemu-img per range)."""
        # The raw driver's offset/size want 512-byte alignment: widen each range.
        ranges = [((o // 512) * 512, -(-(o + n) // 512) * 512 - (o // 512) * 512) for o, n in self.ranges][::8]
        out = self.w_path("range.bin")
        bad = []
        with open(self.image, "rb") as rf:
            for off, n in ranges:
                opts = f"driver=raw,offset={off},size={n},file.driver=http,file.url={self.plain_url}"
                r = subprocess.run(["qemu-img", "convert", "-O", "raw", "--image-opts", opts, out],
                                   stderr=subprocess.PIPE, text=True)
                if r.returncode:
                    raise Fail(f"qemu-img cannot read through its http driver: {r.stderr.strip()[-300:]}")
                with open(out, "rb") as f:
                    if f.read() != os.pread(rf.fileno(), n, off):
                        bad.append((off, n))
        return check_line(name, len(ranges), bad, sum(n for _, n in ranges), per_range_bytes=False)

    # ---- what the variants set up ----

    def local_file(self, v, rnd):
        return self.local

    def fresh_download(self):
        self.no_download()
        drop_caches()

    def no_download(self):
        if os.path.exists(self.w_path("download.raw")):
            os.unlink(self.w_path("download.raw"))

    def download(self, v, rnd):
        path = self.w_path("download.raw")
        r = subprocess.run(["curl", "-sf", "--noproxy", "*", "--max-time", str(self.o.timeout), "-o", path,
                            self.plain_url])
        if r.returncode:
            raise Fail("curl download failed")
        return path

    def fresh_get(self):
        self.no_get()
        drop_caches()

    def no_get(self):
        if os.path.exists(self.w_path("get.raw")):
            os.unlink(self.w_path("get.raw"))

    def vmifs_get(self, v, rnd):
        path = self.w_path("get.raw")
        r = subprocess.run([self.vmifs, "--config", self.cfg_plain, "get", "guest:bench", path],
                           stderr=subprocess.PIPE, text=True, timeout=self.o.timeout)
        if r.returncode:
            raise Fail(f"vmifs get failed: {r.stderr.strip()}")
        return path

    def qemu_http(self, v, rnd):
        return "json:" + json.dumps({"file.driver": "http", "file.url": self.plain_url}, separators=(",", ":"))

    def fresh_cache(self):
        shutil.rmtree(self.w_path("cache"), ignore_errors=True)

    def vmifs_up(self, log, profile, cfg=None):
        """Mounts the image's stores at MNT (through the links) and waits for the image."""
        os.makedirs(self.mnt, exist_ok=True)
        env = dict(os.environ, VMIFS_LOG=self.o.log)
        cfg = cfg or (self.cfg_profile if profile else self.cfg_plain)
        self.at_up = self.helpers_cpu()
        self.mount_proc = self.spawn([self.vmifs, "--config", cfg, "mount", self.mnt], stderr=log, env=env)
        self.mounts.append(self.mnt)
        path = os.path.join(self.mnt, "guest", "bench.raw")
        if not wait_for(lambda: os.path.exists(path), 60, self.mount_proc):
            sys.stderr.write(tail(log, 5))
            raise Fail("vmifs mount did not come up")
        return path

    def vmifs_plain(self, v, rnd):
        return self.vmifs_up(self.o_path(f"mount-{v}-{rnd}.log"), profile=False)

    def vmifs_hydrated(self, v, rnd):
        return self.vmifs_up(self.o_path(f"mount-{v}-{rnd}.log"), profile=False, cfg=self.cfg_hydrate)

    def status_hydrated(self, v, rnd):
        """The status once hydration is done (or after 120 s), for time to fully cached."""
        deadline = time.time() + 120
        while time.time() < deadline:
            r = subprocess.run([self.vmifs, "--config", self.cfg_hydrate, "status", "--json"],
                               capture_output=True, text=True)
            try:
                if all(i.get("hydration") != "running" for i in json.loads(r.stdout)["images"]):
                    break
            except (ValueError, KeyError):
                pass
            time.sleep(0.5)
        self.status(self.cfg_hydrate, v, rnd)

    def vmifs_profiled(self, v, rnd):
        return self.vmifs_up(self.o_path(f"mount-{v}-{rnd}.log"), profile=True)

    def vmifs_filled(self, v, rnd):
        """A mount whose cache one boot has filled."""
        path = self.vmifs_plain(v, rnd)
        self.boot(f"{v}-fill", rnd, path)
        return path

    def vmifs_down(self):
        p, self.mount_proc = self.mount_proc, None
        if p is not None:
            stop(p, 10)
        if mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)

    def status_plain(self, v, rnd):
        self.status(self.cfg_plain, v, rnd)

    def status_profiled(self, v, rnd):
        self.status(self.cfg_profile, v, rnd)

    def status_auto(self, v, rnd):
        self.status(self.cfg_auto, v, rnd)

    def profile_files(self):
        return [self.w_path(f"store-{i}/profiles/{self.image_id}.json") for i in range(len(self.stores))]

    def no_profile(self):
        """No boot profile on any store (a hand-recorded one is kept aside for c2), empty cache."""
        for i, path in enumerate(self.profile_files()):
            saved = self.w_path(f"saved-profile-{i}.json")
            if os.path.exists(path):
                if not os.path.exists(saved) and "c2" in self.prepared:
                    shutil.move(path, saved)
                else:
                    os.unlink(path)
        self.fresh_cache()

    def vmifs_auto(self, v, rnd):
        """Host 1, fresh, with automatic profiles and no profile on the stores, boots (not timed) and
        publishes what it read within the window; host 2, fresh (empty cache), mounts: the timed boot."""
        path = self.vmifs_up(self.o_path(f"mount-{v}-first-{rnd}.log"), profile=True, cfg=self.cfg_auto)
        first = self.boot(f"{v}-first", rnd, path)
        with open(self.o_path(f"auto-first-boot-{rnd}.json"), "w") as f:
            f.write(json.dumps(first) + "\n")
        if first.get("seconds") is None:
            raise Fail(f"the first host's boot failed: {first.get('error')}")
        say(f"   {v + '-first':<10} round {rnd}: {first['seconds']:7.2f} s to marker (host 1, publishes the profile)")

        def published():
            r = subprocess.run([self.vmifs, "--config", self.cfg_auto, "status", "--json"], capture_output=True,
                               text=True)
            try:
                return any(i.get("profile_published") for i in json.loads(r.stdout)["images"])
            except (ValueError, KeyError):
                return False
        if not wait_for(published, self.o.profile_window + 60, self.mount_proc):
            raise Fail("the first host did not publish a boot profile")
        self.status(self.cfg_auto, f"{v}-first", rnd)
        self.vmifs_down()
        if not all(os.path.exists(p) for p in self.profile_files()):
            raise Fail("the published profile is not on every store")
        self.fresh_cache()
        return self.vmifs_up(self.o_path(f"mount-{v}-{rnd}.log"), profile=True, cfg=self.cfg_auto)

    def auto_down(self):
        """Unmounts; the hand-recorded profile (if any) goes back on the stores."""
        self.vmifs_down()
        for i, path in enumerate(self.profile_files()):
            saved = self.w_path(f"saved-profile-{i}.json")
            if os.path.exists(saved):
                shutil.move(saved, path)

    def helpers_cpu(self):
        """CPU seconds used so far by each store's `vmifs serve` and by each WAN link."""
        return ([sum(cpu_seconds(p) or (0, 0)) for p in self.serve_pids],
                [sum(cpu_seconds(p) or (0, 0)) for p in self.link_pids])

    def status(self, cfg, v, rnd):
        """What the daemon saw, for the report, and the CPU its mount, the stores and the links used
        since it started."""
        with open(self.o_path(f"status-{v}-{rnd}.json"), "w") as f:
            subprocess.run([self.vmifs, "--config", cfg, "status", "--json"], stdout=f, stderr=subprocess.DEVNULL)
        if self.mount_proc is None or (mount := cpu_seconds(self.mount_proc.pid)) is None:
            return
        now = self.helpers_cpu()
        cpu = {"user_s": mount[0], "system_s": mount[1], "load": loadavg(),
               "serve_s": [a - b for a, b in zip(now[0], self.at_up[0])],
               "link_s": [a - b for a, b in zip(now[1], self.at_up[1])]}
        with open(self.o_path(f"cpu-{v}-{rnd}.json"), "w") as f:
            f.write(json.dumps(cpu) + "\n")

    def no_profiles(self):
        return None if self.has_profiles else "n/a: this vmifs has no boot profiles"

    def record_profile(self):
        """One boot with profiles on, then publish what it read."""
        self.fresh_cache()
        path = self.vmifs_up(self.o_path("mount-record.log"), profile=True)
        res = self.boot("c2-record", 0, path)
        with open(self.o_path("profile-record-boot.json"), "w") as f:
            f.write(json.dumps(res) + "\n")
        if res.get("seconds") is None:
            raise Fail("the boot that records the profile failed")
        window = math.ceil(res["seconds"]) + 1  # the window ends at this boot's marker
        log = self.o_path("profile-record.txt")
        with open(log, "w") as f:
            r = subprocess.run([self.vmifs, "--config", self.cfg_profile, "profile", "record", "guest:bench",
                                "--window", f"{window}s"], stdout=f, stderr=subprocess.STDOUT)
        if r.returncode:
            raise Fail(f"vmifs profile record failed: {tail(log, 1).strip()}")
        self.vmifs_down()

    def side_start(self, cmd, mnt, log, what, wait_path, seconds, **kw):
        p = self.spawn(cmd, **kw)
        self.side.append((p, mnt))
        if mnt:
            self.mounts.append(mnt)
        if not wait_for(lambda: os.path.exists(wait_path), seconds, p):
            raise Fail(f"{what} did not come up" + (f": {tail(log, 3).strip()}" if log else ""))

    def side_stop(self):
        """Unmounts and stops the helpers of one run (rclone, httpdirfs, nbdkit)."""
        for p, mnt in self.side:
            if mnt:
                umount(mnt)
            stop(p, 5)
        self.side = []

    def fresh_rclone(self):
        shutil.rmtree(self.w_path("rclone-cache"), ignore_errors=True)

    def rclone(self, v, rnd):
        """rclone mount of the nearest store's plain/, empty cache."""
        mnt = self.w_path("rclone-mnt")
        os.makedirs(mnt, exist_ok=True)
        log = self.o_path("rclone.log")
        self.side_start(["rclone", "mount", "--http-url", self.plain_url.rsplit("/", 1)[0] + "/", ":http:", mnt,
                         "--read-only", "--vfs-cache-mode", "full", "--cache-dir", self.w_path("rclone-cache"),
                         "--dir-cache-time", "1000h", "--log-file", log],
                        mnt, log, "rclone mount", os.path.join(mnt, "guest.raw"), 60)
        return os.path.join(mnt, "guest.raw")

    def fresh_httpdirfs(self):
        shutil.rmtree(self.w_path("httpdirfs-cache"), ignore_errors=True)

    def httpdirfs(self, v, rnd):
        mnt = self.w_path("httpdirfs-mnt")
        os.makedirs(mnt, exist_ok=True)
        os.makedirs(self.w_path("httpdirfs-cache"), exist_ok=True)
        log = self.o_path("httpdirfs.log")
        self.side_start(["httpdirfs", "-f", "--single-file-mode", "--cache", "--cache-location",
                         self.w_path("httpdirfs-cache"), self.plain_url, mnt],
                        mnt, None, "httpdirfs", os.path.join(mnt, "guest.raw"), 60,
                        stdout=log, stderr=log, append=True)
        return os.path.join(mnt, "guest.raw")

    def nbdkit(self, v, rnd):
        """nbdkit's curl plugin on the plain file, on a unix socket."""
        self.nbd_sock = self.w_path("nbd.sock")
        if os.path.exists(self.nbd_sock):
            os.unlink(self.nbd_sock)
        self.side_start(["nbdkit", "-f", "-r", "-U", self.nbd_sock, "curl", f"url={self.plain_url}"],
                        None, None, "nbdkit", self.nbd_sock, 30, stderr=self.o_path("nbdkit.log"), append=True)
        return f"nbd+unix:///?socket={self.nbd_sock}"

    # ---- the run ----

    def run(self):
        self.start_stores()
        self.publish()
        self.check_all()
        names = " ".join(v.name for v in self.o.variants)
        say(f"== {self.o.runs} rounds of: {names} (stores: {' '.join(self.o.rtts)} ms RTT, {self.o.rate} each; "
            f"load {loadavg()})")
        for rnd in range(1, self.o.runs + 1):
            say(f"== round {rnd} (load {loadavg()})")
            selected = {v.name for v in self.o.variants}
            for v in self.o.variants:
                if v.warm_of not in selected:  # else it boots on that variant's set-up
                    self.run_variant(v, rnd)
        for i in range(len(self.stores)):
            if os.path.exists(self.w_path(f"access-{i}.log")):
                shutil.copy(self.w_path(f"access-{i}.log"), self.out)
        shutil.copy(self.w_path(f"store-0/manifests/{self.image_id}.json"), self.o_path("manifest.json"))
        report.main([self.out, "--rtts", " ".join(self.o.rtts), "--rate", self.o.rate, "--guest", self.o.guest,
                     "--md", self.o.md or ""])
        say(f"== per-run data, traces and logs: {self.out}")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of booting the image. Every step but `setup` is optional; each
    takes the Bench."""
    name: str
    about: str
    # (bench, variant, round) -> the backing file or URL of the overlay
    setup: Callable
    # the set-up's seconds and traffic count towards the boot's (else 0)
    timed_setup: bool = True
    # (bench): before the set-up, not timed: empty caches
    reset: Callable | None = None
    # (bench): after the boot(s)
    teardown: Callable | None = None
    # (bench, variant, round): after each boot on this set-up
    after_boot: Callable | None = None
    # (bench, label, backing) -> a checks.txt line: a lazy variant, whose bytes
    # are checked on a cold set-up before the timed boots
    check: Callable | None = None
    check_label: str = ""
    # when that variant runs too, this one is a second boot on its set-up,
    # right after its boot, instead of a set-up of its own
    warm_of: str = ""
    # (bench): once, before the first run
    prepare: Callable | None = None
    # (bench) -> why it cannot run with this vmifs, or None
    unavailable: Callable | None = None


VARIANTS = [
    Variant("e", "a local file (the floor)", Bench.local_file, timed_setup=False),
    Variant("a", "curl the whole image from the nearest store, then boot the local copy "
            "(time = download + boot)", Bench.download,
            reset=Bench.fresh_download, teardown=Bench.no_download),
    Variant("g", "vmifs get of the whole image over all three links, then boot the local copy "
            "(time = download + boot)", Bench.vmifs_get,
            reset=Bench.fresh_get, teardown=Bench.no_get),
    Variant("b", "QEMU's http block driver on the nearest store's plain file", Bench.qemu_http,
            timed_setup=False, check=Bench.check_qemu_http, check_label="b (QEMU http)"),
    Variant("c", "vmifs mount, empty cache, no boot profile, hydration off (as in every vmifs variant but h)",
            Bench.vmifs_plain,
            reset=Bench.fresh_cache, teardown=Bench.vmifs_down, after_boot=Bench.status_plain,
            check=Bench.check_file, check_label="c (vmifs)"),
    Variant("d", "vmifs mount, warm cache: a second boot on the mount of run c (without c: on a "
            "mount whose cache one boot filled)", Bench.vmifs_filled, timed_setup=False,
            reset=Bench.fresh_cache, teardown=Bench.vmifs_down, warm_of="c"),
    Variant("h", "vmifs mount, empty cache, no boot profile, hydration on", Bench.vmifs_hydrated,
            reset=Bench.fresh_cache, teardown=Bench.vmifs_down, after_boot=Bench.status_hydrated),
    Variant("c2", "vmifs mount, empty cache, with the image's boot profile (recorded once with "
            "`vmifs profile record` after a first boot); n/a when this vmifs has no boot profiles",
            Bench.vmifs_profiled, reset=Bench.fresh_cache, teardown=Bench.vmifs_down,
            after_boot=Bench.status_profiled, prepare=Bench.record_profile, unavailable=Bench.no_profiles),
    Variant("ap", "vmifs mount, empty cache, with the boot profile a first fresh host published by itself "
            "(auto_profiles, profile_window of --profile-window): the second host's boot is timed",
            Bench.vmifs_auto, timed_setup=False, reset=Bench.no_profile, teardown=Bench.auto_down,
            after_boot=Bench.status_auto, unavailable=Bench.no_profiles),
    Variant("rclone", "rclone mount of the plain file (http remote, --vfs-cache-mode full)", Bench.rclone,
            reset=Bench.fresh_rclone, teardown=Bench.side_stop, check=Bench.check_file),
    Variant("nbdkit", "nbdkit's curl plugin on the plain file; QEMU's NBD client over a unix socket",
            Bench.nbdkit, teardown=Bench.side_stop, check=Bench.check_nbd),
    Variant("httpdirfs", "httpdirfs --single-file-mode --cache on the plain file", Bench.httpdirfs,
            reset=Bench.fresh_httpdirfs, teardown=Bench.side_stop, check=Bench.check_file),
]
BY_NAME = {v.name: v for v in VARIANTS}


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise Fail(f"{message} (see --help)")


def options(argv):
    env = os.environ.get
    p = Parser(prog=PROG, description=" ".join(__doc__.split("\n\n")[0].split()),
               formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="variants:\n" + "\n".join(f"  {v.name:<10} {v.about}" for v in VARIANTS))
    p.add_argument("--runs", default=env("BENCH_RUNS", "3"), help="boots per variant (BENCH_RUNS, default 3)")
    p.add_argument("--variants", default=env("BENCH_VARIANTS", " ".join(v.name for v in VARIANTS)),
                   help="subset, in the order run within each round (BENCH_VARIANTS)")
    p.add_argument("--rtts", default=env("BENCH_RTTS", "10 40 80"),
                   help="RTT per store in ms, nearest first (BENCH_RTTS, default \"10 40 80\")")
    p.add_argument("--rate", default=env("BENCH_RATE", "100Mbit"),
                   help="link rate per store and direction (BENCH_RATE, default 100Mbit)")
    p.add_argument("--guest", default=env("BENCH_GUEST", "debian"),
                   help="guest kind of scripts/guest.sh (BENCH_GUEST, default debian)")
    p.add_argument("--md", default=env("BENCH_BOOT_MD", ""), help="also write the table as markdown (BENCH_BOOT_MD)")
    p.add_argument("--out", default=env("BENCH_BOOT_OUT", ""), help="keep per-run data here (BENCH_BOOT_OUT)")
    p.add_argument("--push-format", default=env("BENCH_PUSH_FORMAT", ""),
                   help="manifest format of the push, 1 or 2 (BENCH_PUSH_FORMAT; default: vmifs's default)")
    p.add_argument("--mount-extra", default=env("BENCH_MOUNT_EXTRA", ""),
                   help="more [mount] settings for the vmifs variants (BENCH_MOUNT_EXTRA)")
    p.add_argument("--profile-window", default=env("BENCH_PROFILE_WINDOW", "60"),
                   help="seconds automatic profiles record for, variant ap (BENCH_PROFILE_WINDOW, default 60, as vmifs)")
    p.add_argument("--timeout", default=env("BOOT_TIMEOUT", "300"), help="seconds per boot (BOOT_TIMEOUT, default 300)")
    p.add_argument("--log", default=env("VMIFS_BENCH_LOG", "info"),
                   help="log filter of the vmifs daemon (VMIFS_BENCH_LOG, default info)")
    p.add_argument("--no-build", action="store_true", default=env("BENCH_NO_BUILD", "") not in ("", "0"),
                   help="use the vmifs already built, no cargo build (BENCH_NO_BUILD=1)")
    p.add_argument("--list", action="store_true", help="print the variants and exit")
    p.add_argument("--check-nbd", nargs=4, metavar=("SOCKET", "IMAGE", "RANGES", "LABEL"), help=argparse.SUPPRESS)
    o = p.parse_args(argv)
    if o.list or o.check_nbd:
        return o

    if not re.fullmatch(r"[1-9][0-9]*", o.runs):
        raise Fail(f"BENCH_RUNS (--runs) must be a positive whole number, not '{o.runs}'")
    o.runs = int(o.runs)
    if not re.fullmatch(r"[1-9][0-9]*", o.timeout):
        raise Fail(f"BOOT_TIMEOUT (--timeout) must be whole seconds, not '{o.timeout}'")
    o.timeout = int(o.timeout)
    if not re.fullmatch(r"[1-9][0-9]*", o.profile_window):
        raise Fail(f"BENCH_PROFILE_WINDOW (--profile-window) must be whole seconds, not '{o.profile_window}'")
    o.profile_window = int(o.profile_window)
    names = o.variants.replace(",", " ").split()
    for n in names:
        if n not in BY_NAME:
            raise Fail(f"unknown variant '{n}' (known: {' '.join(BY_NAME)})")
    if not names:
        raise Fail("BENCH_VARIANTS (--variants) names no variant")
    o.variants = [BY_NAME[n] for n in names]
    o.rtts = o.rtts.replace(",", " ").split()
    if len(o.rtts) < 3:
        raise Fail("BENCH_RTTS (--rtts) needs at least three stores (k=4 m=2 over 3+ stores)")
    for r in o.rtts:
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", r):
            raise Fail(f"BENCH_RTTS (--rtts): bad RTT '{r}' (milliseconds, e.g. \"10 40 80\")")
    try:
        wan_proxy.parse_rate(o.rate)
    except argparse.ArgumentTypeError as e:
        raise Fail(f"BENCH_RATE (--rate): {e}") from None
    if o.guest not in ("small", "debian"):
        raise Fail(f"BENCH_GUEST (--guest): unknown guest '{o.guest}' (expected small or debian)")
    if o.md and not os.path.isdir(os.path.dirname(os.path.abspath(o.md))):
        raise Fail(f"BENCH_BOOT_MD (--md): no directory for {o.md}")
    if o.out:
        o.out = os.path.abspath(o.out)
    if o.md:
        o.md = os.path.abspath(o.md)
    return o


def guest(kind):
    """(kernel, initrd, root image, kernel command line) of scripts/guest.sh KIND."""
    script = 'g="$("$0" "$1")" || exit 1; eval "$g"; printf "%s\\0" "$GUEST_KERNEL" "$GUEST_INITRD" ' \
             '"$GUEST_ROOT" "$GUEST_APPEND"'
    r = subprocess.run(["bash", "-c", script, os.path.join(HERE, "guest.sh"), kind], stdout=subprocess.PIPE,
                       text=True)
    parts = r.stdout.split("\0")[:4]
    if r.returncode or len(parts) < 4 or not all(parts[:3]):
        raise Fail(f"cannot build the {kind} guest")
    return tuple(parts)


def vmifs_binary(no_build):
    target = os.environ.setdefault("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/vmifs/target"))
    path = os.path.join(target, "release", "vmifs")
    if not no_build and shutil.which("cargo"):
        if subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT).returncode:
            raise Fail("cargo build --release failed")
    elif not no_build:
        say(f"{PROG}: no cargo: using the vmifs already built")
    if not os.access(path, os.X_OK):
        raise Fail(f"no vmifs binary at {path}")
    return path


def main(argv=None):
    for s in (signal.SIGINT, signal.SIGTERM):  # both: clean up, exit 130
        signal.signal(s, on_signal)
    try:
        o = options(argv)
        if o.check_nbd:
            sock, ref, ranges, label = o.check_nbd
            print(check_nbd_here(label, sock, ref, read_ranges(ranges)))
            return 0
        if o.list:
            for v in VARIANTS:
                print(f"{v.name:<10} {'lazy, bytes checked' if v.check else '':<20} {v.about}")
            return 0
        if os.geteuid() != 0:
            raise Fail("must run as root (FUSE mounts, dropping the page cache)")
        if subprocess.run([os.path.join(HERE, "install-bench-tools.sh")], stdout=sys.stderr).returncode:
            raise Fail("installing the tools failed (scripts/install-bench-tools.sh)")
        g = guest(o.guest)
        vmifs = vmifs_binary(o.no_build)
        # Every URL is on loopback: no proxy for them, whatever the environment says.
        for k in ("no_proxy", "NO_PROXY"):
            os.environ[k] = ",".join(filter(None, ["127.0.0.1,localhost", os.environ.get(k)]))
        bench = Bench(o, vmifs, g)
        try:
            bench.run()
        finally:
            bench.close()
    except (Fail, OSError, subprocess.SubprocessError) as e:
        if not INTERRUPTED:
            say(f"{PROG}: {e}")
            return 1
    except KeyboardInterrupt:
        INTERRUPTED.append(signal.SIGINT)
    if INTERRUPTED:  # also when a helper that the signal stopped failed first
        say(f"{PROG}: interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
