"""Suites "pack", "pack-layer" and "pack-routes": packing at PackNet01's layer
shapes for a 192x640 image, d = 8 (the modules' default).

pack        pack3d, unpack3d, pack_conv per provider and mode, at pack1
            (x [B,64,192,640], k=5) and pack3 (x [B,128,48,160], k=3);
            unpack3d at unpack1 (64 -> 64 ch at 96x320) and unpack3 (256 -> 128
            at 24x80)
pack-layer  PackLayerConv3d (pack_conv + GroupNorm + ELU) and
            UnpackLayerConv3d (Conv2D + unpack3d) as functions of their parameters
pack-routes pack_conv's routes (packops.pack.ROUTES: direct, recompute,
            folded; on the fused backend auto picks) and the reference, per
            packing layer pack1-pack5 and dtype: what packops.pack.FOLD_MIN_PIXELS
            is set from. Metrics: peak MB of the call, held MB (what the
            forward leaves allocated for the backward: its activation memory,
            output included), and on the CPU the route's error against the
            float64 reference.

B = 4 on CUDA; 1 on the CPU (the reference pack1 layer alone takes seconds).
float32, and bfloat16 on CUDA (the CPU kernels are float32/float64).
float32 runs under torch's default cuDNN settings (TF32 convolutions on a GPU
that has them), as in training; --bench-cudnn-benchmark turns on cuDNN's autotuner.
"""
import contextlib
import math

import torch
import torch.nn.functional as F

import packops

from .cases import Case, Run, Skip, dtype_name, op_cases, op_step, shape_str, with_grad
from . import measure

D = 8
# name: (C, H, W, k) of a packing layer's input at 192x640
PACK = {"pack1": (64, 192, 640, 5), "pack2": (64, 96, 320, 3), "pack3": (128, 48, 160, 3),
        "pack4": (256, 24, 80, 3), "pack5": (512, 12, 40, 3)}
PACK_CASES = ("pack1", "pack3")
# name: (Cin, Cout, H, W, k) of an unpacking layer's input
UNPACK = {"unpack1": (64, 64, 96, 320, 3), "unpack3": (256, 128, 24, 80, 3)}
QUICK_PACK = {"pack-quick": (16, 16, 24, 3)}
QUICK_UNPACK = {"unpack-quick": (32, 32, 8, 16, 3)}


def pack_layer(x, w3, b3, w2, b2, gn_w, gn_b):
    """PackLayerConv3d.forward as a function of its parameters."""
    return F.elu(F.group_norm(packops.pack_conv(x, w3, b3, w2, b2), 16, gn_w, gn_b))


def pack_layer_reference(x, w3, b3, w2, b2, gn_w, gn_b):
    return F.elu(F.group_norm(packops.pack_conv_reference(x, w3, b3, w2, b2), 16, gn_w, gn_b))


def _unpack_conv(x, wc, bc, gn_w, gn_b):
    return F.elu(F.group_norm(F.conv2d(x, wc, bc, padding=wc.shape[-1] // 2), 16, gn_w, gn_b))


def unpack_layer(x, wc, bc, gn_w, gn_b, w3, b3):
    """UnpackLayerConv3d.forward as a function of its parameters."""
    return packops.unpack3d(_unpack_conv(x, wc, bc, gn_w, gn_b), w3, b3)


def unpack_layer_reference(x, wc, bc, gn_w, gn_b, w3, b3):
    return packops.unpack3d_reference(_unpack_conv(x, wc, bc, gn_w, gn_b), w3, b3)


def maker(shapes, dtype, device, seed=0):
    """() -> tensors of [(shape, scale)], made on the CPU from a seed."""
    def make():
        g = torch.Generator().manual_seed(seed)
        return tuple((torch.randn(s, generator=g) * a).to(device, dtype) for s, a in shapes)
    return make


def pack_shapes(op, B, C, H, W, k):
    cin = D * 4 * C
    x3 = [((B, C, H, W), 1.0), ((D, 1, 3, 3, 3), 0.3), ((D,), 0.1)]
    if op == "pack3d":
        return x3
    conv = x3 + [((C, cin, k, k), (1.0 / (cin * k * k)) ** 0.5), ((C,), 0.1)]
    return conv if op == "pack_conv" else conv + [((C,), 1.0), ((C,), 0.1)]


def unpack_shapes(op, B, cin, cout, H, W, k):
    cmid = cout * 4 // D
    if op == "unpack3d":
        return [((B, cmid, H, W), 1.0), ((D, 1, 3, 3, 3), 0.3), ((D,), 0.1)]
    return [((B, cin, H, W), 1.0), ((cmid, cin, k, k), (1.0 / (cin * k * k)) ** 0.5),
            ((cmid,), 0.1), ((cmid,), 1.0), ((cmid,), 0.1), ((D, 1, 3, 3, 3), 0.3), ((D,), 0.1)]


def _nbytes(shapes, out_numel, elem):
    """(fwd, bwd) least traffic: read the inputs, write the output; backward
    reads the output gradient and the inputs again and writes their
    gradients. The 3-D conv output is not counted: not making it is the point."""
    n_in = sum(math.prod(s) for s, _ in shapes)
    return elem * (n_in + out_numel), elem * (out_numel + 2 * n_in)


_FNS = {"pack3d": (packops.pack3d, packops.pack3d_reference, "pack"),
        "unpack3d": (packops.unpack3d, packops.unpack3d_reference, "pack"),
        "pack_conv": (packops.pack_conv, packops.pack_conv_reference, "pack"),
        "PackLayerConv3d": (pack_layer, pack_layer_reference, "pack-layer"),
        "UnpackLayerConv3d": (unpack_layer, unpack_layer_reference, "pack-layer")}


# ------------------------------------------------------------------ routes
@contextlib.contextmanager
def route(name):
    """pack_conv on one route for the block (packops.pack.use_route; an
    earlier packops, under benchmarks.compare, has the module global ROUTE)."""
    if hasattr(packops.pack, "use_route"):
        with packops.pack.use_route(name):
            yield
        return
    old, packops.pack.ROUTE = packops.pack.ROUTE, name
    try:
        yield
    finally:
        packops.pack.ROUTE = old


def _route_case(layer, C, H, W, k, B, dtype, mode, name):
    shape = (B, C, H, W)
    group = f"{layer}-{shape_str(shape)}-{dtype_name(dtype)}-{mode}"
    params = {"layer": layer, "shape": list(shape), "k": k, "dtype": dtype_name(dtype),
              "mode": mode}

    def setup(device):
        if name != "reference" and not any(
                i.available and device.type in i.devices
                for b, i in packops.backends().items() if b in ("cpu", "triton", "cuda")):
            raise Skip(f"no fused backend for {device.type} tensors: routes are theirs")
        make = maker(pack_shapes("pack_conv", *shape, k), dtype, device)
        fn = packops.pack_conv_reference if name == "reference" else packops.pack_conv
        context = contextlib.nullcontext if name == "reference" else lambda: route(name)
        inputs = with_grad(make(), mode)
        grad = torch.randn(B, C, H // 2, W // 2, generator=torch.Generator().manual_seed(1))
        with context():
            step = op_step(fn, inputs, mode, grad.to(device, dtype))

        def metrics(median_s, first):
            peak, _ = measure.memory(step, device)
            out = {"peak_mem_mb": peak / 1e6}
            if mode != "fwd":
                out["held_mb"] = measure.memory(lambda: fn(*inputs), device)[1] / 1e6
            if device.type == "cpu":  # the route against the float64 reference
                exact = [t.detach().double() for t in make()]
                ref = packops.pack_conv_reference(*exact)
                out["rel_err"] = float((fn(*exact) - ref).norm() / ref.norm())
            return out
        return Run(fn=step, metrics=metrics, context=context)
    return Case("pack-routes", group, name, params, setup)


def cases(device, quick=False):
    dtypes = (torch.float32,) + ((torch.bfloat16,) if device.type == "cuda" else ())
    B = 1 if quick or device.type == "cpu" else 4
    packs = QUICK_PACK if quick else {n: PACK[n] for n in PACK_CASES}
    unpacks = QUICK_UNPACK if quick else UNPACK
    out = []
    for op, (public, reference, suite) in _FNS.items():
        if op in ("pack3d", "pack_conv", "PackLayerConv3d"):
            specs = [(pack_shapes(op, B, C, H, W, k),
                      B * (D * 4 * C if op == "pack3d" else C) * (H // 2) * (W // 2))
                     for C, H, W, k in packs.values()]
        else:
            specs = [(unpack_shapes(op, B, *u), B * u[1] * 4 * u[2] * u[3])
                     for u in unpacks.values()]
        for shapes, n_out in specs:
            for dtype in dtypes:
                out += op_cases(suite, op, public, reference, maker(shapes, dtype, device),
                                shapes[0][0], dtype, _nbytes(shapes, n_out, dtype.itemsize))
    for layer, (C, H, W, k) in (QUICK_PACK if quick else PACK).items():
        for dtype in dtypes:
            for mode in ("fwd", "fwd+bwd"):
                out += [_route_case(layer, C, H, W, k, B, dtype, mode, r)
                        for r in ("reference",) + packops.pack.ROUTES]
    return out
