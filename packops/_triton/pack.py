"""Triton kernels of pack3d / unpack3d, forward and backward.

Both ops are a Conv3d(1 -> d, 3x3x3, padding 1) over a packed volume U
[B, Cu, h, w] (channel axis = depth axis) giving V [B, d*Cu, h, w] with
channels o*Cu + c (csrc/include/packops/pack.h has the same index math):
  pack3d:   U is space-to-depth(x), gathered from x on load; V is the output.
  unpack3d: U is x; V is scattered to pixel_shuffle(V) on store.
One program owns BLOCK consecutive elements of V (forward) or U (grad_x);
the weight gradient is one program per (output o, chunk) that reduces a
[32, BLOCK] tile (27 taps, the bias, 4 unused rows) and writes per-chunk
partial sums, summed in a fixed order by the launcher (deterministic).

Imported lazily: under TRITON_INTERPRET=1 the kernels run on CPU tensors.
"""
import torch
import triton
import triton.language as tl

from ._launch import acc_type, contiguous, grad_buffer, interpreted, launch

BLOCK_GPU = 256
BLOCK_W_GPU = 64      # columns of the weight-gradient tile (32 x BLOCK_W)
MAX_CHUNKS_GPU = 512  # weight-gradient programs per output channel


@triton.jit
def _unpacked_offset(q, y, x, h, w, r):
    # packed (channel q, row y, col x) -> offset in the unpacked [Q/r^2, h*r, w*r] item
    c = q // (r * r)
    i = (q // r) % r
    j = q % r
    return (c * h * r + y * r + i) * (w * r) + x * r + j


@triton.jit
def _u_offset(c, y, x, Cu, h, w, r, UNPACK: tl.constexpr):
    # where U(c, y, x) lives in the op's input (clamped indices: masked lanes stay in bounds)
    c = tl.minimum(tl.maximum(c, 0), Cu - 1)
    y = tl.minimum(tl.maximum(y, 0), h - 1)
    x = tl.minimum(tl.maximum(x, 0), w - 1)
    if UNPACK:
        return (c * h + y) * w + x
    else:
        return _unpacked_offset(c, y, x, h, w, r)


@triton.jit
def _v_offset(q, y, x, dCu, h, w, r, UNPACK: tl.constexpr):
    # where V(q, y, x) lives in the op's output (and its gradient)
    q = tl.minimum(tl.maximum(q, 0), dCu - 1)
    y = tl.minimum(tl.maximum(y, 0), h - 1)
    x = tl.minimum(tl.maximum(x, 0), w - 1)
    if UNPACK:
        return _unpacked_offset(q, y, x, h, w, r)
    else:
        return (q * h + y) * w + x


@triton.jit
def _split(idx, Cu, h, w):
    x = idx % w
    t = idx // w
    y = t % h
    t = t // h
    return t // Cu, t % Cu, y, x  # (o or batch-free channel group, c, y, x)


# ------------------------------------------------------------------ forward
@triton.jit
def _forward_kernel(in_ptr, w_ptr, b_ptr, out_ptr, Cu, h, w, r, d,
                    UNPACK: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    n_v = d * Cu * h * w
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n_v
    o, c, y, x = _split(idx, Cu, h, w)
    o = tl.minimum(o, d - 1)
    batch = tl.program_id(1).to(tl.int64)
    in_base = in_ptr + batch * (Cu * h * w)
    acc = tl.load(b_ptr + o, mask=mask, other=0.0).to(ACC)
    for i in tl.static_range(3):
        cc = c + (i - 1)
        for j in tl.static_range(3):
            yy = y + (j - 1)
            for l in tl.static_range(3):
                xx = x + (l - 1)
                ok = mask & (cc >= 0) & (cc < Cu) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                u = tl.load(in_base + _u_offset(cc, yy, xx, Cu, h, w, r, UNPACK), mask=ok,
                            other=0.0).to(ACC)
                wv = tl.load(w_ptr + o * 27 + (i * 9 + j * 3 + l), mask=mask, other=0.0).to(ACC)
                acc += wv * u
    off = _v_offset(o * Cu + c, y, x, d * Cu, h, w, r, UNPACK)
    tl.store(out_ptr + batch * n_v + off, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------ grad of input
@triton.jit
def _grad_input_kernel(g_ptr, w_ptr, gin_ptr, Cu, h, w, r, d,
                       UNPACK: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    # dL/dU(c, y, x) = sum_{o,i,j,l} w[o,i,j,l] * dL/dV(o*Cu + c-i+1, y-j+1, x-l+1)
    n_u = Cu * h * w
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n_u
    _, c, y, x = _split(idx, Cu, h, w)
    batch = tl.program_id(1).to(tl.int64)
    g_base = g_ptr + batch * (d * n_u)
    acc = tl.zeros([BLOCK], ACC)
    for o in range(d):
        for i in tl.static_range(3):
            cc = c - (i - 1)
            for j in tl.static_range(3):
                yy = y - (j - 1)
                for l in tl.static_range(3):
                    xx = x - (l - 1)
                    ok = mask & (cc >= 0) & (cc < Cu) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                    g = tl.load(g_base + _v_offset(o * Cu + cc, yy, xx, d * Cu, h, w, r, UNPACK),
                                mask=ok, other=0.0).to(ACC)
                    wv = tl.load(w_ptr + o * 27 + (i * 9 + j * 3 + l)).to(ACC)
                    acc += wv * g
    off = _u_offset(c, y, x, Cu, h, w, r, UNPACK)
    tl.store(gin_ptr + batch * n_u + off, acc.to(gin_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------ grad of weight and bias
@triton.jit
def _grad_weight_kernel(g_ptr, in_ptr, part_ptr, B, Cu, h, w, r, d, n_chunks,
                        UNPACK: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    # Program (o, chunk): rows t < 27 of the tile sum dL/dV(o, c, y, x) * U(tap t
    # around (c, y, x)); row 27 sums dL/dV (the bias); rows 28..31 stay zero.
    o = tl.program_id(0)
    chunk = tl.program_id(1)
    n_u = Cu * h * w
    total = B * n_u
    t = tl.arange(0, 32)[:, None]
    ti = t // 9 - 1
    tj = (t // 3) % 3 - 1
    tl_ = t % 3 - 1
    acc = tl.zeros([32, BLOCK], ACC)
    for start in range(chunk * BLOCK, total, n_chunks * BLOCK):
        idx = start + tl.arange(0, BLOCK).to(tl.int64)
        mask = idx < total
        batch = idx // n_u
        _, c, y, x = _split(idx % n_u, Cu, h, w)
        g = tl.load(g_ptr + batch * (d * n_u) + _v_offset(o * Cu + c, y, x, d * Cu, h, w, r, UNPACK),
                    mask=mask, other=0.0).to(ACC)
        cc = c[None, :] + ti
        yy = y[None, :] + tj
        xx = x[None, :] + tl_
        ok = (mask[None, :] & (t < 27) & (cc >= 0) & (cc < Cu) & (yy >= 0) & (yy < h)
              & (xx >= 0) & (xx < w))
        u = tl.load(in_ptr + batch[None, :] * n_u + _u_offset(cc, yy, xx, Cu, h, w, r, UNPACK),
                    mask=ok, other=0.0).to(ACC)
        u = tl.where(t == 27, 1.0, u).to(ACC)
        acc += u * g[None, :]
    sums = tl.sum(acc, axis=1)
    tl.store(part_ptr + (o * n_chunks + chunk) * 32 + tl.arange(0, 32), sums)


# ---------------------------------------------------------------- launchers
# Named and shaped like the kernel ops (packops._library registers them as
# packops::<name>_triton with the C++ ops' schemas).
def _volume(x, r, unpack):
    B, C, H, W = x.shape
    if unpack:
        return B, C, H, W
    return B, C * r * r, H // r, W // r


def _block(x, n):
    return min(triton.next_power_of_2(max(n, 1)), 4096) if interpreted(x) else BLOCK_GPU


def _forward(x, weight, bias, r, unpack):
    """x: [B,C,H,W] -> pack: [B, d*r*r*C, H/r, W/r]; unpack: [B, d*C/(r*r), H*r, W*r]."""
    x, weight, bias = contiguous(x, weight, bias)
    d = weight.shape[0]
    B, Cu, h, w = _volume(x, r, unpack)
    _, C, H, W = x.shape
    shape = (B, d * C // (r * r), H * r, W * r) if unpack else (B, d * Cu, h, w)
    out = x.new_empty(shape)
    if out.numel() == 0:
        return out
    n_v = d * Cu * h * w
    block = _block(x, n_v)
    launch(_forward_kernel, (triton.cdiv(n_v, block), B), x, x, weight, bias, out, Cu, h, w, r, d,
           UNPACK=unpack, BLOCK=block, ACC=acc_type(x.dtype))
    return out


def _backward(grad, x, weight, r, unpack, need_x, need_w, need_b):
    """grad: the forward output's shape -> (grad_x, grad_weight, grad_bias), empty if not needed."""
    grad, x, weight = contiguous(grad, x, weight)
    d = weight.shape[0]
    B, Cu, h, w = _volume(x, r, unpack)
    gx = grad_buffer(need_x, x)
    gw, gb = grad_buffer(need_w, weight, zero=True), grad_buffer(need_b, weight[:, 0, 0, 0, 0], zero=True)
    if grad.numel() == 0:
        return gx.zero_(), gw, gb
    acc = acc_type(x.dtype)
    n_u = Cu * h * w
    if need_x:
        block = _block(x, n_u)
        launch(_grad_input_kernel, (triton.cdiv(n_u, block), B), x, grad, weight, gx, Cu, h, w,
               r, d, UNPACK=unpack, BLOCK=block, ACC=acc)
    if need_w or need_b:
        total = B * n_u
        block = min(triton.next_power_of_2(total), 1024) if interpreted(x) else BLOCK_W_GPU
        n_chunks = min(triton.cdiv(total, block), 2 if interpreted(x) else MAX_CHUNKS_GPU)
        part_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        part = torch.empty((d, n_chunks, 32), device=x.device, dtype=part_dtype)
        launch(_grad_weight_kernel, (d, n_chunks), x, grad, x, part, B, Cu, h, w, r, d,
               n_chunks, UNPACK=unpack, BLOCK=block, ACC=acc)
        sums = part.sum(1)  # fixed-order reduction over chunks
        if need_w:
            gw = sums[:, :27].to(weight.dtype).reshape(weight.shape).clone()
        if need_b:
            gb = sums[:, 27].to(weight.dtype).clone()  # clone: outputs may not alias
    return gx, gw, gb


def pack3d_fwd(x, weight, bias, r):
    return _forward(x, weight, bias, r, False)


def pack3d_bwd(grad, x, weight, r, need_x, need_weight, need_bias):
    return _backward(grad, x, weight, r, False, need_x, need_weight, need_bias)


def unpack3d_fwd(x, weight, bias, r):
    return _forward(x, weight, bias, r, True)


def unpack3d_bwd(grad, x, weight, r, need_x, need_weight, need_bias):
    return _backward(grad, x, weight, r, True, need_x, need_weight, need_bias)
