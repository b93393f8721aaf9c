"""Compare benchmarks between an earlier commit and this tree, in one run:

    python -m benchmarks.compare --base HEAD~1 [--rounds 3] [--build] [--keep] [-- PYTEST ARGS]
    python -m benchmarks.compare --base main -- -k "ops/ssim and cpu]" --bench-device cpu
    python -m benchmarks.compare --base-tree ../old-checkout -- -k "train-step/main-fused]"

PYTEST ARGS select and configure the cases as for `pytest benchmarks/
--benchmark-only` (default: -k "train-step/ and (reference] or fused])",
both presets' training step).

--base REV: a git worktree of REV in a temporary directory, its extension
built there (`python setup.py build_ext --inplace`, about a minute on 2
cores; when csrc/ and setup.py are the same at REV as here, this tree's
packops/_C*.so is copied instead, unless --build), removed at the end, also
on Ctrl-C. --base-tree DIR: an existing checkout with its extension built
(left as it is).

Both sides run THIS tree's benchmarks (benchmarks/) against their own
packops and packnet: the base side imports from an overlay directory of
symlinks (packops, packnet -> the base tree; benchmarks -> this tree), so the
same cases are timed the same way. Each side runs in a subprocess per round;
rounds alternate the order (base, new), (new, base), ... so drift (thermal,
other load) hits both sides alike. Prints one table: per case the median over
rounds of each side's median, and new/base. Never compare against a
remembered number.
"""
import argparse
import glob
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ARGS = ["-k", "train-step/ and (reference] or fused])"]
OVERLAY = ("packops", "packnet")  # what the base side imports from the base tree


def _git(*args, cwd=ROOT, check=True):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=check).stdout.strip()


def _same_sources(rev):
    """True when csrc/ and setup.py at rev equal this working tree's."""
    return subprocess.run(["git", "diff", "--quiet", rev, "--", "csrc", "setup.py"],
                          cwd=ROOT).returncode == 0


def make_base_tree(rev, tmp, build=False, log=print):
    """A worktree of rev under tmp with packops._C in place; returns its path."""
    tree = os.path.join(tmp, "tree")
    _git("worktree", "add", "--detach", tree, rev)
    built = glob.glob(os.path.join(ROOT, "packops", "_C*.so"))
    if not build and built and _same_sources(rev):
        for so in built:
            shutil.copy2(so, os.path.join(tree, "packops"))
        log(f"base {rev}: csrc/ and setup.py as here, copied {os.path.basename(built[0])}")
        return tree
    log(f"base {rev}: building the extension (python setup.py build_ext --inplace) ...")
    logfile = os.path.join(tmp, "build.log")
    with open(logfile, "w") as f:
        rc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree,
                            stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        with open(logfile) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"building the extension at {rev} failed (rc {rc}):\n{tail}")
    return tree


def make_overlay(base_tree, tmp):
    """A directory importing packops/packnet from base_tree and benchmarks from here."""
    overlay = os.path.join(tmp, "overlay")
    os.makedirs(overlay, exist_ok=True)
    for name in OVERLAY:
        os.symlink(os.path.join(os.path.abspath(base_tree), name), os.path.join(overlay, name))
    os.symlink(os.path.join(ROOT, "benchmarks"), os.path.join(overlay, "benchmarks"))
    return overlay


def run_side(path, args, out, log_path):
    """The runner on the tree at path (importing packops from there): {suite/id: row}, header."""
    env = dict(os.environ, PYTHONPATH=path)
    for var in ("TRITON_INTERPRET", "PACKOPS_BENCH"):
        env.pop(var, None)
    # importlib mode: pytest adds no directory of its own to sys.path, so
    # packops comes from `path` (the overlay), never from the tree the
    # symlinked benchmarks/ resolves to
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "--import-mode=importlib", "--rootdir", path, "benchmarks", "--benchmark-only",
           "--bench-out", out, *args]
    with open(log_path, "w") as f:
        rc = subprocess.run(cmd, cwd=path, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} (in {path}) failed with rc {rc}:\n{tail}")
    rows, header = {}, {}
    for path_json in sorted(glob.glob(os.path.join(out, "**", "*.json"), recursive=True)):
        with open(path_json) as f:
            data = json.load(f)
        header = data["runs"][-1]
        rows.update({f"{data['suite']}/{r['id']}": r for r in data["rows"]})
    return rows, header


def compare_table(base_runs, new_runs, base_name, new_name):
    """Markdown: per case the median over rounds of each side's median_ms."""
    keys = list(dict.fromkeys(k for run in new_runs + base_runs for k in run))
    lines = [f"| case | base {base_name} ms | new {new_name} ms | new/base | speedup |",
             "|---|--:|--:|--:|--:|"]
    for k in keys:
        b = [run[k]["median_ms"] for run in base_runs if k in run]
        n = [run[k]["median_ms"] for run in new_runs if k in run]
        bm = statistics.median(b) if b else None
        nm = statistics.median(n) if n else None
        ratio = nm / bm if bm and nm else None
        lines.append(f"| {k} | {_f(bm, '.4g')} | {_f(nm, '.4g')} | {_f(ratio, '.3f')} | "
                     f"{_f(1 / ratio if ratio else None, '.2f')}x |")
    return lines


def _f(x, spec):
    return "-" if x is None else format(x, spec)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = DEFAULT_ARGS
    if "--" in argv:
        i = argv.index("--")
        argv, bench_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--base", metavar="REV", help="git revision to compare against")
    src.add_argument("--base-tree", metavar="DIR", help="an existing checkout, extension built")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--build", action="store_true",
                    help="build the base's extension even when its sources equal this tree's")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (results, logs)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")

    # SIGTERM (a killed job) cleans up like Ctrl-C
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = tempfile.mkdtemp(prefix="packops-compare-")
    worktree = None
    try:
        if args.base_tree:
            base_tree = os.path.abspath(args.base_tree)
            base_name = (_git("rev-parse", "--short", "HEAD", cwd=base_tree, check=False)
                         or base_tree)
        else:
            base_name = _git("rev-parse", "--short", args.base)
            worktree = base_tree = make_base_tree(args.base, tmp, args.build)
        new_name = _git("rev-parse", "--short", "HEAD") + (
            "-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")
        sides = {"base": make_overlay(base_tree, tmp), "new": ROOT}
        runs = {"base": [], "new": []}
        header = {}
        for r in range(args.rounds):
            order = ("base", "new") if r % 2 == 0 else ("new", "base")
            for side in order:
                out = os.path.join(tmp, "results", f"{side}-{r}")
                print(f"round {r + 1}/{args.rounds}: {side} ...", file=sys.stderr, flush=True)
                rows, header = run_side(sides[side], bench_args, out,
                                        os.path.join(tmp, f"{side}-{r}.log"))
                runs[side].append(rows)
        print(f"# base {base_name} vs new {new_name}, {args.rounds} round(s), "
              f"{header.get('device', '?')}\n")
        print(f"cases: pytest benchmarks/ --benchmark-only {shlex.join(bench_args)}; medians over "
              "rounds of each run's median ms; new/base < 1 means the new code is faster.\n")
        print("\n".join(compare_table(runs["base"], runs["new"], base_name, new_name)))
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmarks.compare: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", worktree], cwd=ROOT,
                           capture_output=True)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
