#!/usr/bin/env python3
"""plot.py: SVG charts from the CSVs that scripts/stress.sh and scripts/compare.sh write
(standard library only).

    python3 scripts/plot.py results/DATE/stress.csv
    python3 scripts/plot.py results/DATE/compare-medians.csv

From stress.csv, next to it: throughput.svg (requests/s against connections, one line
per body size and pipeline depth) and latency.svg (latency percentiles against
connections, 64-byte bodies, pipeline 1). From compare-medians.csv: compare-cpu.svg
(server CPU per request by shape, one line per server) and compare-rps.svg.
"""

import csv
import math
import os
import sys

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 420, 80, 200, 40, 50


def line_chart(path, title, xlabels, series, ylabel, ylog=False, xtitle="connections"):
    """series: list of (name, [y or None per x label])."""
    values = [y for _, ys in series for y in ys if y]
    if not values:
        return
    lo, hi = min(values), max(values)
    if ylog:
        lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
    else:
        lo, hi = 0, hi * 1.1

    def y_of(v):
        if ylog:
            frac = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            frac = (v - lo) / (hi - lo)
        return TOP + (1 - frac) * (H - TOP - BOTTOM)

    def x_of(i):
        return LEFT + i * (W - LEFT - RIGHT) / max(len(xlabels) - 1, 1)

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="22" font-size="15">%s</text>' % (LEFT, title)]
    ticks = [lo * 10 ** k for k in range(int(round(math.log10(hi / lo))) + 1)] if ylog else [lo + (hi - lo) * k / 5 for k in range(6)]
    for t in ticks:
        y = y_of(t)
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (LEFT, W - RIGHT, y, y))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (LEFT - 6, y + 4, human(t)))
    for i, label in enumerate(xlabels):
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x_of(i), H - BOTTOM + 18, label))
    out.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % ((LEFT + W - RIGHT) / 2, H - 10, xtitle))
    out.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">%s</text>' % (H / 2, H / 2, ylabel))
    for k, (name, ys) in enumerate(series):
        color = COLORS[k % len(COLORS)]
        points = [(x_of(i), y_of(y)) for i, y in enumerate(ys) if y]
        if len(points) > 1:
            out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                       % (color, " ".join("%.1f,%.1f" % p for p in points)))
        for x, y in points:
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (x, y, color))
        ly = TOP + 10 + 18 * k
        out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"/>' % (W - RIGHT + 15, W - RIGHT + 35, ly, ly, color))
        out.append('<text x="%d" y="%d">%s</text>' % (W - RIGHT + 40, ly + 4, name))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def size_label(size):
    return "%d KiB" % (size // 1024) if size >= 1024 and size % 1024 == 0 else "%d B" % size


def human(v):
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return "%g%s" % (round(v / scale, 1), unit)
    return "%g" % round(v, 1)


def compare(path, rows):
    """Medians per server and shape: one line per server across the shapes."""
    shapes = list(dict.fromkeys((r["conns"], r["pipeline"]) for r in rows))
    labels = ["%sx%s" % shape for shape in shapes]
    out_dir = os.path.dirname(path)
    for key, name, title, ylabel in (
            ("server_cpu_us_per_req", "compare-cpu.svg", "server CPU per request (lower is better)", "microseconds"),
            ("rps", "compare-rps.svg", "requests/s, one client for every server", "requests/s")):
        series = []
        for system in dict.fromkeys(r["system"] for r in rows):
            by_shape = {(r["conns"], r["pipeline"]): float(r[key]) for r in rows if r["system"] == system}
            series.append((system, [by_shape.get(shape) for shape in shapes]))
        line_chart(os.path.join(out_dir, name), title, labels, series, ylabel, ylog=True,
                   xtitle="connections x pipeline")


def main():
    path = sys.argv[1]
    first = next(csv.DictReader(open(path)), {})
    if "system" in first:
        return compare(path, list(csv.DictReader(open(path))))
    rows = [r for r in csv.DictReader(open(path)) if r["rps"] not in ("", "skipped")]
    conns = sorted({int(r["conns"]) for r in rows})
    labels = [str(c) for c in conns]
    out_dir = os.path.dirname(path)

    series = []
    for size in sorted({int(r["size"]) for r in rows}):
        for pipeline in sorted({int(r["pipeline"]) for r in rows}):
            by_conns = {int(r["conns"]): float(r["rps"]) for r in rows
                        if int(r["size"]) == size and int(r["pipeline"]) == pipeline}
            series.append(("%s, pipeline %d" % (size_label(size), pipeline),
                           [by_conns.get(c) for c in conns]))
    line_chart(os.path.join(out_dir, "throughput.svg"), "frameloop echo: requests/s", labels, series, "requests/s", ylog=True)

    small = {int(r["conns"]): r for r in rows if r["size"] == "64" and r["pipeline"] == "1"}
    lat = [(name, [float(small[c][key]) if c in small else None for c in conns])
           for name, key in (("p50", "p50_us"), ("p90", "p90_us"), ("p99", "p99_us"), ("p99.9", "p999_us"))]
    line_chart(os.path.join(out_dir, "latency.svg"), "frameloop echo latency, 64 B, pipeline 1", labels, lat, "microseconds", ylog=True)


if __name__ == "__main__":
    main()
