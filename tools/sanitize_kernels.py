"""Runs every CUDA and Triton kernel once, forward and backward, on small
awkward shapes and every dtype, for compute-sanitizer:

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python tools/sanitize_kernels.py
    compute-sanitizer --tool racecheck python tools/sanitize_kernels.py cuda

(no caching allocator, so an out-of-bounds access leaves its allocation).
Arguments: the backends to run (default: cuda triton). SANITIZE_OPS=a,b runs
only the drivers whose names contain one of those words.
"""
import importlib
import os
import sys

import torch

import packops

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def photometric(backend, dtype, dev):
    for shape in ((1, 3, 2, 2), (2, 3, 9, 37), (1, 2, 33, 70)):
        x = torch.rand(shape, device=dev, dtype=dtype, requires_grad=True)
        y = torch.rand(shape, device=dev, dtype=dtype, requires_grad=True)
        with packops.use_backend(backend):
            (packops.photometric_loss(x, y).sum() + packops.ssim(x, y).sum()).backward()


def reproject(backend, dtype, dev):
    geo = torch.float64 if dtype == torch.float64 else torch.float32
    for B, C, H, W, Hs, Ws in ((1, 3, 2, 2, 2, 2), (2, 3, 9, 37, 12, 20), (1, 1, 33, 70, 33, 70)):
        image = torch.rand(B, C, Hs, Ws, device=dev, dtype=dtype, requires_grad=True)
        depth = (torch.rand(B, 1, H, W, device=dev, dtype=geo) * 5 + 0.5)
        depth[0, 0, 0, 0] = float("nan")
        depth.requires_grad_()
        K = torch.tensor([[W * 0.8, 0, W / 2], [0, W * 0.8, H / 2], [0, 0, 1]], device=dev,
                         dtype=geo).expand(B, 3, 3)
        T = torch.eye(4, device=dev, dtype=geo).repeat(B, 1, 1)
        T[:, :3, 3] = torch.tensor([0.3, -0.2, 0.5], device=dev, dtype=geo)  # some land outside
        T.requires_grad_()
        with packops.use_backend(backend):
            out, mask = packops.reproject(image, depth, K, T, return_mask=True)
            out.nansum().backward()


def main():
    backends = sys.argv[1:] or ["cuda", "triton"]
    dev = "cuda"
    tests = [photometric, reproject]
    try:  # ops from other modules, when present
        tests.append(importlib.import_module("tools.sanitize_pack").run)
    except ImportError:
        pass
    only = [w for w in os.environ.get("SANITIZE_OPS", "").split(",") if w]
    if only:
        tests = [t for t in tests if any(w in t.__module__ + "." + t.__name__ for w in only)]
    for backend in backends:
        for fn in tests:
            for dtype in DTYPES:
                fn(backend, dtype, dev)
                torch.cuda.synchronize()
                print(f"ok {backend} {fn.__name__} {dtype}", flush=True)


if __name__ == "__main__":
    main()
