"""Run the benchmarks and write the report.

    python -m benchmarks.report [--device cpu|cuda] [--suite ops pack ...] [--ops photometric]
                                [--providers reference cpu] [--quick] [--merge]
                                [--out benchmarks/results] [--selftest]

The cases come from benchmarks/cases.py, the list pytest-benchmark runs too.
Writes <out>/<device-slug>/<suite>.json and .md for every suite it ran
(<suite>-quick.* for --quick, so a smoke test never overwrites real results)
and prints the markdown.
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

import torch

import packops

from . import cases, harness

DEFAULT_OUT = os.path.join("benchmarks", "results")
OP_SUITES = ("ops", "pack", "pack-layer")
DEFAULT_SUITES = tuple(s for s in cases.SUITES if s != "train-step")


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        if m:
            return m.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def slug(name):
    # "NVIDIA H100 80GB HBM3" -> "h100-80gb-hbm3"; "AMD EPYC 7B13" -> "amd-epyc-7b13"
    name = re.sub(r"^nvidia\s+", "", name.strip(), flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def measured_tree():
    """The source tree whose packops is imported (the code being measured;
    under benchmarks.compare, not necessarily the tree of this file)."""
    return os.path.dirname(os.path.dirname(os.path.realpath(packops.__file__)))


def git_revision(tree=None):
    """Short HEAD of the measured tree, plus "-dirty" when tracked files differ
    from it (untracked files, like results just written, do not count: as in
    `git describe --dirty`)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=tree or measured_tree(), capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
    try:
        rev = git("rev-parse", "--short", "HEAD")
        return rev + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def triton_version():
    try:
        import triton
        return triton.__version__
    except ImportError:
        return "not installed"


def results_stem(out, device, suite, quick):
    """<out>/<device-slug>/<suite>[-quick]: the one results layout."""
    return os.path.join(out, slug(device_name(torch.device(device))),
                        suite + ("-quick" if quick else ""))


def header(device, copy_gbps, quick):
    h = {"device": device_name(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        h["gpu"] = f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB"
        h["cuda"] = torch.version.cuda
    else:
        h["cores"] = f"{os.cpu_count()} logical, torch uses {torch.get_num_threads()} threads"
    h.update({
        "torch": torch.__version__, "triton": triton_version(), "git": git_revision(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    })
    if copy_gbps is not None:
        h["copy_bandwidth_gbps"] = round(copy_gbps, 1)
    h.update({"backends": {k: v.available for k, v in packops.backends().items()},
              "quick": quick})
    return h


def _fmt(x, spec, unit=""):
    return "-" if x is None else format(x, spec) + unit


def op_table(rows):
    lines = ["| op | shape | dtype | mode | provider | median ms | p20/p80 ms | speedup "
             "| GB/s | % copy bw | peak MB | max rel err |",
             "|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(
            f"| {r['op']} | {'x'.join(map(str, r['shape']))} | {r['dtype']} | {r['mode']} "
            f"| {r['provider']} | {r['median_ms']:.4g} | {r['p20_ms']:.4g}/{r['p80_ms']:.4g} "
            f"| {_fmt(r.get('speedup'), '.2f', 'x')} | {_fmt(r.get('gbps'), '.1f')} "
            f"| {_fmt(r.get('pct_copy_bw'), '.0f', '%')} "
            f"| {r['peak_mem_mb']:.1f} | {_fmt(r.get('max_err'), '.1e')} |")
    return lines


def _table(suite):
    """The markdown table writer of a suite: op suites share one; others are
    their module's `table(rows)`."""
    if suite in OP_SUITES:
        return op_table
    for module in cases.modules().values():
        if getattr(module, "SUITE", None) == suite:
            return module.table
    raise KeyError(f"no table for suite {suite!r}")


def markdown(suite, head, rows, skipped):
    lines = [f"# packops benchmarks, {suite}: {head['device']}", ""]
    for key, value in head.items():
        if key == "backends":
            value = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in value.items())
        elif key == "quick":
            continue  # said in bold below when set
        elif key == "copy_bandwidth_gbps":
            key, value = "copy bandwidth", f"{value} GB/s (dst.copy_(src), read + write)"
        lines.append(f"- {key}: {value}")
    if head["quick"]:
        lines.append("- **quick run: tiny shapes, 1-2 reps; a smoke test, not a measurement**")
    lines += [""] + _table(suite)(rows)
    # Skips are the same for every case of a provider, mostly: list each reason once.
    reasons = sorted({(p, why) for s in skipped for p, why in s["skipped"].items()})
    if reasons:
        lines += ["", "Skipped providers:"] + [f"- {p}: {why}" for p, why in reasons]
    return "\n".join(lines) + "\n"


def _name(row):
    """What --merge keeps rows by: the op, the training preset or the 'what'."""
    return row.get("op") or row.get("preset") or row.get("what")


def _speedups(rows):
    ref = {r["group"]: r["median_ms"] for r in rows if r.get("provider") == "reference" and "group" in r}
    for r in rows:
        if "group" in r:
            r["speedup"] = ref[r["group"]] / r["median_ms"] if r["group"] in ref else None


class Progress:
    """tqdm when importable, else one line per step on stderr."""

    def __init__(self, total):
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, unit="run", dynamic_ncols=True)
        except ImportError:
            self._bar = None
        self._total, self._n = total, 0

    def update(self, what):
        self._n += 1
        if self._bar is not None:
            self._bar.set_description(what)
            self._bar.update(1)
        else:
            print(f"[{self._n}/{self._total}] {what}", file=sys.stderr, flush=True)

    def write(self, msg):
        (self._bar.write if self._bar is not None else lambda m: print(m, file=sys.stderr))(msg)

    def close(self):
        if self._bar is not None:
            self._bar.close()


def run(device=None, suites=None, ops=None, providers=None, quick=False, out=DEFAULT_OUT,
        merge=False, warmup=None, reps=None, copy_bw=True, show=True):
    """Run the selected items of benchmarks.cases; write and print one report per suite.

    Returns 0. Raises ValueError when nothing matches the selection.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is visible")
        device = torch.device("cuda", torch.cuda.current_device())
    files, names = cases.known_names()
    unknown = set(ops or ()) - set(files) - set(names)
    if unknown:
        raise ValueError(f"--ops: unknown {sorted(unknown)}; bench files: {files}, ops and "
                         f"presets: {names}")
    items = cases.items(device, quick=quick, suites=suites, ops=ops, providers=providers)
    if not items:
        raise ValueError(f"nothing matches suites {suites or 'all'}, ops {ops or 'all'}, providers "
                         f"{providers or 'all'}{' (--quick)' if quick else ''}; bench files: "
                         f"{files}, ops and presets: {names}")
    if quick:
        warmup, reps = (1 if warmup is None else warmup), (2 if reps is None else reps)
    copy_gbps = None
    if copy_bw and any(i.suite in OP_SUITES for i in items):
        print(f"measuring copy bandwidth on {device_name(device)} ...", file=sys.stderr)
        copy_gbps = harness.copy_bandwidth(device, reps=3 if quick else None)
    head = header(device, copy_gbps, quick)
    progress = Progress(len(items))
    state = {}  # suite -> (stem, kept rows, kept skipped, rows, skipped)
    for item in items:
        if item.suite not in state:
            stem = results_stem(out, device, item.suite, quick)
            os.makedirs(os.path.dirname(stem), exist_ok=True)
            run_names = {i.op for i in items if i.suite == item.suite}
            kept_rows, kept_skipped = [], []
            # --merge keeps the rows of ops this run does not measure, so several
            # runs (one per device-machine call, say) build up one results file.
            if merge and os.path.exists(stem + ".json"):
                with open(stem + ".json") as f:
                    old = json.load(f)
                kept_rows = [r for r in old["rows"] if _name(r) not in run_names]
                kept_skipped = [r for r in old.get("skipped", []) if _name(r) not in run_names]
            state[item.suite] = (stem, kept_rows, kept_skipped, [], [])
        stem, kept_rows, kept_skipped, rows, skipped = state[item.suite]
        progress.update(f"{item.suite} {item.id}")
        why, run_ = None, None
        try:
            run_ = item.prepare(device, copy_gbps=copy_gbps)
            row = harness.measure(run_, device, warmup, reps)
        except harness.Skip as exc:
            why = str(exc)
        except Exception as exc:  # noqa: BLE001 - report it, keep benchmarking the rest
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            progress.write(f"  {item.id} failed: {why}")
        finally:
            if run_ is not None and run_.close is not None:
                run_.close()
            del run_
        if why is None:
            rows.append({"id": item.id, "group": item.group, "suite": item.suite,
                         **item.params(), "provider": item.provider, **row})
            _speedups(rows)
        else:
            entry = next((s for s in skipped if s["group"] == item.group), None)
            if entry is None:
                entry = {"group": item.group, **item.params(), "skipped": {}}
                skipped.append(entry)
            entry["skipped"][item.provider] = why
        # written after every item: a run cut short keeps what it measured
        all_rows, all_skipped = kept_rows + rows, kept_skipped + skipped
        with open(stem + ".json", "w") as f:
            json.dump({"suite": item.suite, "header": head, "rows": all_rows,
                       "skipped": all_skipped}, f, indent=1)
        with open(stem + ".md", "w") as f:
            f.write(markdown(item.suite, head, all_rows, all_skipped))
    progress.close()
    for suite, (stem, kept_rows, kept_skipped, rows, skipped) in state.items():
        if show:
            print(markdown(suite, head, kept_rows + rows, kept_skipped + skipped))
        print(f"wrote {stem}.json and {stem}.md", file=sys.stderr)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"),
                    help="default: cuda when available, else cpu")
    ap.add_argument("--suite", nargs="+", choices=cases.SUITES + ("all",), metavar="NAME",
                    help=f"suites to run, of {', '.join(cases.SUITES)} or all; default: "
                         f"{' '.join(DEFAULT_SUITES)} (the training step: --suite train-step, "
                         "or python -m benchmarks.train_step)")
    ap.add_argument("--ops", nargs="+", metavar="NAME",
                    help="bench files (photometric), op names (ssim) or training presets "
                         "(main); default: all of the suites")
    ap.add_argument("--providers", nargs="+", metavar="NAME",
                    help="only these providers (reference compile cpu triton cuda, "
                         "fused fused+compile, 1-thread); default: all")
    ap.add_argument("--quick", action="store_true",
                    help="tiny shapes and 1-2 reps: a smoke test that runs in seconds")
    ap.add_argument("--reps", type=int, default=None,
                    help="timed reps per case (default: adaptive, ~1.5 s on CPU, at least 5)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--out", default=DEFAULT_OUT,
                    help="results root: files go to OUT/<device-slug>/<suite>.md and .json")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of other ops already in the output files")
    ap.add_argument("--selftest", action="store_true",
                    help="check the timer, the peak-memory accounting and copy bandwidth")
    args = ap.parse_args(argv)

    if args.selftest:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        ok, lines = harness.selftest(device)
        print(f"harness self-test on {device_name(device)} ({device.type}):")
        print("\n".join(lines))
        return 0 if ok else 1
    suites = args.suite or list(DEFAULT_SUITES)
    if "all" in suites:
        suites = list(cases.SUITES)
    try:
        return run(device=args.device, suites=suites, ops=args.ops, providers=args.providers,
                   quick=args.quick, out=args.out, merge=args.merge, warmup=args.warmup,
                   reps=args.reps)
    except ValueError as exc:
        ap.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
