"""Depth accuracy against training time, several runs in one picture.

    python -m tools.plot_curve runs/curve-fused="fused ops" runs/curve-reference \
        --out docs/training-curve.png [--metric abs_rel_median_scaled] [--ymax 0.5]

Each run directory holds curve.csv (packnet train --set eval_every_minutes=1).
Writes the PNG (one line per run, labelled with its directory name or the
label after "=") and prints the rows as a markdown table for docs/results.md.
"""
import argparse
import csv
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

from packnet.image import draw_text, text_size, write_image

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
W, H = 960, 560
LEFT, RIGHT, TOP, BOTTOM = 90, 30, 50, 70


def read_curve(run_dir):
    path = os.path.join(run_dir, "curve.csv")
    if not os.path.isfile(path):
        raise SystemExit(f"plot_curve: error: {path} not found (train with --set "
                         f"eval_every_minutes=1)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"plot_curve: error: {path} has no rows")
    return rows


def nice_ticks(lo, hi, n=6):
    """Round tick values covering [lo, hi], at least two (a flat curve gets
    a band around its value)."""
    if not hi > lo:
        pad = 0.1 * abs(lo) or 1.0
        lo, hi = lo - pad, hi + pad
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (m * step) <= n:
            step *= m
            break
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(max(int(math.ceil((hi - start) / step)), 1) + 1)]


def plot(curves, metric, title, ymax=None):
    """curves: {label: [(minutes, value)]} -> uint8 [H,W,3]; points above ymax
    are drawn at the top edge."""
    xs = [x for c in curves.values() for x, _ in c]
    ys = [y for c in curves.values() for _, y in c if math.isfinite(y)]
    if ymax is not None:
        curves = {k: [(x, min(y, ymax)) for x, y in c] for k, c in curves.items()}
        ys = [min(y, ymax) for y in ys]
    xt = nice_ticks(0.0, max(xs))
    yt = nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(x, y):
        return (LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT),
                H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM))

    im = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(im)
    for x in xt:  # grid and axes
        d.line([px(x, y0), px(x, y1)], fill=(225, 225, 225))
    for y in yt:
        d.line([px(x0, y), px(x1, y)], fill=(225, 225, 225))
    d.line([px(x0, y0), px(x1, y0)], fill=(0, 0, 0), width=2)
    d.line([px(x0, y0), px(x0, y1)], fill=(0, 0, 0), width=2)
    for i, (label, pts) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        line = [px(x, y) for x, y in pts if math.isfinite(y)]
        d.line(line, fill=colour, width=3)
        for p in line:
            d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colour)
    img = np.asarray(im).copy()
    for x in xt:
        p = px(x, y0)
        draw_text(img, f"{x:g}", int(p[0]), int(p[1]) + 8, 14, (0, 0, 0), anchor="ma")
    for y in yt:
        p = px(x0, y)
        draw_text(img, f"{y:.3f}", int(p[0]) - 8, int(p[1]), 14, (0, 0, 0), anchor="rm")
    draw_text(img, "training time (minutes, evaluations not counted)", (LEFT + W - RIGHT) // 2,
              H - 24, 16, (0, 0, 0), anchor="ma")
    draw_text(img, metric, 12, TOP - 30, 16, (0, 0, 0))
    draw_text(img, title, (LEFT + W - RIGHT) // 2, 12, 18, (0, 0, 0), anchor="ma")
    for i, label in enumerate(curves):  # the legend, top right
        colour = COLOURS[i % len(COLOURS)]
        y = TOP + 14 + 24 * i
        _, tw = text_size(label, 15)
        x = W - RIGHT - tw - 40
        img[y - 2:y + 2, x:x + 28] = colour
        draw_text(img, label, x + 34, y, 15, (0, 0, 0), anchor="lm")
    return img


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.plot_curve", description=__doc__)
    ap.add_argument("runs", nargs="+", metavar="RUN[=LABEL]",
                    help="run directories with curve.csv, each optionally =its legend label")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--metric", default="abs_rel",
                    choices=("abs_rel", "abs_rel_median_scaled", "median_scale"))
    ap.add_argument("--title", default="depth error on the held-out test frames")
    ap.add_argument("--ymax", type=float, default=None,
                    help="clip the value axis here (higher points sit on the top edge)")
    args = ap.parse_args(argv)
    if args.ymax is not None and not (math.isfinite(args.ymax) and args.ymax > 0):
        ap.error(f"--ymax must be a positive number, got {args.ymax}")
    curves, tables = {}, {}
    for spec in args.runs:
        run, label = spec, ""
        if not os.path.isdir(spec) and "=" in spec:  # a directory named a=b stays whole
            run, _, label = spec.rpartition("=")
        rows = read_curve(run)
        label = label or os.path.basename(os.path.normpath(run))
        if label in curves:
            ap.error(f"two runs are labelled {label!r}: give one a label with RUN=LABEL")
        curves[label] = [(float(r["minutes"]), float(r[args.metric])) for r in rows]
        tables[label] = rows
    replaced = os.path.exists(args.out)
    write_image(args.out, plot(curves, args.metric, args.title, args.ymax))
    for label, rows in tables.items():
        print(f"\n{label}\n\n| minutes | step | abs_rel metric | abs_rel median-scaled |"
              f"\n| --: | --: | --: | --: |")
        for r in rows:
            print(f"| {float(r['minutes']):.1f} | {r['step']} | {float(r['abs_rel']):.4f} | "
                  f"{float(r['abs_rel_median_scaled']):.4f} |")
    sys.stdout.flush()
    print(f"\nwrote {args.out}" + (" (replacing the file that was there)" if replaced else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... | head`: the reader is gone
        sys.exit(0)
