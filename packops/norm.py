"""GroupNorm + ELU, the normalisation and activation of every PackNet Conv2D
block: reference, registration, public op.

group_norm_elu(x, weight, bias, groups, eps=1e-5, alpha=1.0) -> [B,C,H,W]
is ELU(GroupNorm(x)), as docs/design.md defines it. Backends:
  reference  F.elu(F.group_norm(...)) (autograd by PyTorch)
  cpu, cuda  packops::group_norm_elu_fwd / _bwd (csrc/ops/norm.cpp)
  triton     packops::group_norm_elu_*_triton: packops/_triton/norm.py, the same schemas
The fused forward is one pass for the group statistics and one for the
output, and returns the statistics (mean, 1/std per batch element and
group); the backward keeps x and those statistics only and recomputes the
normalised value and the ELU's derivative, so the pair keeps one activation
for backward where GroupNorm then ELU keep two (GroupNorm's input and ELU's
output).
"""
import torch
import torch.nn.functional as F

from . import _checks, _dispatch, _library


# ---------------------------------------------------------------- reference
def group_norm_elu_reference(x, weight, bias, groups, eps=1e-5, alpha=1.0):
    """x: [B,C,H,W], weight, bias: [C] or None -> [B,C,H,W]: F.elu(F.group_norm(x))."""
    return F.elu(F.group_norm(x, groups, weight, bias, eps), alpha)


# ------------------------------------------------ fused op registration
def _fwd_fake(x, weight, bias, groups, eps, alpha):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    B = x.shape[0]
    return (x.new_empty(x.shape), x.new_empty((B, groups), dtype=acc),
            x.new_empty((B, groups), dtype=acc))


GROUP_NORM_ELU = _library.fused_op(_library.FusedOp(
    # x: [B,C,H,W], weight, bias: [C], C divisible by groups
    #   -> (y [B,C,H,W], mean [B,groups], rstd [B,groups]; float64 for float64 x, else float32)
    fwd="group_norm_elu_fwd(Tensor x, Tensor weight, Tensor bias, int groups, float eps, "
        "float alpha) -> (Tensor, Tensor, Tensor)",
    # grad: [B,C,H,W] -> (grad_x, grad_weight, grad_bias); unneeded ones are empty
    bwd="group_norm_elu_bwd(Tensor grad, Tensor x, Tensor weight, Tensor bias, Tensor mean, "
        "Tensor rstd, int groups, float alpha, bool need_x, bool need_weight, bool need_bias) "
        "-> (Tensor, Tensor, Tensor)",
    saved=("x", "weight", "bias"), saved_outputs=(1, 2), params=("groups", "alpha"),
    grads=("x", "weight", "bias"), triton="norm"), _fwd_fake)


# ------------------------------------------------------------- public op
@_dispatch.autocast_to_lower_precision
def group_norm_elu(x, weight, bias, groups, eps=1e-5, alpha=1.0):
    """ELU(GroupNorm(x)) in one fused op.

    x: [B,C,H,W] with C divisible by groups; weight, bias: [C] (GroupNorm's
    affine parameters) or None (1 and 0) -> [B,C,H,W]. Statistics are taken
    over each group of C/groups channels and all pixels (biased variance,
    eps inside the square root); ELU(z) = z for z > 0, alpha (exp(z) - 1)
    otherwise. Differentiable with respect to x, weight and bias.
    """
    op = "group_norm_elu"
    _checks.tensor(op, "x", x, dim=4)
    groups = _checks.positive_int(op, "groups", groups)
    if x.shape[1] % groups:
        raise ValueError(f"packops.group_norm_elu: the channels of x ({x.shape[1]}) must be "
                         f"divisible by groups = {groups}, got shape {tuple(x.shape)}")
    eps = _checks.finite_scalar(op, "eps", eps)
    if eps <= 0:
        raise ValueError(f"packops.group_norm_elu: eps must be > 0, got {eps}")
    alpha = _checks.finite_scalar(op, "alpha", alpha)
    C = x.shape[1]
    params = []
    for name, t, fill in (("weight", weight, 1.0), ("bias", bias, 0.0)):
        if t is None:
            t = x.new_full((C,), fill)
        else:
            _checks.tensor(op, name, t)
            if tuple(t.shape) != (C,):
                raise ValueError(f"packops.group_norm_elu: {name} must be [C] = [{C}] for x "
                                 f"{tuple(x.shape)}, got shape {tuple(t.shape)}")
            _checks.same_dtype_device(op, "x", x, name, t)
        params.append(t)
    weight, bias = params
    backend = _dispatch.resolve(op, x)
    if backend == "reference":
        return group_norm_elu_reference(x, weight, bias, groups, eps, alpha)
    return _library.kernel("group_norm_elu_fwd", backend)(x, weight, bias, groups, eps, alpha)[0]
