"""SSIM and the photometric loss: reference, backends, registration, public ops.

ssim(x, y) -> [B,C,H,W] and photometric_loss(pred, target) -> [B,1,H,W], as
docs/design.md defines them. Backends:
  reference  plain PyTorch (autograd by PyTorch)
  cpu, cuda  packops::ssim_fwd/_bwd, packops::photometric_fwd/_bwd (csrc/ops/photometric.cpp)
  triton     packops::*_triton: packops/_triton/photometric.py, the same schemas
Every fused backend runs one kernel forward and one backward, each a
registered op with a fake (meta) implementation (packops/_library.py), so
opcheck passes and torch.compile(fullgraph=True) keeps the op in its graph.
"""
import torch
import torch.nn.functional as F

from . import _checks, _dispatch, _library


# ---------------------------------------------------------------- reference
def ssim_reference(x, y, C1=1e-4, C2=9e-4):
    """x, y: [B,C,H,W] -> [B,C,H,W]; ReflectionPad2d(1) + AvgPool2d(3, 1)."""
    if x.numel() == 0:  # reflection padding refuses C = 0: an empty result, still differentiable
        return x * y
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(x, 3, 1)
    mu_y = F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x * mu_x
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y * mu_y
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    n = (2 * mu_x * mu_y + C1) * (2 * sigma_xy + C2)
    d = (mu_x * mu_x + mu_y * mu_y + C1) * (sigma_x + sigma_y + C2)
    return n / d


def photometric_loss_reference(pred, target, alpha=0.85, C1=1e-4, C2=9e-4):
    """pred, target: [B,C,H,W] -> [B,1,H,W]."""
    ssim_term = torch.clamp((1 - ssim_reference(pred, target, C1, C2)) / 2, 0, 1)
    l1 = (pred - target).abs()
    return alpha * ssim_term.mean(1, keepdim=True) + (1 - alpha) * l1.mean(1, keepdim=True)


# ------------------------------------------------ fused op registration
def _same_fake(x, y, *params):
    return x.new_empty(x.shape)


def _loss_fake(pred, target, *params):
    B, _, H, W = pred.shape
    return pred.new_empty((B, 1, H, W))


SSIM = _library.fused_op(_library.FusedOp(
    # x, y: [B,C,H,W] -> [B,C,H,W]; grad: [B,C,H,W] -> (grad_x, grad_y)
    fwd="ssim_fwd(Tensor x, Tensor y, float C1, float C2) -> Tensor",
    bwd="ssim_bwd(Tensor grad, Tensor x, Tensor y, float C1, float C2, bool need_x, "
        "bool need_y) -> (Tensor, Tensor)",
    saved=("x", "y"), params=("C1", "C2"), grads=("x", "y"), triton="photometric"), _same_fake)

PHOTOMETRIC = _library.fused_op(_library.FusedOp(
    # pred, target: [B,C,H,W] -> [B,1,H,W]; grad: [B,1,H,W] -> (grad_pred, grad_target)
    fwd="photometric_fwd(Tensor pred, Tensor target, float alpha, float C1, float C2) -> Tensor",
    bwd="photometric_bwd(Tensor grad, Tensor pred, Tensor target, float alpha, float C1, "
        "float C2, bool need_pred, bool need_target) -> (Tensor, Tensor)",
    saved=("pred", "target"), params=("alpha", "C1", "C2"), grads=("pred", "target"),
    triton="photometric"), _loss_fake)


# ------------------------------------------------------------- public ops
def _check(op, a_name, a, b_name, b):
    # the common case in a few attribute reads (this runs on every call of a
    # small op, where it is a measurable share); anything else goes through
    # the checks that name the problem
    if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() == 4
            and a.is_floating_point() and a.shape == b.shape and a.shape[2] >= 2
            and a.shape[3] >= 2 and a.dtype == b.dtype and a.device == b.device):
        return
    _checks.tensor(op, a_name, a, dim=4)
    _checks.tensor(op, b_name, b, dim=4)
    _checks.same(op, a_name, a, b_name, b)
    _checks.min_spatial(op, a_name, a, 2)


@_dispatch.autocast_off
def ssim(x, y, C1=1e-4, C2=9e-4):
    """Per-pixel SSIM of x and y: [B,C,H,W], H,W >= 2 -> [B,C,H,W].

    3x3 window, reflection padding of 1, no clamp (docs/design.md).
    Differentiable with respect to both inputs.
    """
    _check("ssim", "x", x, "y", y)
    C1 = _checks.finite_scalar("ssim", "C1", C1)
    C2 = _checks.finite_scalar("ssim", "C2", C2)
    backend = _dispatch.resolve("ssim", x)
    if backend == "reference":
        return ssim_reference(x, y, C1, C2)
    return _library.kernel("ssim_fwd", backend)(x, y, C1, C2)


@_dispatch.autocast_off
def photometric_loss(pred, target, alpha=0.85, C1=1e-4, C2=9e-4):
    """Per-pixel photometric loss: [B,C,H,W], H,W >= 2 -> [B,1,H,W].

    alpha * mean_C(clamp((1 - ssim) / 2, 0, 1)) + (1 - alpha) * mean_C(|pred - target|).
    Differentiable with respect to both inputs; an input that does not require
    grad costs nothing in backward.
    """
    _check("photometric_loss", "pred", pred, "target", target)
    if pred.shape[1] < 1:
        raise ValueError(f"packops.photometric_loss: pred needs at least one channel, got shape "
                         f"{tuple(pred.shape)}")
    alpha = _checks.finite_scalar("photometric_loss", "alpha", alpha)
    C1 = _checks.finite_scalar("photometric_loss", "C1", C1)
    C2 = _checks.finite_scalar("photometric_loss", "C2", C2)
    backend = _dispatch.resolve("photometric_loss", pred)
    if backend == "reference":
        return photometric_loss_reference(pred, target, alpha, C1, C2)
    return _library.kernel("photometric_fwd", backend)(pred, target, alpha, C1, C2)
