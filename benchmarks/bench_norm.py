"""Cases for packops.group_norm_elu (GroupNorm(16) + ELU of every PackNet Conv2D).

Shapes: the output of PackNet01's first 7x7 conv at the KITTI training size
(4x64x192x640, the largest group_norm_elu of its step), the same at batch 1
(a CPU step's), and the main job's (PackNetTiny, 4x16x64x192). float32
everywhere; bfloat16 on CUDA too. The reference is F.elu(F.group_norm(...)).
"""
import torch

import packops

from .harness import MODES, Case

OPS = ("group_norm_elu",)
SHAPES = ((4, 64, 192, 640), (1, 64, 192, 640), (4, 16, 64, 192))
QUICK_SHAPES = ((1, 16, 8, 16), (2, 16, 12, 20))  # smoke test: seconds, not a measurement
GROUPS = 16


def norm_bytes(shape, mode, elem):
    """x: [B,C,H,W] -> y: [B,C,H,W]. fwd reads x and writes y (the statistics
    are tiny); backward reads the output gradient and x and writes the input
    gradient (the fused kernels recompute the normalised value): the least
    traffic any implementation must move."""
    n = 1
    for s in shape:
        n *= s
    return elem * (2 * n if mode == "fwd" else 5 * n)


def _inputs(shape, dtype, device, seed):
    def make():
        g = torch.Generator(device="cpu").manual_seed(seed)
        C = shape[1]
        x = torch.randn(shape, generator=g) * 2 + 0.5
        w = 1 + 0.2 * torch.randn(C, generator=g)
        b = 0.2 * torch.randn(C, generator=g)
        return x.to(device, dtype), w.to(device, dtype), b.to(device, dtype)
    return make


def _public(x, w, b):
    return packops.group_norm_elu(x, w, b, GROUPS)


def _reference(x, w, b):
    return packops.group_norm_elu_reference(x, w, b, GROUPS)


def cases(device, quick=False, ops=OPS):
    """Every (op, shape, dtype, mode) to benchmark on `device` (torch.device)."""
    dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    out = []
    if "group_norm_elu" not in ops:
        return out
    for shape in QUICK_SHAPES if quick else SHAPES:
        for dtype in dtypes:
            elem = torch.empty((), dtype=dtype).element_size()
            for mode in MODES:
                out.append(Case(op="group_norm_elu", public=_public, reference=_reference,
                                make_inputs=_inputs(shape, dtype, device, seed=0),
                                shape=shape, dtype=dtype, mode=mode,
                                bytes=norm_bytes(shape, mode, elem), grad_inputs=(0, 1, 2)))
    return out
