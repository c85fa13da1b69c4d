#!/usr/bin/env python3
"""Plot the peer simulation's CSV (examples/peer_sim.rs) as one SVG with two
panels against the number of hosts (log scale): origin egress in copies of
the image, and p99 completion relative to one host alone. Standard library
only, so it runs wherever python3 does.

    scripts/peer-sim-plot.py sim.csv out.svg
"""
import csv
import math
import sys

COLORS = {"unicast": "#c0392b", "tree": "#2471a3", "peers": "#229954"}
W, H, PAD = 360, 260, 48


def panel(x0, title, series, ylabel, goal=None):
    xs = sorted({n for pts in series.values() for n, _ in pts})
    ys = [y for pts in series.values() for _, y in pts] + ([goal] if goal else [])
    lx = (math.log10(min(xs)), math.log10(max(xs)))
    ly = (math.floor(math.log10(min(ys) * 0.9)), math.ceil(math.log10(max(ys) * 1.1)))
    if ly[1] == ly[0]:
        ly = (ly[0], ly[0] + 1)

    def px(n):
        span = lx[1] - lx[0] or 1
        return x0 + PAD + (math.log10(n) - lx[0]) / span * (W - 2 * PAD)

    def py(v):
        return H - PAD + (math.log10(v) - ly[0]) / (ly[1] - ly[0]) * (2 * PAD - H)

    out = [f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>']
    out.append(f'<line x1="{x0 + PAD}" y1="{H - PAD}" x2="{x0 + W - PAD}" y2="{H - PAD}" stroke="black"/>')
    out.append(f'<line x1="{x0 + PAD}" y1="{PAD}" x2="{x0 + PAD}" y2="{H - PAD}" stroke="black"/>')
    for e in range(ly[0], ly[1] + 1):
        y = py(10 ** e)
        out.append(f'<line x1="{x0 + PAD}" y1="{y}" x2="{x0 + W - PAD}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + PAD - 4}" y="{y + 4}" text-anchor="end">{10 ** e:g}</text>')
    for n in xs:
        out.append(f'<text x="{px(n)}" y="{H - PAD + 16}" text-anchor="middle">{n}</text>')
    out.append(f'<text x="{x0 + W / 2}" y="{H - 8}" text-anchor="middle">hosts</text>')
    out.append(
        f'<text x="{x0 + 12}" y="{H / 2}" text-anchor="middle" transform="rotate(-90 {x0 + 12} {H / 2})">{ylabel}</text>'
    )
    if goal:
        y = py(goal)
        out.append(
            f'<line x1="{x0 + PAD}" y1="{y}" x2="{x0 + W - PAD}" y2="{y}" stroke="#888" stroke-dasharray="4 3"/>'
        )
        out.append(f'<text x="{x0 + W - PAD}" y="{y - 4}" text-anchor="end" fill="#666">goal at 1,000: {goal:g}</text>')
    for mode, pts in series.items():
        pts = sorted(pts)
        path = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in pts)
        c = COLORS.get(mode, "black")
        out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for n, v in pts:
            out.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{c}"/>')
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: peer-sim-plot.py SIM.csv OUT.svg")
    rows = list(csv.DictReader(open(sys.argv[1])))
    if not rows:
        sys.exit(f"error: {sys.argv[1]} has no rows")
    egress, p99 = {}, {}
    for r in rows:
        n = int(r["hosts"])
        egress.setdefault(r["mode"], []).append((n, float(r["origin_copies"])))
        p99.setdefault(r["mode"], []).append((n, float(r["p99_rel"])))
    body = panel(0, "origin egress (copies of the image)", egress, "copies", goal=1.5)
    body += panel(W, "p99 completion / one host alone", p99, "ratio", goal=2)
    legend = []
    for i, (mode, c) in enumerate(COLORS.items()):
        legend.append(f'<rect x="{2 * W - 90}" y="{40 + 16 * i}" width="10" height="10" fill="{c}"/>')
        legend.append(f'<text x="{2 * W - 75}" y="{49 + 16 * i}">{mode}</text>')
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{2 * W}" height="{H}" fill="white"/>',
        *body,
        *legend,
        "</svg>",
    ]
    open(sys.argv[2], "w").write("\n".join(svg) + "\n")


main()
