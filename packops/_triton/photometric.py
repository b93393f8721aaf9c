"""Triton kernels of ssim / photometric_loss, forward and backward.

Each program owns a BH x BW tile of output pixels and loops over the
channels, so the photometric loss (a channel mean) is reduced in registers and
written once. The math mirrors csrc/include/packops/ssim.h (read it for the
derivation). The backward recomputes the moments of the nine window centres
around each output pixel instead of storing coefficient maps: one pass, no
intermediate tensors, and the repeated taps come from cache, not DRAM.

Imported lazily: under TRITON_INTERPRET=1 (set before this import) the kernels
run on CPU tensors, which is how the CPU test suite exercises them.
"""
import triton
import triton.language as tl

from ._launch import acc_type, contiguous, grad_buffer, interpreted, launch, split_doubles

# GPU tile: 8 x 32 pixels per program
BLOCK_H, BLOCK_W = 8, 32


@triton.jit
def _reflect(i, n):
    # ReflectionPad2d(1): -1 -> 1, n -> n-2; then clamp, so that taps of a
    # centre outside the image (whose weight is 0) still never leave the plane.
    i = tl.where(i < 0, -i, i)
    i = tl.where(i >= n, 2 * (n - 1) - i, i)
    return tl.minimum(tl.maximum(i, 0), n - 1)


@triton.jit
def _adjoint_weight(q, o: tl.constexpr, n):
    # How often the reflected window centred at q + o hits q (ssim.h).
    p = q + o
    w = ((p >= 0) & (p < n)).to(tl.int32)
    if o == -1:
        w = w * (1 + (q == 1).to(tl.int32))
    if o == 1:
        w = w * (1 + (q == n - 2).to(tl.int32))
    return w


@triton.jit
def _moments(x_base, y_base, r, c, H, W, BH: tl.constexpr, BW: tl.constexpr,
             ACC: tl.constexpr):
    """Window means (mx, my, exx, eyy, exy), [BH,BW], of the reflected 3x3
    windows centred at rows r [BH,1] and columns c [1,BW], both in the image."""
    sx = tl.zeros([BH, BW], ACC)
    sy = tl.zeros([BH, BW], ACC)
    sxx = tl.zeros([BH, BW], ACC)
    syy = tl.zeros([BH, BW], ACC)
    sxy = tl.zeros([BH, BW], ACC)
    for dr in tl.static_range(3):
        row = _reflect(r + (dr - 1), H).to(tl.int64) * W
        for dc in tl.static_range(3):
            off = row + _reflect(c + (dc - 1), W)
            a = tl.load(x_base + off).to(ACC)
            b = tl.load(y_base + off).to(ACC)
            sx += a
            sy += b
            sxx += a * a
            syy += b * b
            sxy += a * b
    # divide by the exact literal 9.0: Triton makes float literals fp32, so a
    # precomputed 1/9 would round float64 results to ~1e-8
    return sx / 9.0, sy / 9.0, sxx / 9.0, syy / 9.0, sxy / 9.0


@triton.jit
def _ssim_value(mx, my, exx, eyy, exy, C1, C2):
    sx = exx - mx * mx
    sy = eyy - my * my
    sxy = exy - mx * my
    n = (2.0 * mx * my + C1) * (2.0 * sxy + C2)
    d = (mx * mx + my * my + C1) * (sx + sy + C2)
    return n / d


@triton.jit
def _ssim_backward(mx, my, exx, eyy, exy, C1, C2, gs):
    # Gradient of gs * ssim with respect to (mx, my, exx = eyy, exy); see ssim.h.
    sx = exx - mx * mx
    sy = eyy - my * my
    sxy = exy - mx * my
    n1 = 2.0 * mx * my + C1
    n2 = 2.0 * sxy + C2
    d1 = mx * mx + my * my + C1
    d2 = sx + sy + C2
    inv_d = 1.0 / (d1 * d2)
    s = n1 * n2 * inv_d
    g_n1 = gs * n2 * inv_d
    g_n2 = gs * n1 * inv_d
    g_d1 = -gs * s / d1
    g_d2 = -gs * s / d2
    d_exy = 2.0 * g_n2
    d_mx = 2.0 * my * g_n1 + 2.0 * mx * g_d1 - 2.0 * mx * g_d2 - my * d_exy
    d_my = 2.0 * mx * g_n1 + 2.0 * my * g_d1 - 2.0 * my * g_d2 - mx * d_exy
    return d_mx, d_my, g_d2, d_exy


@triton.jit
def _photo_ssim_term(s):
    # clamp((1 - s) / 2, 0, 1), NaN-propagating like torch.clamp
    t = (1.0 - s) * 0.5
    return tl.where(t != t, t, tl.minimum(tl.maximum(t, 0.0), 1.0))


@triton.jit
def _scalar(hi, lo, ACC: tl.constexpr):
    # Triton passes Python floats as fp32; the launcher splits each double
    # parameter into hi + lo (_launch.split_doubles) so float64 kernels see it
    # to ~48 bits.
    return tl.cast(hi, ACC) + tl.cast(lo, ACC)


@triton.jit
def _setup(H, W, alpha_hi, alpha_lo, c1_hi, c1_lo, c2_hi, c2_lo, BH: tl.constexpr,
           BW: tl.constexpr, ACC: tl.constexpr):
    """What both kernels start from: the batch index, the tile's store mask,
    its rows [BH,1] and columns [1,BW] clamped into the image (lanes past the
    edge compute on a valid pixel and are not stored), their offsets in a
    plane, the plane size, and the scalars alpha, C1, C2 in ACC."""
    rows = tl.program_id(1) * BH + tl.arange(0, BH)[:, None]
    cols = tl.program_id(0) * BW + tl.arange(0, BW)[None, :]
    mask = (rows < H) & (cols < W)
    r_in = tl.minimum(rows, H - 1)
    c_in = tl.minimum(cols, W - 1)
    return (tl.program_id(2).to(tl.int64), mask, r_in, c_in, r_in.to(tl.int64) * W + c_in,
            H.to(tl.int64) * W, _scalar(alpha_hi, alpha_lo, ACC), _scalar(c1_hi, c1_lo, ACC),
            _scalar(c2_hi, c2_lo, ACC))


@triton.jit
def _sign(v):
    return (v > 0).to(v.dtype) - (v < 0).to(v.dtype)


# ------------------------------------------------------------------ forward
@triton.jit
def _forward_kernel(x_ptr, y_ptr, out_ptr, C, H, W, alpha_hi, alpha_lo, c1_hi, c1_lo,
                    c2_hi, c2_lo, PHOTO: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
                    ACC: tl.constexpr):
    b, mask, r_in, c_in, pix, plane, alpha, C1, C2 = _setup(
        H, W, alpha_hi, alpha_lo, c1_hi, c1_lo, c2_hi, c2_lo, BH, BW, ACC)
    acc = tl.zeros([BH, BW], ACC)
    for c in range(C):
        base = (b * C + c) * plane
        mx, my, exx, eyy, exy = _moments(x_ptr + base, y_ptr + base, r_in, c_in, H, W,
                                         BH, BW, ACC)
        s = _ssim_value(mx, my, exx, eyy, exy, C1, C2)
        if PHOTO:
            l1 = tl.abs(tl.load(x_ptr + base + pix).to(ACC) - tl.load(y_ptr + base + pix).to(ACC))
            acc += alpha * _photo_ssim_term(s) + (1.0 - alpha) * l1
        else:
            tl.store(out_ptr + base + pix, s.to(out_ptr.dtype.element_ty), mask=mask)
    if PHOTO:
        tl.store(out_ptr + b * plane + pix, (acc / C).to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------- backward
@triton.jit
def _backward_kernel(g_ptr, x_ptr, y_ptr, gx_ptr, gy_ptr, C, H, W, alpha_hi, alpha_lo,
                     c1_hi, c1_lo, c2_hi, c2_lo, PHOTO: tl.constexpr, NEED_X: tl.constexpr,
                     NEED_Y: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
                     ACC: tl.constexpr):
    b, mask, r_in, c_in, pix, plane, alpha, C1, C2 = _setup(
        H, W, alpha_hi, alpha_lo, c1_hi, c1_lo, c2_hi, c2_lo, BH, BW, ACC)
    for c in range(C):
        base = (b * C + c) * plane
        g_base = g_ptr + (b * plane if PHOTO else base)
        s_mx = tl.zeros([BH, BW], ACC)
        s_my = tl.zeros([BH, BW], ACC)
        s_e2 = tl.zeros([BH, BW], ACC)
        s_xy = tl.zeros([BH, BW], ACC)
        # ---- gather the coefficients of the nine window centres around q
        for oh in tl.static_range(-1, 2):
            w_row = _adjoint_weight(r_in, oh, H)
            p_h = tl.minimum(tl.maximum(r_in + oh, 0), H - 1)
            for ow in tl.static_range(-1, 2):
                wgt = w_row * _adjoint_weight(c_in, ow, W)
                p_w = tl.minimum(tl.maximum(c_in + ow, 0), W - 1)
                mx, my, exx, eyy, exy = _moments(x_ptr + base, y_ptr + base, p_h, p_w, H, W,
                                                 BH, BW, ACC)
                g = tl.load(g_base + p_h.to(tl.int64) * W + p_w).to(ACC)
                if PHOTO:
                    t = (1.0 - _ssim_value(mx, my, exx, eyy, exy, C1, C2)) * 0.5
                    gs = tl.where((t >= 0.0) & (t <= 1.0), -0.5 * alpha / C * g, 0.0)
                else:
                    gs = g
                d_mx, d_my, d_e2, d_xy = _ssim_backward(mx, my, exx, eyy, exy, C1, C2, gs)
                # where() rather than a multiply, so a NaN centre with weight 0
                # cannot leak into pixels the reference leaves finite
                wf = wgt.to(ACC)
                s_mx += tl.where(wgt > 0, wf * d_mx, 0.0)
                s_my += tl.where(wgt > 0, wf * d_my, 0.0)
                s_e2 += tl.where(wgt > 0, wf * d_e2, 0.0)
                s_xy += tl.where(wgt > 0, wf * d_xy, 0.0)
        # ---- gradient at q
        xv = tl.load(x_ptr + base + pix).to(ACC)
        yv = tl.load(y_ptr + base + pix).to(ACC)
        if PHOTO:
            l1 = tl.load(g_ptr + b * plane + pix).to(ACC) * ((1.0 - alpha) / C) * _sign(xv - yv)
        else:
            l1 = tl.zeros([BH, BW], ACC)
        if NEED_X:
            gx = (s_mx + 2.0 * xv * s_e2 + yv * s_xy) / 9.0 + l1
            tl.store(gx_ptr + base + pix, gx.to(gx_ptr.dtype.element_ty), mask=mask)
        if NEED_Y:
            gy = (s_my + 2.0 * yv * s_e2 + xv * s_xy) / 9.0 - l1
            tl.store(gy_ptr + base + pix, gy.to(gy_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------- launchers
# Named and shaped like the kernel ops (packops._library registers them as
# packops::<name>_triton with the C++ ops' schemas).
def _config(x):
    """Tile (BH, BW) and the launch grid; the interpreter gets the largest
    tile that fits the image."""
    B, _, H, W = x.shape
    if interpreted(x):
        bh, bw = min(triton.next_power_of_2(H), 16), min(triton.next_power_of_2(W), 64)
    else:
        bh, bw = BLOCK_H, BLOCK_W
    return bh, bw, (triton.cdiv(W, bw), triton.cdiv(H, bh), B)


def _forward(x, y, photo, alpha, C1, C2):
    """x, y: [B,C,H,W] -> [B,1,H,W] (photo) or [B,C,H,W] (ssim)."""
    x, y = contiguous(x, y)
    B, C, H, W = x.shape
    out = x.new_empty((B, 1, H, W) if photo else (B, C, H, W))
    if out.numel() == 0:
        return out
    bh, bw, grid = _config(x)
    launch(_forward_kernel, grid, x, x, y, out, C, H, W, *split_doubles(alpha, C1, C2),
           PHOTO=photo, BH=bh, BW=bw, ACC=acc_type(x.dtype))
    return out


def _backward(grad, x, y, photo, need_x, need_y, alpha, C1, C2):
    """grad: [B,1,H,W] (photo) or [B,C,H,W] -> (grad_x, grad_y), empty when not needed."""
    grad, x, y = contiguous(grad, x, y)
    B, C, H, W = x.shape
    gx, gy = grad_buffer(need_x, x), grad_buffer(need_y, y)
    if x.numel() == 0 or not (need_x or need_y):
        return gx, gy
    bh, bw, grid = _config(x)
    # a dummy pointer for an output that is skipped (its stores are compiled out)
    launch(_backward_kernel, grid, x, grad, x, y, gx if need_x else x, gy if need_y else y, C,
           H, W, *split_doubles(alpha, C1, C2), PHOTO=photo, NEED_X=need_x, NEED_Y=need_y,
           BH=bh, BW=bw, ACC=acc_type(x.dtype))
    return gx, gy


def ssim_fwd(x, y, C1, C2):
    return _forward(x, y, False, 0.0, C1, C2)


def ssim_bwd(grad, x, y, C1, C2, need_x, need_y):
    return _backward(grad, x, y, False, need_x, need_y, 0.0, C1, C2)


def photometric_fwd(pred, target, alpha, C1, C2):
    return _forward(pred, target, True, alpha, C1, C2)


def photometric_bwd(grad, pred, target, alpha, C1, C2, need_pred, need_target):
    return _backward(grad, pred, target, True, need_pred, need_target, alpha, C1, C2)
