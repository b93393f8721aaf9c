"""Runs every CUDA and Triton kernel once, forward and backward, on small
awkward shapes and every dtype, for compute-sanitizer:

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python -m tools.sanitize
    compute-sanitizer --tool racecheck python -m tools.sanitize cuda

(no caching allocator, so an out-of-bounds access leaves its allocation).
Arguments: the backends to run (default: cuda triton); --device (default
cuda; cpu runs the drivers on CPU tensors, e.g. with the reference or cpu
backend, to check the drivers themselves). SANITIZE_OPS=a,b runs only the
drivers whose names contain one of those words.

The drivers are the modules of this package, found by glob: one file per op
family (photometric.py, reproject.py, pack.py), each with
`run(backend, dtype, device)`. A new op adds a file here, nothing else.
"""
import argparse
import glob
import importlib
import os
import sys

import torch

import packops

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_HERE = os.path.dirname(os.path.abspath(__file__))


def drivers(only=None):
    """{name: run} of every driver module here (tools/sanitize/<name>.py), sorted;
    only: keep the names containing one of these words (SANITIZE_OPS)."""
    names = sorted(os.path.splitext(os.path.basename(p))[0]
                   for p in glob.glob(os.path.join(_HERE, "*.py")))
    names = [n for n in names if not n.startswith("_")]
    if only:
        names = [n for n in names if any(w in n for w in only)]
    return {n: importlib.import_module(f"{__name__}.{n}").run for n in names}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.sanitize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("backends", nargs="*", default=["cuda", "triton"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", nargs="+", choices=[str(d)[6:] for d in DTYPES],
                    help="default: all of " + " ".join(str(d)[6:] for d in DTYPES))
    args = ap.parse_args(argv)
    only = [w for w in os.environ.get("SANITIZE_OPS", "").split(",") if w]
    found = drivers(only)
    if not found:
        ap.error(f"no driver matches SANITIZE_OPS={','.join(only)}; drivers: {sorted(drivers())}")
    dtypes = [getattr(torch, d) for d in args.dtypes] if args.dtypes else DTYPES
    device = torch.device(args.device)
    for backend in args.backends:
        for name, run in found.items():
            for dtype in dtypes:
                if dtype not in packops._dispatch.DTYPES[backend]:
                    print(f"skip {backend} {name} {dtype}: not served", flush=True)
                    continue
                run(backend, dtype, device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                print(f"ok {backend} {name} {dtype}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
