"""Cases for packops.photometric_loss and packops.ssim.

Shapes: the PackNet-SfM KITTI training batch (4x3x192x640) and one
full-resolution image (1x3x384x1280). float32 everywhere; bfloat16 on CUDA
too (the CPU backend serves float32/float64 only).
"""
import torch

import packops

from .harness import MODES, Case

OPS = ("photometric_loss", "ssim")
SHAPES = ((4, 3, 192, 640), (1, 3, 384, 1280))
QUICK_SHAPES = ((1, 3, 16, 32), (2, 3, 24, 40))  # smoke test: seconds, not a measurement


def photometric_bytes(shape, mode, elem):
    """pred, target: [B,C,H,W] -> loss [B,1,H,W].

    fwd reads pred and target and writes the loss; backward reads the
    loss gradient, pred and target again (the fused kernels recompute the
    SSIM statistics instead of saving them) and writes grad_pred and
    grad_target. Intermediates are not counted: this is the least traffic
    any implementation must move, so GB/s compares against copy bandwidth.
    """
    B, C, H, W = shape
    n_in, n_out = B * C * H * W, B * H * W
    fwd = 2 * n_in + n_out
    bwd = n_out + 2 * n_in + 2 * n_in
    return elem * (fwd if mode == "fwd" else fwd + bwd)


def ssim_bytes(shape, mode, elem):
    """x, y: [B,C,H,W] -> [B,C,H,W]; same accounting with a [B,C,H,W] output/grad."""
    B, C, H, W = shape
    n = B * C * H * W
    fwd = 3 * n
    bwd = 3 * n + 2 * n
    return elem * (fwd if mode == "fwd" else fwd + bwd)


_DEFS = {
    "photometric_loss": (packops.photometric_loss, packops.photometric_loss_reference,
                         photometric_bytes),
    "ssim": (packops.ssim, packops.ssim_reference, ssim_bytes),
}


def _inputs(shape, dtype, device, seed):
    def make():
        # Images in [0, 1], as the loss sees them; target is a perturbed pred so
        # the values are those of a partly converged warp, not two noise images.
        g = torch.Generator(device="cpu").manual_seed(seed)
        pred = torch.rand(shape, generator=g)
        target = (pred + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
        return pred.to(device, dtype), target.to(device, dtype)
    return make


def cases(device, quick=False, ops=OPS):
    """Every (op, shape, dtype, mode) to benchmark on `device` (torch.device)."""
    dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    out = []
    for op in ops:
        public, reference, nbytes = _DEFS[op]
        for shape in QUICK_SHAPES if quick else SHAPES:
            for dtype in dtypes:
                elem = torch.empty((), dtype=dtype).element_size()
                for mode in MODES:
                    out.append(Case(op=op, public=public, reference=reference,
                                    make_inputs=_inputs(shape, dtype, device, seed=0),
                                    shape=shape, dtype=dtype, mode=mode,
                                    bytes=nbytes(shape, mode, elem)))
    return out
