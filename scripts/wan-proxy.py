#!/usr/bin/env python3
"""A WAN link in user space: a TCP proxy that adds latency and limits bandwidth.

    wan-proxy.py --listen 127.0.0.1:9101 --target 127.0.0.1:9001 \
                 --rtt 40ms --rate 100Mbit [--stats FILE] [--control PORT]
    wan-proxy.py --selftest [--rtt 40ms --rate 100Mbit]

Everything arriving on the listening port is forwarded to the target and back.
The link it models, per direction:

- bandwidth: every piece of data read is put on a per-direction "wire" shared by
  all connections through this proxy (a virtual clock: each piece departs once the
  pieces before it, on any connection, have been sent at --rate). The reader waits
  for its piece to depart before it reads more, so a sender is held back by the
  link the way a bottleneck router holds back TCP, and the proxy's memory stays
  bounded by one bandwidth-delay product;
- latency: each piece is delivered RTT/2 after it departed (not after the piece
  before it was delivered: delays do not add up), in the order it was read;
- connection set-up: a new connection's first bytes towards the target are held
  one extra RTT, the cost of the TCP handshake on a real link (--no-handshake
  turns this off).

Not modelled: TCP slow start and congestion windows, loss, jitter.

Counters (bytes delivered in each direction, connections) are written as JSON to
--stats every 100 ms and on exit, and answered, one JSON line, to anyone
connecting to --control: `up` is client-to-target, `down` target-to-client.

--selftest starts a target server and a proxy process, measures RTT and
throughput through it in both directions, with one and with two connections, and
exits non-zero when a measurement is more than 10% (or 3 ms of latency) off.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

CHUNK = 32 * 1024
LEAD = 0.005


def parse_duration(s):
    m = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s)?\s*", s)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {s!r} (e.g. 40ms, 0.04s)")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0}[m.group(2)]


def parse_rate(s):
    """Bytes per second from e.g. 100Mbit, 100mbit/s, 12.5MB/s, 1Gbit, 0 (unlimited)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgKMG]?)(bit|b|B|bps)?(/s)?\s*", s)
    if not m:
        raise argparse.ArgumentTypeError(f"bad rate {s!r} (e.g. 100Mbit, 12.5MB/s)")
    n = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    unit = m.group(3) or "bit"
    return n / 8 if unit in ("bit", "b", "bps") else n


def parse_addr(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"bad address {s!r} (want HOST:PORT)")
    return host, int(port)


class Wire:
    """One direction of the link: a clock shared by every connection."""

    def __init__(self, rate):
        self.rate = rate
        self.free_at = 0.0
        self.bytes = 0

    def depart(self, n, now):
        """Reserve the wire for n bytes; returns when they have been sent."""
        if self.rate <= 0:
            return now
        self.free_at = max(self.free_at, now) + n / self.rate
        return self.free_at


class Proxy:
    def __init__(self, target, rtt, rate_up, rate_down, handshake):
        self.target = target
        self.delay = rtt / 2
        self.rtt = rtt
        self.up = Wire(rate_up)
        self.down = Wire(rate_down)
        self.handshake = handshake
        self.connections = 0
        self.active = 0

    def stats(self):
        return {
            "up": self.up.bytes,
            "down": self.down.bytes,
            "connections": self.connections,
            "active": self.active,
            "rtt_ms": self.rtt * 1000,
            "rate_up": self.up.rate,
            "rate_down": self.down.rate,
        }

    async def pipe(self, reader, writer, wire, not_before):
        """Forward reader -> writer through `wire`, delivering each piece at
        max(read, not_before) + serialisation + delay, in order. Returns at
        end of stream once all is delivered; raises when either side fails."""
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue()

        async def deliver():
            while True:
                at, data = await queue.get()
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                wire.bytes += len(data)

        task = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                if task.done():
                    task.result()  # delivery failed: stop reading
                now = max(loop.time(), not_before)
                if not data:
                    await queue.put((now + self.delay, None))
                    break
                sent = wire.depart(len(data), now)
                await queue.put((sent + self.delay, data))
                # Read ahead of the wire by a few ms, so timer slack never
                # leaves the link idle; the rate is kept by the clock above.
                wait = sent - LEAD - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            await task
        finally:
            if not task.done():
                task.cancel()

    async def handle(self, creader, cwriter):
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.connections += 1
        self.active += 1
        try:
            await self.forward(creader, cwriter, start)
        except asyncio.CancelledError:
            pass  # shutting down
        finally:
            self.active -= 1

    async def forward(self, creader, cwriter, start):
        try:
            treader, twriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.close()
            return
        for w in (cwriter, twriter):
            s = w.get_extra_info("socket")
            if s is not None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = start + self.rtt if self.handshake else start
        pipes = {
            asyncio.create_task(self.pipe(creader, twriter, self.up, first)),
            asyncio.create_task(self.pipe(treader, cwriter, self.down, 0.0)),
        }
        try:
            done, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
            if any(not t.cancelled() and t.exception() for t in done):
                # One side is gone: drop the connection both ways, as a
                # router would once the peer resets, instead of pulling the
                # rest of a response nobody reads over the shared link.
                for w in (cwriter, twriter):
                    w.transport.abort()
        finally:
            for t in pipes:
                t.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (cwriter, twriter):
                w.close()


async def serve(args):
    proxy = Proxy(args.target, args.rtt, args.rate_up, args.rate_down, not args.no_handshake)
    server = await asyncio.start_server(proxy.handle, *args.listen, backlog=256)
    control = None
    if args.control is not None:

        async def answer(r, w):
            w.write((json.dumps(proxy.stats()) + "\n").encode())
            await w.drain()
            w.close()

        control = await asyncio.start_server(answer, args.listen[0], args.control)

    def write_stats():
        if args.stats:
            tmp = args.stats + ".tmp"
            with open(tmp, "w") as f:
                json.dump(proxy.stats(), f)
            os.replace(tmp, args.stats)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    write_stats()
    if args.ready:
        port = server.sockets[0].getsockname()[1]
        cport = control.sockets[0].getsockname()[1] if control else 0
        print(f"ready {port} {cport}", flush=True)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass
        write_stats()
    server.close()
    if control:
        control.close()
    write_stats()


# ---------------------------------------------------------------- self-test


async def target_server(reader, writer):
    """Commands: 'P' + 63 bytes -> echo 64 bytes; 'D' + 8-byte n -> send n bytes;
    'U' + 8-byte n -> read n bytes, answer 8 bytes."""
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            cmd = await reader.readexactly(1)
            if cmd == b"P":
                writer.write(b"P" + await reader.readexactly(63))
            elif cmd == b"D":
                n = int.from_bytes(await reader.readexactly(8), "big")
                block = b"x" * (256 * 1024)
                while n > 0:
                    writer.write(block[: min(n, len(block))])
                    n -= min(n, len(block))
                    await writer.drain()
            elif cmd == b"U":
                n = int.from_bytes(await reader.readexactly(8), "big")
                while n > 0:
                    n -= len(await reader.read(min(n, 1 << 20)))
                writer.write(b"done....")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def selftest(args):
    server = await asyncio.start_server(target_server, "127.0.0.1", 0)
    tport = server.sockets[0].getsockname()[1]
    rate_mbit = args.rate_down * 8 / 1e6
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__),
        "--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{tport}",
        "--rtt", f"{args.rtt * 1000}ms", "--rate", f"{rate_mbit}Mbit",
        "--control", "0", "--ready",
        stdout=subprocess.PIPE,
    )
    _, pport, cport = (await asyncio.wait_for(proc.stdout.readline(), 10)).split()
    pport, cport = int(pport), int(cport)
    failures = []
    rows = []

    def check(what, got, want, tol_rel, tol_abs, unit):
        ok = abs(got - want) <= max(tol_rel * want, tol_abs)
        rows.append(f"{what:<44} {got:10.2f} {unit:<7} want {want:8.2f}  {'ok' if ok else 'OFF'}")
        if not ok:
            failures.append(what)

    async def connect():
        r, w = await asyncio.open_connection("127.0.0.1", pport)
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return r, w

    async def ping(r, w):
        t = time.perf_counter()
        w.write(b"P" + b"p" * 63)
        await w.drain()
        await r.readexactly(64)
        return time.perf_counter() - t

    async def download(n):
        r, w = await connect()
        await ping(r, w)  # connection set up before timing
        t = time.perf_counter()
        w.write(b"D" + n.to_bytes(8, "big"))
        await w.drain()
        got = 0
        while got < n:
            got += len(await r.read(1 << 20))
        dt = time.perf_counter() - t
        w.close()
        return dt

    async def upload(n):
        r, w = await connect()
        await ping(r, w)
        t = time.perf_counter()
        w.write(b"U" + n.to_bytes(8, "big"))
        block = b"u" * (1 << 20)
        left = n
        while left > 0:
            w.write(block[: min(left, len(block))])
            left -= min(left, len(block))
            await w.drain()
        await r.readexactly(8)
        dt = time.perf_counter() - t
        w.close()
        return dt

    rtt_ms = args.rtt * 1000
    t = time.perf_counter()
    firsts = []
    for _ in range(6):  # the first one warms the proxy up and is not counted
        r, w = await connect()
        firsts.append(await ping(r, w))
        w.close()
    first = sorted(firsts[1:])[2]
    check("new connection + request, median of 5 (2 RTT)", first * 1000, 2 * rtt_ms, 0.0, 3.0, "ms")
    r, w = await connect()
    pings = sorted([await ping(r, w) for _ in range(20)])
    check("request/response, median of 20 (1 RTT)", pings[10] * 1000, rtt_ms, 0.0, 3.0, "ms")
    w.close()

    size = int(args.rate_down * 2)  # about two seconds of data
    mbit = lambda n, dt: n * 8 / dt / 1e6  # noqa: E731
    # One RTT of a download is the request going up and the first byte coming down.
    dt = await download(size)
    check("download, 1 connection", mbit(size, dt - args.rtt), rate_mbit, 0.10, 0, "Mbit/s")
    dt = await upload(size)
    check("upload, 1 connection", mbit(size, dt - args.rtt), args.rate_up * 8 / 1e6, 0.10, 0, "Mbit/s")
    t2 = time.perf_counter()
    await asyncio.gather(download(size // 2), download(size // 2))
    dt = time.perf_counter() - t2
    # Each download also spends one RTT on its handshake ping.
    check("download, 2 connections sharing the link", mbit(size, dt - 2 * args.rtt), rate_mbit, 0.10, 0, "Mbit/s")

    await asyncio.sleep(args.rtt)
    cr, cw = await asyncio.open_connection("127.0.0.1", cport)
    stats = json.loads(await cr.readline())
    cw.close()
    # 30 pings, one upload acknowledgement, three downloads.
    expect_down = 64 * 30 + 8 + size + 2 * (size // 2)
    check("bytes counted downstream", stats["down"], expect_down, 0.0, 0, "B")
    # A client that hangs up mid-download must free the link at once.
    r, w = await connect()
    w.write(b"D" + size.to_bytes(8, "big"))
    await w.drain()
    got = 0
    while got < 1 << 20:
        got += len(await r.read(1 << 20))
    w.transport.abort()
    await asyncio.sleep(2 * args.rtt + 0.2)
    dt = await download(size // 2)
    check("download after another client hung up", mbit(size // 2, dt - args.rtt), rate_mbit, 0.10, 0, "Mbit/s")
    await asyncio.sleep(2 * args.rtt + 0.2)
    cr, cw = await asyncio.open_connection("127.0.0.1", cport)
    stats = json.loads(await cr.readline())
    cw.close()
    check("connections left open", stats["active"], 0, 0, 0, "")

    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    server.close()
    print(f"wan-proxy self-test: rtt {rtt_ms:.1f} ms, rate {rate_mbit:.1f} Mbit/s, "
          f"{time.perf_counter() - t:.1f} s")
    for row in rows:
        print("  " + row)
    if failures:
        print("FAILED: " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", type=parse_addr, default=None)
    p.add_argument("--target", type=parse_addr, default=None)
    p.add_argument("--rtt", type=parse_duration, default=parse_duration("40ms"))
    p.add_argument("--rate", type=parse_rate, default=None, help="both directions (default 100Mbit; 0 = unlimited)")
    p.add_argument("--rate-up", type=parse_rate, default=None, help="client to target")
    p.add_argument("--rate-down", type=parse_rate, default=None, help="target to client")
    p.add_argument("--no-handshake", action="store_true")
    p.add_argument("--stats", default=None, help="JSON counters, rewritten every 100 ms")
    p.add_argument("--control", type=int, default=None, help="port answering one JSON line")
    p.add_argument("--ready", action="store_true",
                   help="print 'ready PORT CONTROL_PORT' once listening (port 0 picks a free one)")
    p.add_argument("--selftest", action="store_true")
    args = p.parse_args()
    rate = args.rate if args.rate is not None else parse_rate("100Mbit")
    args.rate_up = args.rate_up if args.rate_up is not None else rate
    args.rate_down = args.rate_down if args.rate_down is not None else rate
    if args.selftest:
        sys.exit(asyncio.run(selftest(args)))
    if args.listen is None or args.target is None:
        p.error("--listen and --target are required (or --selftest)")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
