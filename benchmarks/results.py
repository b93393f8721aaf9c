"""The one results schema and its one markdown renderer.

    python -m benchmarks.results FILE.json ...       # writes FILE.md beside each
    python -m benchmarks.results --print FILE.json   # prints the markdown

A results file, `results/<device-slug>/<suite>[-quick][-cudnn-benchmark].json`:

    {"schema": "packops-bench/1", "suite": "ops",
     "runs": [{"device", "gpu" or "cores", "cuda", "cudnn", "torch", "triton", "git",
               "date", "timer", "backends", "quick", "copy_bandwidth_gbps", "note"}],
     "rows": [{"run": 0, "id", "group", "provider", "params": {...},
               "median_ms", "q1_ms", "q3_ms", "rounds", "metrics": {...}}],
     "skipped": [{"run": 0, "id", "group", "provider", "params", "reason"}]}

`runs` are the sessions whose rows the file holds (one, unless a session
merged its rows into an earlier file: `--bench-merge`); each row names its
run. Times are in ms. Rows timed before pytest-benchmark was the timer
(converted once, numbers unchanged) have `p20_ms`/`p80_ms` and `reps`
instead of `q1_ms`/`q3_ms` and `rounds`; their run's `timer` says how they
were timed. No torch needed: results render anywhere.
"""
import argparse
import json
import os
import sys

from . import breakdown

SCHEMA = "packops-bench/1"

_OP_COLUMNS = [("gbps", "GB/s", ".1f"), ("pct_copy_bw", "% copy bw", ".0f", "%"),
               ("peak_mem_mb", "peak MB", ".1f"), ("max_err", "max rel err", ".1e")]
# per suite: "base" providers the ratio column compares with (the first one a
# group has), "inverse" for this/base instead of base/this, the metric
# columns (key, label, format[, suffix]) and "table": a dict metric with a
# table of its own
SUITES = {
    "copy": {"columns": [("gbps", "GB/s", ".1f")]},
    "ops": {"base": ("reference",), "columns": _OP_COLUMNS},
    "pack": {"base": ("reference",), "columns": _OP_COLUMNS},
    "pack-layer": {"base": ("reference",), "columns": _OP_COLUMNS},
    "pack-routes": {"base": ("reference",), "columns": [
        ("peak_mem_mb", "peak MB", ".0f"), ("held_mb", "held MB", ".0f"),
        ("rel_err", "rel err (float64)", ".1e")]},
    "overhead": {"base": ("native",), "inverse": True, "columns": []},
    "monodepth2": {"base": ("monodepth2", "grid_sample"), "columns": [
        ("peak_mem_mb", "peak MB", ".0f")]},
    "train-step": {"base": ("reference",), "table": "breakdown_pct", "columns": [
        ("images_per_s", "images/s", ".2f"), ("peak_mem_mb", "peak MB", ".0f"),
        ("first_call_s", "first call s", ".1f"), ("launches_per_step", "launches", ".0f"),
        ("syncs_per_step", "syncs", ".0f"), ("gpu_busy_pct", "GPU busy %", ".0f"),
        ("tflops", "TFLOP/s", ".1f"), ("pct_peak", "% peak", ".1f")]},
    "data": {"columns": [("frames_per_s", "frames/s", ".2f"), ("peak_mem_mb", "peak MB", ".1f")]},
}
_LEGEND = {
    "overhead": "x native: this median / the native baseline's median (lower is better).",
    "train-step": "launches, syncs: per step, host calls that launch a kernel or graph and that "
                  "wait for the device; GPU busy: the union of kernel and copy time over the "
                  "step's wall time; TFLOP/s: the preset's model FLOPs "
                  "(torch.utils.flop_counter, reference ops) / median step, % of the device's "
                  "dense peak (benchmarks/breakdown.py). CUDA only.",
}


def row(case, stats, metrics):
    """A results row from a case and pytest-benchmark's stats (seconds)."""
    return {"id": case.id, "group": case.group, "provider": case.provider,
            "params": dict(case.params), "median_ms": stats.median * 1e3,
            "q1_ms": stats.q1 * 1e3, "q3_ms": stats.q3 * 1e3, "rounds": stats.rounds,
            "metrics": metrics}


def stem(out, device_slug, suite, quick=False, cudnn_benchmark=False):
    """<out>/<device-slug>/<suite>[-quick][-cudnn-benchmark]: quick runs never
    overwrite real results."""
    return os.path.join(out, device_slug, suite + ("-quick" if quick else "")
                        + ("-cudnn-benchmark" if cudnn_benchmark else ""))


def load(path):
    with open(path) as f:
        data = json.load(f)
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a {SCHEMA} results file")
    return data


def save(path_stem, suite, run, rows, skipped, base=None):
    """Write <stem>.json and .md: this session's rows and skips under run
    header `run`, after the rows and skips of `base` (an earlier file's data)
    that this session did not measure again. Returns the data."""
    data = {"schema": SCHEMA, "suite": suite, "runs": [], "rows": [], "skipped": []}
    if base is not None:
        again = {r["id"] for r in rows} | {s["id"] for s in skipped}
        keep = [r for r in base["rows"] if r["id"] not in again]
        keep_skipped = [s for s in base["skipped"] if s["id"] not in again]
        used = sorted({r["run"] for r in keep + keep_skipped})
        new_index = {old: i for i, old in enumerate(used)}
        data["runs"] = [base["runs"][i] for i in used]
        data["rows"] = [dict(r, run=new_index[r["run"]]) for r in keep]
        data["skipped"] = [dict(s, run=new_index[s["run"]]) for s in keep_skipped]
    n = len(data["runs"])
    data["runs"].append(run)
    data["rows"] += [dict(r, run=n) for r in rows]
    data["skipped"] += [dict(s, run=n) for s in skipped]
    os.makedirs(os.path.dirname(path_stem) or ".", exist_ok=True)
    with open(path_stem + ".json", "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")
    with open(path_stem + ".md", "w") as f:
        f.write(render(data))
    return data


# ----------------------------------------------------------------- render
def _fmt(x, spec, suffix=""):
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (list, tuple)):
        return "x".join(map(str, x))
    if isinstance(x, (int, float)) and spec:
        return format(x, spec) + suffix
    return str(x)


def _header(run):
    lines = []
    for key, value in run.items():
        if key == "quick":
            continue  # said in bold below when set
        if key == "backends":
            value = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in value.items())
        elif key == "copy_bandwidth_gbps":
            key, value = "copy bandwidth", f"{value} GB/s (dst.copy_(src), read + write)"
        lines.append(f"- {key}: {value}")
    if run.get("quick"):
        lines.append("- **quick run: tiny shapes; a smoke test, not a measurement**")
    return lines


def render(data):
    """The markdown of a results file: header(s), one table, skips, and the
    suite's extra table and sections."""
    suite, runs = data["suite"], data["runs"]
    spec = SUITES.get(suite, {})
    rows = data["rows"]
    lines = [f"# packops benchmarks, {suite}: {runs[-1]['device'] if runs else '?'}", ""]
    for i, run in enumerate(runs):
        if len(runs) > 1:
            lines += ["", f"Run {i}:"]
        lines += _header(run)
    params = list(dict.fromkeys(k for r in rows for k in r["params"]))
    base = {}  # group -> its row of the first base provider (in spec["base"] order) it has
    for name in reversed(spec.get("base", ())):
        base.update({r["group"]: r for r in rows if r["provider"] == name})
    ratio_label = ("x " + spec["base"][0]) if spec.get("inverse") else "speedup"
    columns = spec.get("columns", [])
    described = params + ["provider"] + (["run"] if len(runs) > 1 else [])
    measured = ["median ms", "spread ms"] + ([ratio_label] if spec.get("base") else []) + \
        [c[1] for c in columns]
    body = []
    legacy = False
    for r in rows:
        lo, hi = r.get("q1_ms", r.get("p20_ms")), r.get("q3_ms", r.get("p80_ms"))
        legacy |= "p20_ms" in r
        cells = [_fmt(r["params"].get(k), "") for k in params] + [r["provider"]]
        cells += [str(r["run"])] if len(runs) > 1 else []
        cells += [_fmt(r["median_ms"], ".4g"),
                  "-" if lo is None else f"{lo:.4g}/{hi:.4g}"]
        if spec.get("base"):
            b = base.get(r["group"])
            ratio = None if b is None else (r["median_ms"] / b["median_ms"] if spec.get("inverse")
                                            else b["median_ms"] / r["median_ms"])
            cells.append(_fmt(ratio, ".2f", "x"))
        m = r.get("metrics") or {}
        cells += [_fmt(m.get(c[0]), c[2], c[3] if len(c) > 3 else "") for c in columns]
        body.append(cells)
    lines += [""] + _markdown_table(described + measured,
                                    [False] * len(described) + [True] * len(measured), body)
    if legacy:
        lines.append("")
        lines.append("spread: q1/q3 of pytest-benchmark's rounds; p20/p80 for rows timed by "
                     "the earlier harness (see the run's timer).")
    if suite in _LEGEND:
        lines += ["", _LEGEND[suite]]
    lines += _breakdown_table(spec, rows)
    reasons = sorted({(s["provider"], s["reason"]) for s in data.get("skipped", [])})
    if reasons:
        lines += ["", "Skipped:"] + [f"- {p}: {why}" for p, why in reasons]
    for r in rows:
        top = (r.get("metrics") or {}).get("top_kernels")
        if top:
            lines += ["", f"### {r['id']}: top kernels (ms per call)", ""]
            lines += [f"- {ms:.3f} {name[:110]}" for name, ms in top]
    return "\n".join(lines) + "\n"


def _markdown_table(head, numeric, body):
    return (["| " + " | ".join(head) + " |",
             "|" + "|".join("--:" if n else "---" for n in numeric) + "|"]
            + ["| " + " | ".join(cells) + " |" for cells in body])


def _breakdown_table(spec, rows):
    key = spec.get("table")
    rs = [r for r in rows if (r.get("metrics") or {}).get(key)]
    if not key or not rs:
        return []
    cats = [c for c in breakdown.CATEGORIES + ("idle",)
            if any(c in r["metrics"][key] for r in rs)]
    head = ["case", "provider"] + [f"{breakdown.LABELS[c]} %" for c in cats]
    body = [[r["group"], r["provider"]] + [_fmt(r["metrics"][key].get(c), ".1f") for c in cats]
            for r in rs]
    return (["", "Breakdown (% of the profiled step; benchmarks/breakdown.py):", ""]
            + _markdown_table(head, [False, False] + [True] * len(cats), body))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.results", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", metavar="FILE.json")
    ap.add_argument("--print", action="store_true", help="print the markdown instead of writing it")
    args = ap.parse_args(argv)
    for path in args.files:
        md = render(load(path))
        if args.print:
            sys.stdout.write(md)
        else:
            with open(os.path.splitext(path)[0] + ".md", "w") as f:
                f.write(md)
            print(f"wrote {os.path.splitext(path)[0]}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
