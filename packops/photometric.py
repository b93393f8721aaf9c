"""SSIM and the photometric loss: reference, backends, registration, public ops.

ssim(x, y) -> [B,C,H,W] and photometric_loss(pred, target) -> [B,1,H,W], as
DESIGN.md defines them. Backends:
  reference  plain PyTorch (autograd by PyTorch)
  cpu, cuda  packops._C: packops::ssim_fwd/_bwd, packops::photometric_fwd/_bwd
  triton     packops::*_triton custom ops around packops/_triton/photometric.py
Every fused backend runs one kernel forward and one backward, each a
registered op with a fake (meta) implementation, so opcheck passes and
torch.compile(fullgraph=True) keeps the op in its graph.
"""
import torch
import torch.nn.functional as F

from . import _checks, _dispatch, _ext

_F32_F64 = (torch.float32, torch.float64)
_ALL = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
DTYPES = {"reference": _ALL, "cpu": _F32_F64, "triton": _ALL, "cuda": _ALL}


# ---------------------------------------------------------------- reference
def ssim_reference(x, y, C1=1e-4, C2=9e-4):
    """x, y: [B,C,H,W] -> [B,C,H,W]; ReflectionPad2d(1) + AvgPool2d(3, 1)."""
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


# ------------------------------------------------------------ triton ops
def _triton():
    from ._triton import photometric

    return photometric


@torch.library.custom_op("packops::ssim_fwd_triton", mutates_args=())
def _ssim_fwd_triton(x: torch.Tensor, y: torch.Tensor, C1: float, C2: float) -> torch.Tensor:
    return _triton().forward(x, y, False, 0.0, C1, C2)


@torch.library.custom_op("packops::ssim_bwd_triton", mutates_args=())
def _ssim_bwd_triton(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, C1: float, C2: float,
                     need_x: bool, need_y: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _triton().backward(grad, x, y, False, need_x, need_y, 0.0, C1, C2)


@torch.library.custom_op("packops::photometric_fwd_triton", mutates_args=())
def _photometric_fwd_triton(pred: torch.Tensor, target: torch.Tensor, alpha: float, C1: float,
                            C2: float) -> torch.Tensor:
    return _triton().forward(pred, target, True, alpha, C1, C2)


@torch.library.custom_op("packops::photometric_bwd_triton", mutates_args=())
def _photometric_bwd_triton(grad: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                            alpha: float, C1: float, C2: float, need_pred: bool,
                            need_target: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _triton().backward(grad, pred, target, True, need_pred, need_target, alpha, C1, C2)


# ------------------------------------------- fake kernels and autograd
def _fake_grads(x, y, need_x, need_y):
    # Unneeded gradients are empty tensors (the kernels skip them).
    return (x.new_empty(x.shape) if need_x else x.new_empty(0),
            y.new_empty(y.shape) if need_y else y.new_empty(0))


def _ssim_fwd_fake(x, y, C1, C2):
    return x.new_empty(x.shape)


def _ssim_bwd_fake(grad, x, y, C1, C2, need_x, need_y):
    return _fake_grads(x, y, need_x, need_y)


def _photometric_fwd_fake(pred, target, alpha, C1, C2):
    B, _, H, W = pred.shape
    return pred.new_empty((B, 1, H, W))


def _photometric_bwd_fake(grad, pred, target, alpha, C1, C2, need_pred, need_target):
    return _fake_grads(pred, target, need_pred, need_target)


def _setup_context(ctx, inputs, output):
    x, y, *params = inputs
    ctx.params = params
    ctx.save_for_backward(x, y)


def _make_backward(bwd_op):
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[:2]
        gx, gy = bwd_op(grad, x, y, *ctx.params, need_x, need_y)
        return (gx if need_x else None, gy if need_y else None) + (None,) * len(ctx.params)

    return backward


def _register(fwd, bwd, fwd_fake, bwd_fake):
    """fwd, bwd: "packops::name" of the forward and backward ops."""
    torch.library.register_fake(fwd, fwd_fake)
    torch.library.register_fake(bwd, bwd_fake)
    bwd_op = getattr(torch.ops.packops, bwd.split("::")[1]).default
    torch.library.register_autograd(fwd, _make_backward(bwd_op), setup_context=_setup_context)


# The custom_op-defined triton ops always exist; the C++ ones only when built.
for _suffix in ("_triton", "") if _ext.has_cpu_ext() else ("_triton",):
    _register(f"packops::ssim_fwd{_suffix}", f"packops::ssim_bwd{_suffix}",
              _ssim_fwd_fake, _ssim_bwd_fake)
    _register(f"packops::photometric_fwd{_suffix}", f"packops::photometric_bwd{_suffix}",
              _photometric_fwd_fake, _photometric_bwd_fake)


# ------------------------------------------------------------- public ops
def _check(op, a_name, a, b_name, b):
    _checks.tensor(op, a_name, a, dim=4)
    _checks.tensor(op, b_name, b, dim=4)
    _checks.same(op, a_name, a, b_name, b)
    _checks.min_spatial(op, a_name, a, 2)


def ssim(x, y, C1=1e-4, C2=9e-4):
    """Per-pixel SSIM of x and y: [B,C,H,W], H,W >= 2 -> [B,C,H,W].

    3x3 window, reflection padding of 1, no clamp (see DESIGN.md).
    Differentiable with respect to both inputs.
    """
    _check("ssim", "x", x, "y", y)
    C1 = _checks.finite_scalar("ssim", "C1", C1)
    C2 = _checks.finite_scalar("ssim", "C2", C2)
    backend = _dispatch.resolve("ssim", x, DTYPES)
    if backend == "reference":
        return ssim_reference(x, y, C1, C2)
    if backend == "triton":
        return torch.ops.packops.ssim_fwd_triton(x, y, C1, C2)
    return torch.ops.packops.ssim_fwd(x, y, C1, C2)


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
    backend = _dispatch.resolve("photometric_loss", pred, DTYPES)
    if backend == "reference":
        return photometric_loss_reference(pred, target, alpha, C1, C2)
    if backend == "triton":
        return torch.ops.packops.photometric_fwd_triton(pred, target, alpha, C1, C2)
    return torch.ops.packops.photometric_fwd(pred, target, alpha, C1, C2)
