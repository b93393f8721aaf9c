"""Packing and unpacking (PackNet-SfM): reference, backends, registration, public ops.

pack3d(x, weight, bias, r)          space-to-depth + Conv3d(1 -> d), [B, d*r*r*C, H/r, W/r]
unpack3d(x, weight, bias, r)        Conv3d(1 -> d) + pixel shuffle, [B, d*C/(r*r), H*r, W*r]
pack_conv(x, w3, b3, w2, b2, r)     conv2d(pack3d(x), w2, b2, zero padding k//2), [B, Cout, H/r, W/r]
as docs/design.md defines them. Backends:
  reference  the original layer's sequence of plain PyTorch ops (autograd by PyTorch)
  cpu, cuda  packops::pack3d_fwd/_bwd, packops::unpack3d_fwd/_bwd (csrc/ops/pack.cpp)
  triton     packops::*_triton: packops/_triton/pack.py, the same schemas
pack3d and unpack3d are one fused kernel forward and one backward, each a
registered op with a fake implementation and registered autograd
(packops/_library.py).

pack_conv is composed (not a registered op of its own): both convs are linear,
so away from the border conv2d(conv3d(u), w2) is ONE conv over u with a
(k+2)x(k+2) kernel W_eff = w2 composed with w3 (a conv_transpose3d of w2 by
w3, tiny) plus a constant bias. That conv runs over u = space_to_depth(x)
(r*r*C channels, stride 1: the polyphase form of a (k+2)r x (k+2)r stride-r
conv over x, which oneDNN ran 1.6x (PackNet01 pack1) to 2.7x (PackNetTiny
pack1) slower, forward + backward, on the 2-core CPU), padded so that it
yields every output. Near the border the layer zero-pads the pack3d output,
where the folded conv sees conv3d(u) + b3 continued outside the image; the
difference is the conv of w2 with that continuation, which is b3 everywhere
outside plus, one step out only, a linear term of u's edge rows and columns.
Both parts are thin convs subtracted from the border (exact, no strips of
the big tensor). Autograd is PyTorch's through these pieces, so neither the
forward nor the backward ever holds the d*r*r*C-channel tensor, and the
main conv does k^2 d / (k+2)^2 fewer multiply-adds than the original 2D conv
(pack1: 4x, k=3: 7x). Being PyTorch ops only, this route also has second
derivatives; the direct route (small shapes) runs the pack3d kernel, which
has none.
"""
import contextlib
import threading

import torch
import torch.nn.functional as F

from . import _checks, _dispatch, _library


# ---------------------------------------------------------------- reference
def _space_to_depth(x, r):
    """F.pixel_unshuffle(x, r) (PackNet's packing), written out because
    pixel_unshuffle returns the input's shape for an empty batch."""
    B, C, H, W = x.shape
    return (x.reshape(B, C, H // r, r, W // r, r).permute(0, 1, 3, 5, 2, 4)
            .reshape(B, C * r * r, H // r, W // r))


def pack3d_reference(x, weight, bias, r=2):
    """x: [B,C,H,W] -> [B, d*r*r*C, H/r, W/r]: PackNet's packing + Conv3d + view."""
    u = _space_to_depth(x, r).unsqueeze(1)            # [B,1,r*r*C,H/r,W/r]
    v = F.conv3d(u, weight, bias, padding=1)          # [B,d,r*r*C,H/r,W/r]
    b, d, c, h, w = v.shape
    return v.reshape(b, d * c, h, w)


def _depth_to_space(v, r):
    """F.pixel_shuffle(v, r) (PackNet's unpacking), written out because
    pixel_shuffle's backward fails for an empty batch."""
    B, C, h, w = v.shape
    c = C // (r * r)
    return (v.reshape(B, c, r, r, h, w).permute(0, 1, 4, 2, 5, 3)
            .reshape(B, c, h * r, w * r))


def unpack3d_reference(x, weight, bias, r=2):
    """x: [B,C,H,W] -> [B, d*C/(r*r), H*r, W*r]: Conv3d + view + PixelShuffle."""
    v = F.conv3d(x.unsqueeze(1), weight, bias, padding=1)  # [B,d,C,H,W]
    b, d, c, h, w = v.shape
    return _depth_to_space(v.reshape(b, d * c, h, w), r)


def pack_conv_reference(x, w3, b3, w2, b2, r=2):
    """x: [B,C,H,W] -> [B, Cout, H/r, W/r]: pack3d, then conv2d with zero padding k//2."""
    k = w2.shape[-1]
    return F.conv2d(pack3d_reference(x, w3, b3, r), w2, b2, padding=k // 2)


# ------------------------------------------------ fused op registration
def _pack_fake(x, weight, bias, r):
    B, C, H, W = x.shape
    return x.new_empty((B, weight.shape[0] * r * r * C, H // r, W // r))


def _unpack_fake(x, weight, bias, r):
    B, C, H, W = x.shape
    return x.new_empty((B, weight.shape[0] * C // (r * r), H * r, W * r))


def _conv3d_bwd_fake(grad, x, weight, r, need_x, need_weight, need_bias):
    # bias is not an argument of the backward: its gradient is [d]
    return (x.new_empty(x.shape) if need_x else x.new_empty(0),
            weight.new_empty(weight.shape) if need_weight else weight.new_empty(0),
            weight.new_empty(weight.shape[0]) if need_bias else weight.new_empty(0))


def _conv3d_op(name, fake):
    return _library.fused_op(_library.FusedOp(
        fwd=f"{name}_fwd(Tensor x, Tensor weight, Tensor bias, int r) -> Tensor",
        bwd=f"{name}_bwd(Tensor grad, Tensor x, Tensor weight, int r, bool need_x, "
            "bool need_weight, bool need_bias) -> (Tensor, Tensor, Tensor)",
        saved=("x", "weight"), params=("r",), grads=("x", "weight", "bias"), triton="pack"),
        fake, _conv3d_bwd_fake)


# x: [B,C,H,W], weight: [d,1,3,3,3], bias: [d] -> [B, d*r*r*C, H/r, W/r]
PACK3D = _conv3d_op("pack3d", _pack_fake)
# x: [B,C,H,W] -> [B, d*C/(r*r), H*r, W*r]
UNPACK3D = _conv3d_op("unpack3d", _unpack_fake)


# ------------------------------------------------------------ pack_conv route
def _folded_weights(w3, b3, w2):
    """(W_eff [Cout, Cu, k+2, k+2], b_eff [Cout]) with, away from the border,
    conv2d(u, W_eff, b_eff, padding=1) == conv2d(conv3d(u, w3, b3), w2) for
    u = space_to_depth(x) of Cu = r*r*C channels.

    W_eff[co, c', ey, ex] = sum_{o,i,j,l} w3[o,i,j,l] w2[co, o*Cu + c'-i+1, ey-j, ex-l]
    is conv_transpose3d of w2 (as Cout volumes of d channels over (Cu, k, k)) by
    w3, padded by 1 along the channel (depth) axis only.
    """
    Cout, _, k, _ = w2.shape
    d = w3.shape[0]
    Cu = w2.shape[1] // d
    w2v = w2.reshape(Cout, d, Cu, k, k)
    w_eff = F.conv_transpose3d(w2v, w3, padding=(1, 0, 0))  # [Cout, 1, Cu, K, K]
    # v carries b3[o] on every channel o*Cu + c: its share of every w2 tap
    b_eff = (w2v.sum((2, 3, 4)) * b3).sum(1)
    return w_eff.reshape(Cout, Cu, k + 2, k + 2), b_eff


# Folding w2 with w3 costs about as much as the direct conv over a few
# thousand output pixels, whatever the batch (it scales with the weights, not
# the activations). Below this many output pixels (B*h*w) the direct route
# (the fused pack3d kernel, then conv2d) is faster, and the d-times-larger
# tensor it materialises is small there. Per device type (others: "cpu").
# Measured fwd+bwd on the 2-core CPU: 768 px (PackNetTiny pack3, batch 4)
# direct 33 ms vs folded 51; 1920 px (PackNet01 pack3 at 192x640) direct 1461
# vs folded 1201; 3072 px (PackNetTiny pack2) direct 42 vs folded 28. On the
# H200 (benchmarks/results/h200/pack-routes.md, PackNet01 at batch 4): folded
# won at 122880 px (pack1: 3.2x the reference fwd+bwd in float32, 5.5x in
# bfloat16) and 30720 px (pack2: 1.4x, 2.0x) and lost at 7680 px and below
# (pack3: 0.22x forward; pack5: 0.03x, where folding 75M weights through
# cuDNN's conv_transpose3d took 70 ms). Tests set them to 0 to exercise the
# folded route on small shapes.
FOLD_MIN_PIXELS = {"cpu": 1536, "cuda": 16384}


def _ring_term(edge, w3_tap, pad_c):
    """The linear part of the pack3d output just outside one image edge.

    edge: [B, Cu, n], u's edge row (or column), zero-padded along the edge by
    the caller; w3_tap: [d, 1, 3, 3], w3's taps over (channel, along the edge)
    that reach the edge from one step outside. Returns [B, d*Cu, n-2]: the
    conv over (channel, position), zero padding pad_c along the channels,
    viewed as pack3d's channels o*Cu + c.
    """
    B, Cu, n = edge.shape
    v = F.conv2d(edge.reshape(B, 1, Cu, n), w3_tap, padding=(pad_c, 0))  # [B, d, Cu, n-2]
    return v.reshape(B, v.shape[1] * Cu, v.shape[-1])


# pack_conv's route: "auto" (route_for below) unless a use_route block asks
# for one of ROUTES (benchmarks and tests do), per thread like use_backend
ROUTES = ("direct", "recompute", "folded")
_route = threading.local()


@contextlib.contextmanager
def use_route(route):
    """`with packops.pack.use_route("recompute"): ...` makes every pack_conv
    call on a fused backend in this thread take `route` (one of ROUTES, or
    "auto") where the shape allows it (route_for)."""
    if route != "auto" and route not in ROUTES:
        raise ValueError(f"packops.pack.use_route: route must be 'auto' or one of {ROUTES}, "
                         f"got {route!r}")
    old = getattr(_route, "name", "auto")
    _route.name = route
    try:
        yield
    finally:
        _route.name = old


def route_for(x, w2, r):
    """The route pack_conv takes on a fused backend for x [B,C,H,W] and w2:
    "direct" (the pack3d kernel, then conv2d; the d*r*r*C-channel tensor is
    stored for the backward), "recompute" (the same, storing only the inputs
    and recomputing that tensor in the backward) or "folded" (one conv over
    space_to_depth(x) with the folded weights and exact border terms: that
    tensor is never made)."""
    route = getattr(_route, "name", "auto")
    h, w = x.shape[2] // r, x.shape[3] // r
    p = w2.shape[-1] // 2
    if h - 2 * p < 1 or w - 2 * p < 1:
        return "direct" if route in ("auto", "folded") else route  # no interior to fold over
    if route != "auto":
        return route
    if x.shape[0] * h * w < FOLD_MIN_PIXELS.get(_dispatch.device_type(x), FOLD_MIN_PIXELS["cpu"]):
        return "direct"  # too small for the folding to pay
    return "folded"


class _PackConvRecompute(torch.autograd.Function):
    """conv2d(pack3d(x)) that keeps only its inputs for the backward: the
    d*r*r*C-channel tensor lives inside the forward and, made again, inside
    the backward, never between them."""

    @staticmethod
    def forward(ctx, x, w3, b3, w2, b2, r, backend):
        v = _library.kernel("pack3d_fwd", backend)(x, w3, b3, r)
        ctx.save_for_backward(x, w3, b3, w2)
        ctx.r, ctx.backend = r, backend
        return F.conv2d(v, w2, b2, padding=w2.shape[-1] // 2)

    @staticmethod
    def backward(ctx, g):
        x, w3, b3, w2 = ctx.saved_tensors
        r, p = ctx.r, w2.shape[-1] // 2
        need_x, need_w3, need_b3, need_w2, need_b2 = ctx.needs_input_grad[:5]
        need_v = need_x or need_w3 or need_b3
        v = _library.kernel("pack3d_fwd", ctx.backend)(x, w3, b3, r)
        gv, gw2, gb2 = torch.ops.aten.convolution_backward(
            g.contiguous(), v, w2, [w2.shape[0]], [1, 1], [p, p], [1, 1], False, [0, 0], 1,
            [need_v, need_w2, need_b2])
        del v
        gx = gw3 = gb3 = None
        if need_v:
            gx, gw3, gb3 = _library.kernel("pack3d_bwd", ctx.backend)(
                gv, x, w3, r, need_x, need_w3, need_b3)
        return (gx if need_x else None, gw3 if need_w3 else None, gb3 if need_b3 else None,
                gw2 if need_w2 else None, gb2 if need_b2 else None, None, None)


def _pack_conv_fused(x, w3, b3, w2, b2, r, backend):
    route = route_for(x, w2, r)
    p = w2.shape[-1] // 2
    if route == "direct":
        return F.conv2d(_library.kernel("pack3d_fwd", backend)(x, w3, b3, r), w2, b2, padding=p)
    if route == "recompute":
        return _PackConvRecompute.apply(x, w3, b3, w2, b2, r, backend)
    h, w = x.shape[2] // r, x.shape[3] // r
    if x.dtype in (torch.float16, torch.bfloat16):
        # fold in float32: the folded weights sum k^2 d products per tap, and
        # their gradient flows back to w2 and w3 through the same sums
        w_eff, b_eff = (t.to(x.dtype) for t in _folded_weights(w3.float(), b3.float(), w2.float()))
    else:
        w_eff, b_eff = _folded_weights(w3, b3, w2)
    if b2 is not None:
        b_eff = b_eff + b2
    u = _space_to_depth(x, r)
    # conv2d(v', w2) at every output, v' = conv3d(u zero-extended) + b3 over the plane
    out = F.conv2d(u, w_eff, b_eff, padding=p + 1)
    if p == 0:
        return out
    # The layer zero-pads v instead: subtract conv2d(v' outside the image, w2).
    # Outside, v' is b3 everywhere plus, one step out only, a linear term of
    # u's edge row/column (the w3 taps that reach in). The constant part:
    Cout, d, Cu, k = w2.shape[0], w3.shape[0], u.shape[1], w2.shape[-1]
    wb = (w2.reshape(Cout, d, Cu, k, k).sum(2) * b3.reshape(1, d, 1, 1)).sum(1, keepdim=True)
    out = out - F.conv2d(_ring(h, w, p, x.dtype, x.device), wb)
    # The linear part: rows -1 and h over columns -p-1 .. w+p (corners
    # included, each once), columns -1 and w over rows 0 .. h-1. Output row
    # e < p reads v row -1 with tap ky = p-1-e: one conv of w2's first p tap
    # rows over that row between p-1 zero rows each side (the last p tap
    # rows for row h; the same for the columns).
    top = _ring_term(F.pad(u[:, :, 0], (p + 1, p + 1)), w3[:, :, :, 2], 1)
    bottom = _ring_term(F.pad(u[:, :, h - 1], (p + 1, p + 1)), w3[:, :, :, 0], 1)
    left = F.pad(_ring_term(F.pad(u[:, :, :, 0], (1, 1)), w3[:, :, :, :, 2], 1), (p, p))
    right = F.pad(_ring_term(F.pad(u[:, :, :, w - 1], (1, 1)), w3[:, :, :, :, 0], 1), (p, p))
    z = (p - 1, p - 1)
    return _SubtractRing.apply(
        out, p,
        F.conv2d(F.pad(top.unsqueeze(2), (0, 0) + z), w2[:, :, :p]),
        F.conv2d(F.pad(bottom.unsqueeze(2), (0, 0) + z), w2[:, :, p + 1:]),
        F.conv2d(F.pad(left.unsqueeze(3), z), w2[..., :p]),
        F.conv2d(F.pad(right.unsqueeze(3), z), w2[..., p + 1:]))


_rings = {}  # (h, w, p, dtype, device) -> the ring mask, made once per shape (eager calls)


def _ring(h, w, p, dtype, device):
    """[1, 1, h+2p, w+2p]: 1 on the p-wide frame around an h x w image, 0
    inside (read only). Cached: building it is three launches per call."""
    key = (h, w, p, dtype, device)
    ring = None if torch.compiler.is_compiling() else _rings.get(key)
    if ring is None:
        ring = torch.ones((1, 1, h + 2 * p, w + 2 * p), dtype=dtype, device=device)
        ring[:, :, p:p + h, p:p + w] = 0
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        if not (torch.compiler.is_compiling() or capturing):  # made inside a graph: its pool
            if len(_rings) >= 64:  # a few shapes per network; never grows without bound
                _rings.clear()
            _rings[key] = ring
    return ring


class _SubtractRing(torch.autograd.Function):
    """out minus thin border terms: top/bottom [B, Cout, p, w] from rows 0 and
    h-p, left/right [B, Cout, h, p] from columns 0 and w-p. The backward hands
    out views of the incoming gradient (no full-size zero tensors, as slicing
    and concatenation would make)."""

    @staticmethod
    def forward(ctx, out, p, top, bottom, left, right):
        ctx.p = p
        res = out.clone()
        res[:, :, :p] -= top
        res[:, :, -p:] -= bottom
        res[..., :p] -= left
        res[..., -p:] -= right
        return res

    @staticmethod
    def backward(ctx, g):
        p = ctx.p
        return g, None, -g[:, :, :p], -g[:, :, -p:], -g[..., :p], -g[..., -p:]


# ------------------------------------------------------------- public ops
def _check_conv3d(op, x, weight, bias, wname="weight", bname="bias"):
    _checks.tensor(op, "x", x, dim=4)
    _checks.tensor(op, wname, weight)
    _checks.shape3d_weight(op, wname, weight)
    _checks.same_dtype_device(op, "x", x, wname, weight)
    if bias is None:
        return weight.new_zeros(weight.shape[0])
    _checks.tensor(op, bname, bias)
    _checks.bias_shape(op, bname, bias, weight.shape[0], wname, weight)
    _checks.same_dtype_device(op, "x", x, bname, bias)
    return bias


@_dispatch.autocast_to_lower_precision
def pack3d(x, weight, bias, r=2):
    """Space-to-depth by r + Conv3d(1 -> d, 3x3x3, padding 1) in one kernel.

    x: [B,C,H,W] (H, W divisible by r), weight: [d,1,3,3,3], bias: [d] or None
    -> [B, d*r*r*C, H/r, W/r], channel o*(r*r*C) + c*r*r + i*r + j (docs/design.md).
    Differentiable with respect to x, weight and bias.
    """
    r = _checks.positive_int("pack3d", "r", r)
    bias = _check_conv3d("pack3d", x, weight, bias)
    _checks.divisible_by_r("pack3d", "x", x, r)
    backend = _dispatch.resolve("pack3d", x)
    if backend == "reference":
        return pack3d_reference(x, weight, bias, r)
    return _library.kernel("pack3d_fwd", backend)(x, weight, bias, r)


@_dispatch.autocast_to_lower_precision
def unpack3d(x, weight, bias, r=2):
    """Conv3d(1 -> d, 3x3x3, padding 1) + pixel shuffle by r in one kernel.

    x: [B,C,H,W] (d*C divisible by r*r), weight: [d,1,3,3,3], bias: [d] or None
    -> [B, d*C/(r*r), H*r, W*r]. Differentiable with respect to x, weight and bias.
    """
    r = _checks.positive_int("unpack3d", "r", r)
    bias = _check_conv3d("unpack3d", x, weight, bias)
    d, C = weight.shape[0], x.shape[1]
    if (d * C) % (r * r):
        raise ValueError(f"packops.unpack3d: d*C = {d}*{C} must be divisible by r*r = {r * r} "
                         f"(x {tuple(x.shape)}, weight {tuple(weight.shape)})")
    backend = _dispatch.resolve("unpack3d", x)
    if backend == "reference":
        return unpack3d_reference(x, weight, bias, r)
    return _library.kernel("unpack3d_fwd", backend)(x, weight, bias, r)


@_dispatch.autocast_to_lower_precision
def pack_conv(x, w3, b3, w2, b2, r=2):
    """The conv of PackNet's packing layer: conv2d(pack3d(x, w3, b3, r), w2, b2, padding=k//2).

    x: [B,C,H,W] (H, W divisible by r), w3: [d,1,3,3,3], b3: [d] or None,
    w2: [Cout, d*r*r*C, k, k] (k odd), b2: [Cout] or None -> [B, Cout, H/r, W/r].
    Fused backends never materialise the d*r*r*C-channel pack3d output at
    full size, forward or backward (module docstring). Gradients to all five.
    """
    op = "pack_conv"
    r = _checks.positive_int(op, "r", r)
    b3 = _check_conv3d(op, x, w3, b3, "w3", "b3")
    _checks.divisible_by_r(op, "x", x, r)
    _checks.tensor(op, "w2", w2, dim=4)
    _checks.same_dtype_device(op, "x", x, "w2", w2)
    d, C = w3.shape[0], x.shape[1]
    Cout, cin, kh, kw = w2.shape
    if cin != d * r * r * C or kh != kw or kh % 2 == 0:
        raise ValueError(f"packops.pack_conv: w2 must be [Cout, d*r*r*C, k, k] = "
                         f"[Cout, {d * r * r * C}, k, k] with k odd (x {tuple(x.shape)}, "
                         f"w3 {tuple(w3.shape)}, r={r}), got shape {tuple(w2.shape)}")
    if b2 is not None:
        _checks.tensor(op, "b2", b2)
        _checks.bias_shape(op, "b2", b2, Cout, "w2", w2)
        _checks.same_dtype_device(op, "x", x, "b2", b2)
    backend = _dispatch.resolve(op, x)
    if backend == "reference":
        return pack_conv_reference(x, w3, b3, w2, b2, r)
    return _pack_conv_fused(x, w3, b3, w2, b2, r, backend)
