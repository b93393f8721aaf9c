"""Suites "copy" and "ops": the device's copy bandwidth, and
photometric_loss, ssim, reproject and group_norm_elu per provider and mode.

copy: dst.copy_(src), 256 MB on a GPU, 64 MB on the CPU; GB/s counts read +
write bytes. It is the practical roofline: every op row's "% copy bw" is its
GB/s over this (measured in the same session, or read from the device's
copy.json in the results directory).

Shapes: the PackNet-SfM KITTI training batch (4x3x192x640) and full
resolution (1x3x384x1280 for the loss, 4x3x384x1280 for reproject);
group_norm_elu at PackNet01's first conv output (4x64x192x640, and batch 1,
a CPU step's) and the main job's (4x16x64x192). float32; bfloat16 too on
CUDA (the CPU backend serves float32/float64). reproject's fwd+bwd has
gradients to depth and pose only (the training case: the source image
needs none); reproject_image_grad adds the image gradient.

Bytes for GB/s: the least any implementation must move, intermediates not
counted: reading the inputs and writing the output forward; reading the
output gradient and the inputs again (the fused kernels recompute what the
forward computed instead of saving it) and writing the gradients backward.
"""
import math

import torch

import packops

from .cases import Case, Run, op_cases

GROUPS = 16  # GroupNorm(16) of every PackNet Conv2D


def _copy_case(device, quick):
    nbytes = (1 if quick else (256 if device.type == "cuda" else 64)) << 20

    def setup(device):
        src = torch.rand(nbytes // 4, device=device)
        dst = torch.empty_like(src)

        def metrics(median_s, first):
            return {"gbps": 2 * nbytes / median_s / 1e9 if median_s else None}
        return Run(fn=lambda: dst.copy_(src), metrics=metrics)
    return Case("copy", f"copy-{nbytes >> 20}MB", "torch", {"what": "dst.copy_(src)",
                                                            "MB": nbytes >> 20}, setup)


def _images(shape, dtype, device):
    def make():
        # images in [0, 1]; the target a perturbed pred, as for a partly converged warp
        g = torch.Generator().manual_seed(0)
        pred = torch.rand(shape, generator=g)
        target = (pred + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
        return pred.to(device, dtype), target.to(device, dtype)
    return make


def _photometric_bytes(shape, elem):
    """pred, target [B,C,H,W] -> loss [B,1,H,W]."""
    n, px = math.prod(shape), shape[0] * shape[2] * shape[3]
    return elem * (2 * n + px), elem * (px + 4 * n)


def _ssim_bytes(shape, elem):
    """x, y [B,C,H,W] -> [B,C,H,W]."""
    n = math.prod(shape)
    return elem * 3 * n, elem * 5 * n


def _camera(shape, dtype, device):
    def make():
        # a driving-like pair: KITTI-shaped intrinsics, depth 2-40 m, the
        # camera ~0.5 m forward with a slight turn
        B, C, H, W = shape
        g = torch.Generator().manual_seed(0)
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


def _reproject_bytes(shape, elem, image_grad):
    """image [B,C,H,W], depth [B,1,H,W] (float32) -> [B,C,H,W]; gathers count as one read."""
    img, px = math.prod(shape), shape[0] * shape[2] * shape[3]
    return elem * 2 * img + 4 * px, elem * 2 * img + 8 * px + (elem * img if image_grad else 0)


def _norm_inputs(shape, dtype, device):
    def make():
        g = torch.Generator().manual_seed(0)
        C = shape[1]
        x = torch.randn(shape, generator=g) * 2 + 0.5
        w = 1 + 0.2 * torch.randn(C, generator=g)
        b = 0.2 * torch.randn(C, generator=g)
        return x.to(device, dtype), w.to(device, dtype), b.to(device, dtype)
    return make


def group_norm_elu(x, w, b):
    return packops.group_norm_elu(x, w, b, GROUPS)


def group_norm_elu_reference(x, w, b):
    return packops.group_norm_elu_reference(x, w, b, GROUPS)


def cases(device, quick=False):
    dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    loss_shapes = ((1, 3, 16, 32), (2, 3, 24, 40)) if quick else ((4, 3, 192, 640),
                                                                  (1, 3, 384, 1280))
    warp_shapes = ((1, 3, 16, 32),) if quick else ((4, 3, 192, 640), (4, 3, 384, 1280))
    norm_shapes = ((1, 16, 8, 16),) if quick else ((4, 64, 192, 640), (1, 64, 192, 640),
                                                   (4, 16, 64, 192))
    out = [_copy_case(device, quick)]
    for op, public, reference, nbytes in (
            ("photometric_loss", packops.photometric_loss, packops.photometric_loss_reference,
             _photometric_bytes),
            ("ssim", packops.ssim, packops.ssim_reference, _ssim_bytes)):
        for shape in loss_shapes:
            for dtype in dtypes:
                out += op_cases("ops", op, public, reference, _images(shape, dtype, device), shape,
                                dtype, nbytes(shape, dtype.itemsize))
    for shape in warp_shapes:
        for dtype in dtypes:
            make = _camera(shape, dtype, device)
            out += op_cases("ops", "reproject", packops.reproject, packops.reproject_reference,
                            make, shape, dtype, _reproject_bytes(shape, dtype.itemsize, False),
                            grad_inputs=(1, 3))
            out += op_cases("ops", "reproject_image_grad", packops.reproject,
                            packops.reproject_reference, make, shape, dtype,
                            _reproject_bytes(shape, dtype.itemsize, True), grad_inputs=(0, 1, 3),
                            modes=("bwd", "fwd+bwd"))
    for shape in norm_shapes:
        for dtype in dtypes:
            n = math.prod(shape) * dtype.itemsize
            out += op_cases("ops", "group_norm_elu", group_norm_elu, group_norm_elu_reference,
                            _norm_inputs(shape, dtype, device), shape, dtype, (2 * n, 3 * n))
    return out
