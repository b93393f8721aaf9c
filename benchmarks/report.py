"""Run the benchmarks and write the report.

    python -m benchmarks.report [--device cpu|cuda] [--ops photometric] [--quick]
                                [--out benchmarks/results] [--selftest]

Writes <out>/<device-slug>.json and .md (<device-slug>-quick.* for --quick,
so a smoke test never overwrites real results) and prints the markdown.
"""
import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import re
import subprocess
import sys

import torch

import packops

from . import harness

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_modules():
    """{"photometric": module} for every benchmarks/bench_*.py."""
    here = os.path.dirname(os.path.abspath(__file__))
    return {m.name[len("bench_"):]: importlib.import_module(f"{__package__}.{m.name}")
            for m in pkgutil.iter_modules([here]) if m.name.startswith("bench_")}


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


def git_revision():
    """Short HEAD, plus "-dirty" when tracked files differ from it (untracked
    files, like results just written, do not count: as in `git describe --dirty`)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
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
        "copy_bandwidth_gbps": round(copy_gbps, 1),
        "backends": {k: v.available for k, v in packops.backends().items()},
        "quick": quick,
    })
    return h


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def markdown(head, rows, skipped):
    lines = [f"# packops benchmarks: {head['device']}", ""]
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
    lines += ["", "| op | shape | dtype | mode | provider | median ms | p20/p80 ms | speedup "
                  "| GB/s | % copy bw | peak MB | max rel err |",
              "|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(
            f"| {r['op']} | {'x'.join(map(str, r['shape']))} | {r['dtype']} | {r['mode']} "
            f"| {r['provider']} | {r['median_ms']:.4g} | {r['p20_ms']:.4g}/{r['p80_ms']:.4g} "
            f"| {_fmt(r['speedup'], '.2f')}x | {r['gbps']:.1f} | {_fmt(r['pct_copy_bw'], '.0f')}% "
            f"| {r['peak_mem_mb']:.1f} | {_fmt(r['max_err'], '.1e')} |")
    # Skips are the same for every case of a provider, mostly: list each reason once.
    reasons = sorted({(p, why) for s in skipped for p, why in s["skipped"].items()})
    if reasons:
        lines += ["", "Skipped providers:"] + [f"- {p}: {why}" for p, why in reasons]
    return "\n".join(lines) + "\n"


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


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"),
                    help="default: cuda when available, else cpu")
    ap.add_argument("--ops", nargs="+", metavar="NAME",
                    help="bench files (photometric) or op names (ssim); default: all")
    ap.add_argument("--quick", action="store_true",
                    help="tiny shapes and 1-2 reps: a smoke test that runs in seconds")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of other ops already in the output file")
    ap.add_argument("--selftest", action="store_true",
                    help="check the timer, the peak-memory accounting and copy bandwidth")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA device is visible")
        device = torch.device("cuda", torch.cuda.current_device())

    if args.selftest:
        ok, lines = harness.selftest(device)
        print(f"harness self-test on {device_name(device)} ({device.type}):")
        print("\n".join(lines))
        return 0 if ok else 1

    modules = bench_modules()
    wanted = set(args.ops or ())
    all_cases = []
    for name, module in sorted(modules.items()):
        if wanted and name not in wanted and not wanted & set(module.OPS):
            continue
        ops = module.OPS if not wanted or name in wanted else [o for o in module.OPS if o in wanted]
        all_cases += module.cases(device, quick=args.quick, ops=ops)
    unknown = wanted - set(modules) - {o for m in modules.values() for o in m.OPS}
    if unknown or not all_cases:
        ap.error(f"--ops: nothing matches {sorted(unknown or wanted)}; bench files: "
                 f"{sorted(modules)}, ops: {sorted(o for m in modules.values() for o in m.OPS)}")

    warmup, reps = (1, 2) if args.quick else (None, None)
    print(f"measuring copy bandwidth on {device_name(device)} ...", file=sys.stderr)
    copy_gbps = harness.copy_bandwidth(device, reps=3 if args.quick else None)
    progress = Progress(len(all_cases) * len(harness.PROVIDERS))
    head = header(device, copy_gbps, args.quick)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, slug(head["device"]) + ("-quick" if args.quick else ""))
    # --merge keeps the rows of ops this run does not measure, so several
    # runs (one per device-machine call, say) build up one results file.
    run_ops = {case.op for case in all_cases}
    kept_rows, kept_skipped = [], []
    if args.merge and os.path.exists(stem + ".json"):
        with open(stem + ".json") as f:
            old = json.load(f)
        kept_rows = [r for r in old["rows"] if r["op"] not in run_ops]
        kept_skipped = [r for r in old["skipped"] if r["op"] not in run_ops]
    rows, skipped = [], []
    for case in all_cases:
        case_rows, case_skipped = harness.run_case(case, device, progress, warmup=warmup,
                                                   reps=reps, copy_gbps=copy_gbps)
        rows += case_rows
        skipped.append({"op": case.op, "shape": list(case.shape),
                        "dtype": str(case.dtype).replace("torch.", ""), "mode": case.mode,
                        "skipped": case_skipped})
        # written after every case: a run cut short keeps what it measured
        text = markdown(head, kept_rows + rows, kept_skipped + skipped)
        with open(stem + ".json", "w") as f:
            json.dump({"header": head, "rows": kept_rows + rows,
                       "skipped": kept_skipped + skipped}, f, indent=1)
        with open(stem + ".md", "w") as f:
            f.write(text)
    progress.close()
    print(text)
    print(f"wrote {stem}.json and {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
