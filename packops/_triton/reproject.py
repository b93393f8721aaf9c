"""Triton kernels of reproject(): one program per block of target pixels.

Same math as csrc/include/packops/reproject.h: P [B,3,4] holds the folded
geometry, p = depth * P[:, :3] [u,v,1] + P[:, 3], z = max(p_z, 1e-5), then a
bilinear sample with align_corners=True semantics and zeros outside (or, with
padding_mode "border", at the point clamped into the image). A
point farther than one pixel outside the image samples nothing (0); one whose
coordinates are not finite gives NaN, as grid_sample does. Neither passes a
gradient.

Backward: the image gradient scatters with atomics into a float32 (float64)
accumulator; the 12 pose sums are reduced per program with tl.sum (a tree)
into [B, programs, 12] partials that the caller sums in a fixed order.
"""
import torch
import triton
import triton.language as tl

from ._launch import contiguous, grad_buffer, interpreted, launch

_MIN_Z = tl.constexpr(1e-5)


@triton.jit
def _project(depth, P, H, W, Hs, Ws, BORDER: tl.constexpr, BLOCK: tl.constexpr):
    """This program's pixels (block pid of batch element b), where they land
    (x, y) and where they are sampled: with BORDER clamped into the image, the
    gradient of x, y passing the clamp only strictly inside (pass_x, pass_y)."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    HW = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < HW
    G = depth.dtype.element_ty
    u = (offs % W).to(G)
    v = (offs // W).to(G)
    Pb = P + b * 12
    d = tl.load(depth + b * HW + offs, mask=valid, other=1).to(G)
    a0 = tl.load(Pb + 0) * u + tl.load(Pb + 1) * v + tl.load(Pb + 2)
    a1 = tl.load(Pb + 4) * u + tl.load(Pb + 5) * v + tl.load(Pb + 6)
    a2 = tl.load(Pb + 8) * u + tl.load(Pb + 9) * v + tl.load(Pb + 10)
    px = d * a0 + tl.load(Pb + 3)
    py = d * a1 + tl.load(Pb + 7)
    pz = d * a2 + tl.load(Pb + 11)
    z = tl.where(pz < _MIN_Z, _MIN_Z, pz)  # NaN stays NaN
    x = px / z
    y = py / z
    sx = x
    sy = y
    pass_x = tl.full(x.shape, 1.0, G)
    pass_y = tl.full(x.shape, 1.0, G)
    if BORDER:  # grid_sample's clip, of finite points only (others give NaN)
        finite = ((x - x) == 0) & ((y - y) == 0)
        out_x = (x <= 0) | (x >= Ws - 1)
        out_y = (y <= 0) | (y >= Hs - 1)
        sx = tl.where(finite, tl.where(x <= 0, 0.0, tl.where(x >= Ws - 1, (Ws - 1).to(G), x)), x)
        sy = tl.where(finite, tl.where(y <= 0, 0.0, tl.where(y >= Hs - 1, (Hs - 1).to(G), y)), y)
        pass_x = tl.where(out_x, 0.0, pass_x)
        pass_y = tl.where(out_y, 0.0, pass_y)
    hit = valid & (sx >= -1) & (sx <= Ws) & (sy >= -1) & (sy <= Hs)
    xs = tl.where(hit, sx, 0.0)  # keeps floor() and the int conversion in range
    ys = tl.where(hit, sy, 0.0)
    x0 = tl.floor(xs)
    y0 = tl.floor(ys)
    fx = xs - x0
    fy = ys - y0
    ix = x0.to(tl.int32)
    iy = y0.to(tl.int32)
    in_x0 = (ix >= 0) & (ix < Ws)
    in_x1 = (ix + 1 >= 0) & (ix + 1 < Ws)
    in_y0 = (iy >= 0) & (iy < Hs)
    in_y1 = (iy + 1 >= 0) & (iy + 1 < Hs)
    k00 = hit & in_y0 & in_x0
    k01 = hit & in_y0 & in_x1
    k10 = hit & in_y1 & in_x0
    k11 = hit & in_y1 & in_x1
    return (pid, b, HW, Hs * Ws, offs, valid, u, v, d, a0, a1, a2, pz, z, x, y, hit, fx, fy,
            iy * Ws + ix, k00, k01, k10, k11, pass_x, pass_y)


@triton.jit
def _forward_kernel(image, depth, P, out, mask, C, H, W, Hs, Ws, WITH_MASK: tl.constexpr,
                    BORDER: tl.constexpr, BLOCK: tl.constexpr):
    (pid, b, HW, plane, offs, valid, u, v, d, a0, a1, a2, pz, z, x, y, hit, fx, fy, i00,
     k00, k01, k10, k11, pass_x, pass_y) = _project(depth, P, H, W, Hs, Ws, BORDER, BLOCK)
    if WITH_MASK:
        ins = hit & (x >= 0) & (x <= Ws - 1) & (y >= 0) & (y <= Hs - 1)
        tl.store(mask + b * HW + offs, ins.to(mask.dtype.element_ty), mask=valid)
    # 0 where a point samples nothing, NaN where its coordinates are not finite
    # (NaN/inf depth), as grid_sample gives.
    empty = (x - x) + (y - y)
    w00 = (1 - fx) * (1 - fy)
    w01 = fx * (1 - fy)
    w10 = (1 - fx) * fy
    w11 = fx * fy
    for c in range(C):
        base = image + (b * C + c) * plane + i00
        acc = w00 * tl.load(base, mask=k00, other=0).to(fx.dtype)
        acc += w01 * tl.load(base + 1, mask=k01, other=0).to(fx.dtype)
        acc += w10 * tl.load(base + Ws, mask=k10, other=0).to(fx.dtype)
        acc += w11 * tl.load(base + Ws + 1, mask=k11, other=0).to(fx.dtype)
        acc = tl.where(hit, acc, empty)
        tl.store(out + (b * C + c) * HW + offs, acc.to(out.dtype.element_ty), mask=valid)


@triton.jit
def _backward_kernel(grad, image, depth, P, grad_image, grad_depth, partial, C, H, W, Hs, Ws,
                     NEED_IMAGE: tl.constexpr, NEED_DEPTH: tl.constexpr, NEED_P: tl.constexpr,
                     BORDER: tl.constexpr, BLOCK: tl.constexpr):
    (pid, b, HW, plane, offs, valid, u, v, d, a0, a1, a2, pz, z, x, y, hit, fx, fy, i00,
     k00, k01, k10, k11, pass_x, pass_y) = _project(depth, P, H, W, Hs, Ws, BORDER, BLOCK)
    gx = tl.zeros_like(fx)
    gy = tl.zeros_like(fx)
    for c in range(C):
        g = tl.load(grad + (b * C + c) * HW + offs, mask=hit, other=0).to(fx.dtype)
        if NEED_DEPTH or NEED_P:
            base = image + (b * C + c) * plane + i00
            v00 = tl.load(base, mask=k00, other=0).to(fx.dtype)
            v01 = tl.load(base + 1, mask=k01, other=0).to(fx.dtype)
            v10 = tl.load(base + Ws, mask=k10, other=0).to(fx.dtype)
            v11 = tl.load(base + Ws + 1, mask=k11, other=0).to(fx.dtype)
            gx += g * ((v01 - v00) * (1 - fy) + (v11 - v10) * fy)
            gy += g * ((v10 - v00) * (1 - fx) + (v11 - v01) * fx)
        if NEED_IMAGE:
            gbase = grad_image + (b * C + c) * plane + i00
            tl.atomic_add(gbase, g * (1 - fx) * (1 - fy), mask=k00)
            tl.atomic_add(gbase + 1, g * fx * (1 - fy), mask=k01)
            tl.atomic_add(gbase + Ws, g * (1 - fx) * fy, mask=k10)
            tl.atomic_add(gbase + Ws + 1, g * fx * fy, mask=k11)
    if NEED_DEPTH or NEED_P:
        # Pixels that sample nothing pass no gradient (their x, y, d may be inf/NaN).
        gx = gx * pass_x
        gy = gy * pass_y
        dpx = tl.where(hit, gx / z, 0.0)
        dpy = tl.where(hit, gy / z, 0.0)
        dpz = tl.where(hit & (pz >= _MIN_Z), -(gx * x + gy * y) / z, 0.0)
        if NEED_DEPTH:
            tl.store(grad_depth + b * HW + offs, dpx * a0 + dpy * a1 + dpz * a2, mask=valid)
        if NEED_P:
            dd = tl.where(hit, d, 0.0)
            du = dd * u
            dv = dd * v
            row = partial + (b * tl.num_programs(0) + pid) * 12
            tl.store(row + 0, tl.sum(dpx * du, axis=0))
            tl.store(row + 1, tl.sum(dpx * dv, axis=0))
            tl.store(row + 2, tl.sum(dpx * dd, axis=0))
            tl.store(row + 3, tl.sum(dpx, axis=0))
            tl.store(row + 4, tl.sum(dpy * du, axis=0))
            tl.store(row + 5, tl.sum(dpy * dv, axis=0))
            tl.store(row + 6, tl.sum(dpy * dd, axis=0))
            tl.store(row + 7, tl.sum(dpy, axis=0))
            tl.store(row + 8, tl.sum(dpz * du, axis=0))
            tl.store(row + 9, tl.sum(dpz * dv, axis=0))
            tl.store(row + 10, tl.sum(dpz * dd, axis=0))
            tl.store(row + 11, tl.sum(dpz, axis=0))


# ---------------------------------------------------------------- launchers
# Named and shaped like the kernel ops (packops._library registers them as
# packops::<name>_triton with the C++ ops' schemas): they take the cameras,
# fold them into P = K_src [R K^-1 | t] with PyTorch ops (no device-host sync)
# and carry the P gradient on to K, T and K_src (packops.reproject.camera_grads).
def _block(n, like):
    return min(4096, max(16, triton.next_power_of_2(n))) if interpreted(like) else 256


def _kernel_forward(image, depth, P, with_mask, border):
    """image: [B,C,Hs,Ws]; depth: [B,1,H,W] and P: [B,3,4] in the geometry
    dtype -> (out [B,C,H,W], mask [B,1,H,W] or empty)."""
    image, depth, P = contiguous(image, depth, P)
    B, C, Hs, Ws = image.shape
    H, W = depth.shape[-2:]
    out = image.new_empty((B, C, H, W))
    mask = image.new_empty((B, 1, H, W)) if with_mask else image.new_empty(0)
    if B * H * W == 0:
        return out, mask
    block = _block(H * W, image)
    launch(_forward_kernel, (triton.cdiv(H * W, block), B), image, image, depth, P,
           out, mask if with_mask else out, C, H, W, Hs, Ws, WITH_MASK=with_mask, BORDER=border,
           BLOCK=block, num_warps=4)
    return out, mask


def _kernel_backward(grad, image, depth, P, border, need_image, need_depth, need_P):
    """-> (grad_image [B,C,Hs,Ws], grad_depth [B,1,H,W], grad_P [B,3,4]), empty when unneeded."""
    grad, image, depth, P = contiguous(grad, image, depth, P)
    B, C, Hs, Ws = image.shape
    H, W = depth.shape[-2:]
    block = _block(H * W, image)
    n_prog = triton.cdiv(H * W, block)
    # the image gradient accumulates with atomics in the geometry dtype
    gi = torch.zeros(image.shape, dtype=P.dtype, device=P.device) if need_image else P.new_empty(0)
    gd = grad_buffer(need_depth, depth)
    partial = P.new_zeros((B, n_prog, 12)) if need_P else P.new_empty(0)
    if B * H * W > 0 and (need_image or need_depth or need_P):
        launch(_backward_kernel, (n_prog, B), image, grad, image, depth, P,
               gi if need_image else P, gd if need_depth else depth, partial if need_P else P,
               C, H, W, Hs, Ws, NEED_IMAGE=need_image, NEED_DEPTH=need_depth, NEED_P=need_P,
               BORDER=border, BLOCK=block, num_warps=4)
    gi = gi.to(image.dtype) if need_image else image.new_empty(0)
    gP = partial.sum(1).view(B, 3, 4) if need_P else P.new_empty(0)
    return gi, gd, gP


def _P(image, K, T, K_src):
    from ..reproject import projection_matrix
    return projection_matrix(K, T, K_src).expand(image.shape[0], 3, 4)


def reproject_fwd(image, depth, K, T, K_src, with_mask, border):
    return _kernel_forward(image, depth, _P(image, K, T, K_src), with_mask, border)


def reproject_bwd(grad, image, depth, K, T, K_src, border, need_image, need_depth, need_K, need_T,
                  need_K_src):
    from ..reproject import camera_grads
    need_K_src = need_K_src and K_src is not None
    need_P = need_K or need_T or need_K_src
    gi, gd, gP = _kernel_backward(grad, image, depth, _P(image, K, T, K_src), border, need_image,
                                  need_depth, need_P)
    gK, gT, gKs = camera_grads(gP, K, T, K_src, need_K, need_T, need_K_src)
    return gi, gd, gK, gT, gKs
