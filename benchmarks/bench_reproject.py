"""Cases for packops.reproject (view synthesis).

Shapes: the PackNet-SfM KITTI training batch (4x3x192x640) and full
resolution (4x3x384x1280), float32 (bfloat16 images too on CUDA). Modes:
  reproject             fwd, and fwd+bwd with gradients to depth and pose
                        only (the training case: the source image needs none)
  reproject_image_grad  fwd+bwd with the image gradient too
"""
import math

import torch

import packops

from .harness import Case

OPS = ("reproject", "reproject_image_grad")
SHAPES = ((4, 3, 192, 640), (4, 3, 384, 1280))
QUICK_SHAPES = ((1, 3, 16, 32), (2, 3, 24, 40))  # smoke test: seconds, not a measurement


def reproject_bytes(shape, mode, elem, image_grad=False):
    """image [B,C,H,W], depth [B,1,H,W] (float32) -> out [B,C,H,W].

    fwd reads image and depth once and writes out. Backward reads the output
    gradient, image and depth again and writes the depth gradient (and, with
    image_grad, the image gradient). Gathers are counted as one read of the
    image; the least traffic any implementation must move.
    """
    B, C, H, W = shape
    img, px = B * C * H * W, B * H * W
    fwd = elem * 2 * img + 4 * px
    bwd = elem * 2 * img + 4 * 2 * px + (elem * img if image_grad else 0)
    return fwd if mode == "fwd" else fwd + bwd


def _inputs(shape, dtype, device, seed):
    def make():
        # A driving-like pair: KITTI-shaped intrinsics, depth 2-40 m, the camera
        # moving ~0.5 m forward with a slight turn.
        B, C, H, W = shape
        g = torch.Generator(device="cpu").manual_seed(seed)
        image = torch.rand(B, C, H, W, generator=g)
        depth = 2 + 38 * torch.rand(B, 1, H, W, generator=g)
        K = torch.tensor([[0.58 * W, 0, 0.5 * W - 0.5], [0, 1.92 * H, 0.5 * H - 0.5], [0, 0, 1]])
        a = 0.02
        T = torch.eye(4)
        T[:3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0],
                                  [-math.sin(a), 0, math.cos(a)]])
        T[:3, 3] = torch.tensor([0.02, -0.01, -0.5])
        return (image.to(device, dtype), depth.to(device), K.expand(B, 3, 3).to(device),
                T.expand(B, 4, 4).contiguous().to(device))
    return make


def cases(device, quick=False, ops=OPS):
    """Every (op, shape, dtype, mode) to benchmark on `device` (torch.device)."""
    dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    out = []
    for op in ops:
        modes = (("fwd", None), ("fwd+bwd", (1, 3))) if op == "reproject" else (("fwd+bwd", (0, 1, 3)),)
        for shape in QUICK_SHAPES if quick else SHAPES:
            for dtype in dtypes:
                elem = torch.empty((), dtype=dtype).element_size()
                for mode, grads in modes:
                    out.append(Case(op=op, public=packops.reproject,
                                    reference=packops.reproject_reference,
                                    make_inputs=_inputs(shape, dtype, device, seed=0),
                                    shape=shape, dtype=dtype, mode=mode,
                                    bytes=reproject_bytes(shape, mode, elem, op != "reproject"),
                                    grad_inputs=grads))
    return out
