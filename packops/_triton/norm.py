"""Triton kernels of group_norm_elu, forward and backward.

Same math as csrc/include/packops/norm.h: per (batch element, group) the
mean and 1/std of (C/G) H W values (sums shifted by the group's first value),
then y = elu(w (x - mean) rstd + b). Backward: per (batch element, channel)
the sums S1 = sum dz, S2 = sum dz x_hat (dz = dy elu'(z), recomputed), reduced
to the weight/bias gradients and the group terms with PyTorch sums (fixed
order), then dx = rstd (w dz - m1 - x_hat m2) elementwise.

Imported lazily: under TRITON_INTERPRET=1 the kernels run on CPU tensors.
"""
import torch
import triton
import triton.language as tl

from ._launch import acc_type, contiguous, grad_buffer, interpreted, launch, split_doubles

BLOCK_GPU = 1024


@triton.jit
def _elu(z, alpha):
    return tl.where(z > 0, z, alpha * (tl.exp(z) - 1.0))


@triton.jit
def _elu_grad(z, alpha):
    return tl.where(z > 0, 1.0, alpha * tl.exp(z))


@triton.jit
def _scalar(hi, lo, ACC: tl.constexpr):
    # a float64 parameter passed as an fp32 pair (_launch.split_doubles)
    return tl.cast(hi, ACC) + tl.cast(lo, ACC)


@triton.jit
def _stats_kernel(x, mean, rstd, n, eps_hi, eps_lo, BLOCK: tl.constexpr, ACC: tl.constexpr):
    bg = tl.program_id(0).to(tl.int64)
    base = x + bg * n
    k = tl.load(base).to(ACC)
    s1 = tl.zeros([BLOCK], ACC)
    s2 = tl.zeros([BLOCK], ACC)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        d = tl.where(offs < n, tl.load(base + offs, mask=offs < n, other=0).to(ACC) - k, 0.0)
        s1 += d
        s2 += d * d
    m = tl.sum(s1, axis=0) / n
    var = tl.maximum(tl.sum(s2, axis=0) / n - m * m, 0.0)
    tl.store(mean + bg, k + m)
    tl.store(rstd + bg, 1.0 / tl.sqrt(var + _scalar(eps_hi, eps_lo, ACC)))


@triton.jit
def _affine_block(x, w, b, mean, rstd, total, C, HW, Cg, BLOCK: tl.constexpr,
                  ACC: tl.constexpr):
    """One block of elements: (offs, ok, bg, rstd, weight, x_hat, z = x_hat * w + b)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < total
    bc = offs // HW
    c = bc % C
    bg = bc // Cg
    r = tl.load(rstd + bg, mask=ok, other=0)
    wc = tl.load(w + c, mask=ok, other=0).to(ACC)
    xh = (tl.load(x + offs, mask=ok, other=0).to(ACC) - tl.load(mean + bg, mask=ok, other=0)) * r
    z = xh * wc + tl.load(b + c, mask=ok, other=0).to(ACC)
    return offs, ok, bg, r, wc, xh, z


@triton.jit
def _apply_kernel(x, w, b, mean, rstd, y, total, C, HW, Cg, alpha_hi, alpha_lo,
                  BLOCK: tl.constexpr, ACC: tl.constexpr):
    alpha = _scalar(alpha_hi, alpha_lo, ACC)
    offs, ok, bg, r, wc, xh, z = _affine_block(x, w, b, mean, rstd, total, C, HW, Cg, BLOCK, ACC)
    tl.store(y + offs, _elu(z, alpha).to(y.dtype.element_ty), mask=ok)


@triton.jit
def _channel_sums_kernel(dy, x, w, b, mean, rstd, S, C, HW, Cg, alpha_hi, alpha_lo,
                         BLOCK: tl.constexpr, ACC: tl.constexpr):
    alpha = _scalar(alpha_hi, alpha_lo, ACC)
    bc = tl.program_id(0).to(tl.int64)
    c = bc % C
    bg = bc // Cg
    m = tl.load(mean + bg)
    r = tl.load(rstd + bg)
    wc = tl.load(w + c).to(ACC)
    bias = tl.load(b + c).to(ACC)
    s1 = tl.zeros([BLOCK], ACC)
    s2 = tl.zeros([BLOCK], ACC)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        ok = offs < HW
        xh = (tl.load(x + bc * HW + offs, mask=ok, other=0).to(ACC) - m) * r
        dz = tl.load(dy + bc * HW + offs, mask=ok, other=0).to(ACC) * _elu_grad(xh * wc + bias,
                                                                                alpha)
        s1 += tl.where(ok, dz, 0.0)
        s2 += tl.where(ok, dz * xh, 0.0)
    tl.store(S + bc * 2, tl.sum(s1, axis=0))
    tl.store(S + bc * 2 + 1, tl.sum(s2, axis=0))


@triton.jit
def _dx_kernel(dy, x, w, b, mean, rstd, M, dx, total, C, HW, Cg, alpha_hi, alpha_lo,
               BLOCK: tl.constexpr, ACC: tl.constexpr):
    alpha = _scalar(alpha_hi, alpha_lo, ACC)
    offs, ok, bg, r, wc, xh, z = _affine_block(x, w, b, mean, rstd, total, C, HW, Cg, BLOCK, ACC)
    dz = tl.load(dy + offs, mask=ok, other=0).to(ACC) * _elu_grad(z, alpha)
    m1 = tl.load(M + bg * 2, mask=ok, other=0)
    m2 = tl.load(M + bg * 2 + 1, mask=ok, other=0)
    tl.store(dx + offs, (r * (wc * dz - m1 - xh * m2)).to(dx.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------- launchers
# Named and shaped like the kernel ops (packops._library registers them as
# packops::<name>_triton with the C++ ops' schemas).
def _block(x, n):
    return min(triton.next_power_of_2(max(n, 16)), 4096 if interpreted(x) else BLOCK_GPU)


def _acc_torch(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def group_norm_elu_fwd(x, weight, bias, groups, eps, alpha):
    """x: [B,C,H,W] -> (y [B,C,H,W], mean [B,G], rstd [B,G])."""
    x, weight, bias = contiguous(x, weight, bias)
    B, C, H, W = x.shape
    HW, G = H * W, groups
    y = torch.empty_like(x)
    mean = x.new_zeros((B, G), dtype=_acc_torch(x.dtype))
    rstd = x.new_zeros((B, G), dtype=_acc_torch(x.dtype))
    if x.numel() == 0:
        return y, mean, rstd
    acc, n = acc_type(x.dtype), (C // G) * HW
    launch(_stats_kernel, (B * G,), x, x, mean, rstd, n, *split_doubles(eps), BLOCK=_block(x, n),
           ACC=acc)
    total = x.numel()
    block = _block(x, total)
    launch(_apply_kernel, (triton.cdiv(total, block),), x, x, weight, bias, mean, rstd, y, total,
           C, HW, C // G, *split_doubles(alpha), BLOCK=block, ACC=acc)
    return y, mean, rstd


def group_norm_elu_bwd(grad, x, weight, bias, mean, rstd, groups, alpha, need_x, need_weight,
                       need_bias):
    """grad: [B,C,H,W] -> (grad_x, grad_weight, grad_bias), empty when not needed."""
    grad, x, weight, bias, mean, rstd = contiguous(grad, x, weight, bias, mean, rstd)
    B, C, H, W = x.shape
    HW, G = H * W, groups
    gx = grad_buffer(need_x, x)
    acc_dtype = _acc_torch(x.dtype)
    S = torch.zeros((B, C, 2), dtype=acc_dtype, device=x.device)
    acc = acc_type(x.dtype)
    if B * C * HW > 0 and (need_x or need_weight or need_bias):
        launch(_channel_sums_kernel, (B * C,), x, grad, x, weight, bias, mean, rstd, S, C, HW,
               C // G, *split_doubles(alpha), BLOCK=_block(x, HW), ACC=acc)
    # fixed-order sums over the batch (weight, bias) and the group's channels (m1, m2)
    gw = S[..., 1].sum(0).to(weight.dtype) if need_weight else weight.new_empty(0)
    gb = S[..., 0].sum(0).to(weight.dtype) if need_bias else weight.new_empty(0)
    if need_x and x.numel() > 0:
        n = (C // G) * HW
        M = (S * weight.to(acc_dtype)[None, :, None]).view(B, G, C // G, 2).sum(2) / n
        total = x.numel()
        block = _block(x, total)
        launch(_dx_kernel, (triton.cdiv(total, block),), x, grad, x, weight, bias, mean, rstd,
               M.contiguous(), gx, total, C, HW, C // G, *split_doubles(alpha), BLOCK=block,
               ACC=acc)
    return gx, gw, gb
