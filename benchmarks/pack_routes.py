"""pack_conv's routes side by side, per layer and dtype: what packops.pack's
automatic route choice (route_for) is set from.

    python -m benchmarks.pack_routes [--device cuda|cpu] [--layers pack1 ...]
        [--dtypes float32 bfloat16] [--routes NAME ...] [--profile] [--cudnn-benchmark] [--quick] [--out DIR]

Routes (packops.pack.ROUTES, on the fused backend auto picks for the device):
  direct     the pack3d kernel, then conv2d; the d*r*r*C-channel tensor v is
             kept for the backward
  recompute  the same, keeping only the inputs; v is made again in backward
  folded     one conv over space_to_depth(x) with folded weights plus exact
             border terms; v never exists
and the reference (PackNet's ops: space-to-depth, Conv3d, Conv2d).

Layers: PackNet01's five packing layers for a 192x640 image, batch 4 on a
GPU (1 on the CPU): pack1 64 ch at 192x640 k=5, pack2 64 at 96x320,
pack3 128 at 48x160, pack4 256 at 24x80, pack5 512 at 12x40 (k=3), d = 8.
float32 runs under torch's default cuDNN setting (TF32 convolutions on a GPU
that has them), as in training.

Columns: median ms (fwd; fwd+bwd), peak MB of a fwd+bwd above the inputs,
and held MB: what the forward leaves allocated for the backward (its
activation memory, output included). --profile adds, for pack1 float32, the
ten kernels with the most device time in a fwd+bwd of each route.
Writes <out>/<device-slug>/pack-routes.json and .md.
"""
import argparse
import json
import os
import sys
import time

import torch

import packops

from . import harness, report

D = 8
# name: (C, H, W, k) of the layer's input at 192x640
LAYERS = {"pack1": (64, 192, 640, 5), "pack2": (64, 96, 320, 3), "pack3": (128, 48, 160, 3),
          "pack4": (256, 24, 80, 3), "pack5": (512, 12, 40, 3)}
QUICK = {"pack-quick": (8, 16, 24, 3)}
ROUTES = ("reference",) + packops.pack.ROUTES


def make_inputs(C, H, W, k, B, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    cin = D * 4 * C
    shapes = [((B, C, H, W), 1.0), ((D, 1, 3, 3, 3), 0.3), ((D,), 0.1),
              ((C, cin, k, k), (1.0 / (cin * k * k)) ** 0.5), ((C,), 0.1)]
    return [(torch.randn(s, generator=g) * a).to(device, dtype).requires_grad_()
            for s, a in shapes]


def route_fn(route, backend):
    """() -> pack_conv on that route (the reference: pack_conv_reference)."""
    def run(*args):
        if route == "reference":
            return packops.pack_conv_reference(*args)
        old = packops.pack.ROUTE
        packops.pack.ROUTE = route
        try:
            with packops.use_backend(backend):
                return packops.pack_conv(*args)
        finally:
            packops.pack.ROUTE = old
    return run


def held_bytes(fn, args, device):
    """Bytes the forward leaves allocated (saved tensors and output), CUDA only."""
    if device.type != "cuda":
        return None
    harness._sync(device)
    before = torch.cuda.memory_allocated(device)
    out = fn(*args)
    harness._sync(device)
    held = torch.cuda.memory_allocated(device) - before
    del out
    return held


def measure(name, shape, dtype, route, backend, B, device):
    C, H, W, k = shape
    args = make_inputs(C, H, W, k, B, dtype, device)
    fn = route_fn(route, backend)
    grad = torch.randn(B, C, H // 2, W // 2, device=device, dtype=dtype)

    def fwd():
        with torch.no_grad():
            return fn(*args)

    def fwd_bwd():
        return torch.autograd.grad(fn(*args), args, grad)

    row = {"layer": name, "shape": f"{B}x{C}x{H}x{W}", "k": k, "dtype": str(dtype)[6:],
           "route": route}
    try:
        row["fwd_ms"] = harness.time_fn(fwd, device=device, target_s=0.3)["median"]
        row["fwd_bwd_ms"] = harness.time_fn(fwd_bwd, device=device, target_s=0.3)["median"]
        row["peak_mb"] = harness.peak_memory(fwd_bwd, device) / 1e6
        held = held_bytes(fn, args, device)
        row["held_mb"] = None if held is None else held / 1e6
        if device.type == "cpu":  # the route against the float64 reference
            exact = [a.detach().double() for a in args]
            ref = packops.pack_conv_reference(*exact)
            row["rel_err"] = float((fn(*exact) - ref).norm() / ref.norm())
    except torch.OutOfMemoryError:
        row["error"] = "out of memory"
    finally:
        del args, grad
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def profile_routes(shape, dtype, backend, B, device, top=12):
    """{route: torch.profiler's table of the top ops/kernels over 3 fwd+bwd}."""
    from torch.profiler import ProfilerActivity, profile
    C, H, W, k = shape
    out = {}
    for route in ROUTES:
        args = make_inputs(C, H, W, k, B, dtype, device)
        fn = route_fn(route, backend)
        for _ in range(2):
            torch.autograd.grad(fn(*args).sum(), args)
        harness._sync(device)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                torch.autograd.grad(fn(*args).sum(), args)
            harness._sync(device)
        events = prof.key_averages()
        sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        out[route] = events.table(sort_by=sort, row_limit=top)
        del args
    return out


def table(rows):
    lines = ["| layer | shape | k | dtype | route | fwd ms | fwd+bwd ms | vs reference fwd / fwd+bwd "
             "| peak MB | held MB |", "|---|---|--:|---|---|--:|--:|--:|--:|--:|"]
    ref = {(r["layer"], r["dtype"]): r for r in rows if r["route"] == "reference"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['layer']} | {r['shape']} | {r['k']} | {r['dtype']} | {r['route']} "
                         f"| {r['error']} | | | | |")
            continue
        b = ref.get((r["layer"], r["dtype"]), {})
        sp = (f"{b['fwd_ms'] / r['fwd_ms']:.2f}x / {b['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}x"
              if "fwd_ms" in b else "-")
        held = "-" if r.get("held_mb") is None else f"{r['held_mb']:.0f}"
        lines.append(f"| {r['layer']} | {r['shape']} | {r['k']} | {r['dtype']} | {r['route']} | "
                     f"{r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | {sp} | {r['peak_mb']:.0f} | "
                     f"{held} |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pack_routes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"))
    ap.add_argument("--layers", nargs="+", choices=list(LAYERS), metavar="NAME")
    ap.add_argument("--dtypes", nargs="+", default=None, choices=("float32", "bfloat16"))
    ap.add_argument("--routes", nargs="+", choices=ROUTES, metavar="NAME",
                    help=f"default: all of {' '.join(ROUTES)}")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark = True (results file pack-routes-cudnn-benchmark.*)")
    ap.add_argument("--quick", action="store_true", help="one tiny layer: a smoke test")
    ap.add_argument("--out", default=report.DEFAULT_OUT)
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    backend = packops._dispatch.resolve("pack_conv", torch.empty(0, device=device))
    layers = QUICK if args.quick else {n: LAYERS[n] for n in (args.layers or LAYERS)}
    dtypes = args.dtypes or (["float32", "bfloat16"] if device.type == "cuda" else ["float32"])
    B = 1 if args.quick or device.type == "cpu" else 4
    rows = []
    t0 = time.time()
    for name, shape in layers.items():
        for dt in dtypes:
            for route in args.routes or ROUTES:
                row = measure(name, shape, getattr(torch, dt), route, backend, B, device)
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"device": report.device_name(device), "backend": backend,
              "torch": torch.__version__, "git": report.git_revision(),
              "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
              "cudnn_benchmark": torch.backends.cudnn.benchmark, "rows": rows}
    if args.profile:
        name = next(iter(layers))
        result["profile"] = {"layer": name, "dtype": "float32",
                             "kernels": profile_routes(layers[name], torch.float32, backend, B,
                                                       device)}
    lines = [f"# pack_conv routes: {result['device']}", "",
             f"- backend {backend}, torch {torch.__version__}, git {result['git']}, "
             f"cudnn.allow_tf32 {result['cudnn_allow_tf32']}, "
             f"cudnn.benchmark {result['cudnn_benchmark']}",
             f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.time() - t0:.0f} s",
             "", *table(rows)]
    for route, tab in (result.get("profile") or {}).get("kernels", {}).items():
        lines += ["", f"### {result['profile']['layer']} float32, 3 x fwd+bwd, {route}", "",
                  "```", tab.rstrip(), "```"]
    out_dir = os.path.join(args.out, report.slug(result["device"]))
    os.makedirs(out_dir, exist_ok=True)
    suffix = ("-quick" if args.quick else "") + ("-cudnn-benchmark" if args.cudnn_benchmark else "")
    with open(os.path.join(out_dir, f"pack-routes{suffix}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out_dir, f"pack-routes{suffix}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
