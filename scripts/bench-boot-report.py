#!/usr/bin/env python3
"""The report of scripts/bench-boot.py (which imports it), from its output directory.

    bench-boot-report.py OUT [--rtts "10 40 80"] [--rate 100Mbit] [--guest debian] [--md FILE]

Reads OUT/results.jsonl (one line per boot), OUT/trace-*.log (QEMU read
traces), OUT/access-*.log (the stores' access logs) and OUT/manifest.json, and
prints:

- the table: per variant the median, min and max seconds from QEMU's start to
  the boot marker (for "a" including the download), MiB pulled through the WAN
  links before the marker and in all, and ratios of medians against a, b, e;
- per vmifs run, which chunks the guest read and which were fetched, and when
  (also written as CSV: OUT/reads-<variant>-<round>.csv, the guest's reads
  that reached the image; OUT/fetches-<variant>-<round>.csv, shard or pack range requests).
"""

import argparse
import collections
import datetime
import importlib.util
import json
import os
import statistics
import sys

LABELS = {
    "a": "a: curl whole image, then boot",
    "g": "g: vmifs get over all links, then boot",
    "b": "b: QEMU http driver",
    "c": "c: vmifs, cold, no profile",
    "h": "h: vmifs, cold, no profile, hydration on",
    "c2": "c': vmifs, cold, boot profile",
    "ap": "ap: vmifs, cold, automatic profile of a first host",
    "d": "d: vmifs, warm cache",
    "e": "e: local file",
    "rclone": "f: rclone mount (vfs full)",
    "nbdkit": "f: nbdkit curl + QEMU NBD",
    "httpdirfs": "f: httpdirfs --cache",
}
ORDER = list(LABELS)
MIB = 2**20

here = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
spec = importlib.util.spec_from_file_location("boot_once", os.path.join(here, "boot-once.py"))
boot_once = importlib.util.module_from_spec(spec)
spec.loader.exec_module(boot_once)


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def ratio(x, y):
    return "—" if x is None or not y else f"{x / y:.2f}×"


def parse_access(path, store):
    """(end unix time, duration s, chunk id, shard, bytes) of each shard GET
    (format 1) or pack range GET (format 2: chunk id and shard are None, the
    access log does not say which shards a range held)."""
    out = []
    for line in open(path):
        f = line.split()
        if len(f) < 7 or f[2] != "GET" or f[4] not in ("200", "206"):
            continue
        if not f[3].startswith(("/shards/", "/packs/")):
            continue
        t = datetime.datetime.strptime(f[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        cid = shard = None
        if f[3].startswith("/shards/"):
            name = f[3].rsplit("/", 1)[1]
            cid, _, shard = name.partition(".")
            shard = shard.rsplit(".", 1)[-1]
        out.append((t, int(f[6]) / 1e6, cid, store, shard, int(f[5])))
    return out


def daemon_view(out, v, rnd):
    """What the mount daemon saw (`vmifs status --json` right after the boot;
    for d, the difference from the status after c)."""
    def load(name):
        try:
            return json.load(open(os.path.join(out, f"status-{name}-{rnd}.json")))
        except (OSError, ValueError):
            return None
    st = load(v)
    if not st or not st.get("images"):
        return ""
    prev = load("c") if v == "d" else None

    def get(d, *path):
        for k in path:
            d = d[k] if d else None
        return d or 0

    def delta(*path):
        return get(st, *path) - (get(prev, *path) if prev else 0)
    img = lambda s: s["images"][0] if s else None  # noqa: E731
    kernel = get(img(st), "bytes_read") - (get(img(prev), "bytes_read") if prev else 0)
    reads = get(img(st), "reads") - (get(img(prev), "reads") if prev else 0)
    stores = ", ".join(f"{s['name']} {s['requests'] - (next((p['requests'] for p in prev['stores'] if p['name'] == s['name']), 0) if prev else 0)} req "
                       f"~{s['latency_ms']:.0f} ms" for s in st.get("stores", []))
    return (f"daemon: kernel asked {kernel / MIB:.1f} MiB in {reads} FUSE reads, "
            f"{delta('chunks_fetched')} chunks fetched ({delta('degraded_reads')} decoded with parity), "
            f"{get(img(st), 'traced_chunks') - (get(img(prev), 'traced_chunks') if prev else 0)} chunks "
            f"newly traced as read, stores: {stores}")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--rtts", default="10 40 80")
    p.add_argument("--rate", default="100Mbit")
    p.add_argument("--guest", default="debian")
    p.add_argument("--md", default="")
    a = p.parse_args(argv)
    out = a.out
    runs = [json.loads(l) for l in open(os.path.join(out, "results.jsonl")) if l.strip()]
    by = collections.defaultdict(list)
    for r in runs:
        by[r["variant"]].append(r)

    def ok(v):
        return [r for r in by.get(v, []) if r.get("seconds") is not None]

    meds = {v: med([r["total_seconds"] for r in ok(v)]) for v in by}
    # What the guest read from the image before the marker (local boots).
    guest_read = med([r["backing_marker"]["distinct_bytes"] for r in ok("e") if "backing_marker" in r])

    rows = []
    for v in sorted(by, key=ORDER.index):
        rs = ok(v)
        secs = [r["total_seconds"] for r in rs]
        na = [r for r in by[v] if r.get("seconds") is None]
        if not rs:
            why = na[0].get("error", "failed") if na else "not run"
            rows.append([LABELS[v], "n/a" if why.startswith("n/a") else f"failed ({why})"] + [""] * 8)
            continue
        rows.append([
            LABELS[v],
            f"{len(rs)}/{len(by[v])}",
            fmt(med(secs)), fmt(min(secs)), fmt(max(secs)),
            fmt(med([r["pulled_marker"] / MIB for r in rs])),
            fmt(med([r["pulled_end"] / MIB for r in rs])),
            ratio(meds[v], meds.get("a")), ratio(meds[v], meds.get("b")), ratio(meds[v], meds.get("e")),
        ])
    head = ["variant", "runs", "median s", "min s", "max s", "MiB pulled before marker",
            "MiB pulled in all", "vs a", "vs b", "vs e"]

    lines = []
    lines.append(f"Guest: {a.guest}; stores at {a.rtts} ms RTT, {a.rate} each; "
                 f"the guest read {fmt(guest_read / MIB if guest_read else None)} MiB of the image before the marker.")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    text = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [head] + rows]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]

    # Goals (for the reader; the script asserts nothing).
    goals = []

    def goal(name, x, y, limit):
        if meds.get(x) and meds.get(y):
            goals.append(f"{name}: {meds[x] / meds[y]:.2f} (goal <= {limit})")
    goal("c/a", "c", "a", 0.25)
    goal("c/b", "c", "b", 0.8)
    goal("c'/e", "c2", "e", 1.3)
    goal("d/e", "d", "e", 1.1)
    goal("ap/c'", "ap", "c2", 1.0)
    goal("h/c", "h", "c", 1.05)
    if guest_read:
        for v in ("c", "c2"):
            rs = ok(v)
            if rs:
                goals.append(f"{v} pulled before marker / guest read: "
                             f"{med([r['pulled_marker'] for r in rs]) / guest_read:.2f} (goal <= 2)")

    # Chunk traces of the vmifs runs, and hydration's time to fully cached.
    trace_lines = hydration_lines(out, ok, a.rtts, a.rate) + chunk_traces(out, by, ok)

    checks = os.path.join(out, "checks.txt")
    check_lines = [l.rstrip("\n").replace("\t", "  ") for l in open(checks)] if os.path.exists(checks) else []

    print("\n".join(lines))
    print("\n".join(text))
    if goals:
        print("goals: " + "; ".join(goals))
    if check_lines:
        print("data checks (cold, random and boot ranges):")
        print("\n".join("  " + l for l in check_lines))
    print("\n".join(trace_lines))
    if a.md:
        with open(a.md, "w") as f:
            f.write("\n".join(lines) + "\n\n" + "\n".join(md) + "\n")
            if goals:
                f.write("\nRatios of medians: " + "; ".join(goals) + ".\n")
            if check_lines:
                f.write("\nData checks, cold, random and boot ranges read through each path:\n\n")
                f.write("\n".join(f"- {l}" for l in check_lines) + "\n")
            if trace_lines:
                f.write("\n```\n" + "\n".join(trace_lines) + "\n```\n")


def rate_bytes(rate):
    """Bytes per second of a rate such as 100Mbit or 12.5MB/s (as scripts/wan-proxy.py reads it)."""
    import re
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgKMG]?)(bit|b|B|bps)?(/s)?\s*", rate)
    if not m:
        return None
    n = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    return n / 8 if (m.group(3) or "bit") in ("bit", "b", "bps") else n


def hydration_lines(out, ok, rtts, rate):
    """Per h boot: when the image was fully cached after its first open, against the links' bound
    (the image's data bytes over the links' aggregate rate), and how the stores shared the work."""
    lines = []
    per = rate_bytes(rate)
    for r in ok("h"):
        path = os.path.join(out, f"status-h-{r['round']}.json")
        try:
            st = json.load(open(path))
        except (OSError, ValueError):
            continue
        for img in st.get("images", []):
            ms, data = img.get("hydrated_ms"), img.get("data_bytes", 0)
            bound = data / (per * len(rtts.split())) if per else None
            took = f"{ms / 1000:.2f} s" if ms is not None else f"not done ({img.get('hydration')})"
            vs = f", {ms / 1000 / bound:.2f}x the links' bound of {bound:.2f} s" if ms is not None and bound else ""
            stores = ", ".join(f"{s['name']} {s['requests']} requests {s['bytes'] / MIB:.0f} MiB"
                               + (f" (window {s['pace']['window']}, {s['pace']['halvings']} halvings)"
                                  if s.get("pace") else "")
                               for s in st.get("stores", []))
            lines.append(f"h round {r['round']}: fully cached {took} after the first open{vs}; {stores}"
                         + cpu_of(out, "h", r["round"]))
    for r in ok("c"):
        cpu = cpu_of(out, "c", r["round"])
        if cpu:
            lines.append(f"c round {r['round']}: hydration off" + cpu)
    return lines


def cpu_of(out, v, rnd):
    """'; the mount used N s of CPU ...' from cpu-V-RND.json (the mount daemon's user and system
    time when its status was taken, the stores' and links' since the mount started), or ''."""
    try:
        c = json.load(open(os.path.join(out, f"cpu-{v}-{rnd}.json")))
    except (OSError, ValueError):
        return ""
    return (f"; the mount used {c['user_s'] + c['system_s']:.1f} s of CPU ({c['user_s']:.1f} user, "
            f"{c['system_s']:.1f} system), load {c['load']}; the stores "
            + "/".join(f"{x:.1f}" for x in c.get("serve_s", [])) + " s, their links "
            + "/".join(f"{x:.1f}" for x in c.get("link_s", [])) + " s meanwhile")


def chunk_traces(out, by, ok):
    man_path = os.path.join(out, "manifest.json")
    if not os.path.exists(man_path):
        return []
    man = json.load(open(man_path))
    cs = man["chunk_size"]
    index_of = collections.defaultdict(list)
    for i, c in enumerate(man["chunks"]):
        if c:
            index_of[c].append(i)
    fetches = []
    for name in sorted(os.listdir(out)):
        if name.startswith("access-") and name.endswith(".log"):
            fetches += parse_access(os.path.join(out, name), name[7:-4])
    fetches.sort()
    e_wait = med([r["guest"]["rd_total_time_ns"] / 1e9 for r in ok("e") if r.get("guest")])
    lines = []
    for v in ("c", "h", "c2", "ap", "d"):
        for r in ok(v):
            t0 = r["start_unix"]
            mark = t0 + r["seconds"]
            trace = os.path.join(out, f"trace-{v}-{r['round']}.log")
            reads, distinct = boot_once.backing_reads(trace, mark) if os.path.exists(trace) else ([], 0)
            with open(os.path.join(out, f"reads-{v}-{r['round']}.csv"), "w") as f:
                f.write("seconds,offset,bytes,chunk\n")
                for t, off, n in reads:
                    f.write(f"{t - t0:.4f},{off},{n},{off // cs}\n")
            first = {}
            for t, off, n in reads:
                for ci in range(off // cs, (off + n - 1) // cs + 1):
                    if man["chunks"][ci] and ci not in first:
                        first[ci] = t
            order = sorted(first, key=first.get)
            seq = sum(1 for x, y in zip(order, order[1:]) if y == x + 1)
            near = sum(1 for x, y in zip(order, order[1:]) if 0 < y - x <= 8)
            back = sum(1 for x, y in zip(order, order[1:]) if y < x)
            # Shard requests from the mount's start (set-up) to the marker.
            win = [f for f in fetches if t0 - r["setup_seconds"] - 0.5 <= f[0] <= mark]
            with open(os.path.join(out, f"fetches-{v}-{r['round']}.csv"), "w") as f:
                f.write("seconds_done,duration_ms,chunk_indices,store,shard,bytes\n")
                for t, dur, cid, store, shard, n in win:
                    idx = " ".join(map(str, index_of.get(cid, [])))
                    f.write(f"{t - t0:.4f},{dur * 1000:.1f},{idx},{store},{shard if shard is not None else ''},{n}\n")
            fetched = {c for _, _, c, *_ in win if c is not None}
            read_ids = {man["chunks"][i] for i in first}
            unread = len(fetched - read_ids)
            packed = any(c is None for _, _, c, *_ in win)
            during = [t - t0 for t, *_ in win if t >= t0]
            # 100 ms slots of the boot in which some shard request completed.
            active = len({int(x * 10) for x in during}) / 10
            wait = r["guest"]["rd_total_time_ns"] / 1e9 if r.get("guest") else None
            daemon = daemon_view(out, v, r["round"])
            lines.append(
                f"{LABELS[v]} round {r['round']}: {r['seconds']:.1f} s boot; guest read "
                f"{distinct / MIB:.1f} MiB in {len(reads)} reads touching {len(first)} non-zero chunks "
                f"(of {max(len(order) - 1, 0)} steps between first touches: {seq} to the next chunk, "
                f"{near} up to 8 chunks forward, {back} backward); "
                + (f"{len(win)} pack range GETs ({sum(f[5] for f in win) / MIB:.1f} MiB; the daemon's count of chunks below); "
                   if packed else
                   f"fetched {len(fetched)} chunks ({len(win)} shard GETs, {sum(f[5] for f in win) / MIB:.1f} MiB), "
                   f"{unread} of them never read by the guest; ")
                + f"guest reads in flight {fmt(wait, 2)} s "
                f"summed (local file: {fmt(e_wait, 2)} s); store requests completed in "
                f"{active:.1f} s of the boot (100 ms slots), the last at {max(during, default=0):.1f} s"
                + (f"; {daemon}" if daemon else ""))
    return lines


if __name__ == "__main__":
    sys.exit(main())
