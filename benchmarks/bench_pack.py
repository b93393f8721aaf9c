"""Cases for packops.pack3d, unpack3d, pack_conv and the PackNet layers built
on them (PackLayerConv3d: pack_conv + GroupNorm + ELU; UnpackLayerConv3d:
Conv2D + unpack3d), at PackNet01's real layer shapes for a 192x640 input:

  pack1    x [B, 64, 192, 640], k=5      pack3    x [B, 128, 48, 160], k=3
  unpack1  64 -> 64 ch at 96x320, k=3    unpack3  256 -> 128 ch at 24x80, k=3

d = 8 (the modules' default, as in the issue). B = 4 on CUDA; on CPU B = 1,
because the reference pack1 layer alone takes several seconds per fwd+bwd on
2 cores. float32, and bfloat16 on CUDA (the CPU kernels are float32/float64).
"""
import torch
import torch.nn.functional as F

import packops

from .harness import MODES, Case

OPS = ("pack3d", "unpack3d", "pack_conv", "PackLayerConv3d", "UnpackLayerConv3d")
# results file of each op: benchmarks/results/<device>/<suite>.md
SUITES = {"pack3d": "pack", "unpack3d": "pack", "pack_conv": "pack",
          "PackLayerConv3d": "pack-layer", "UnpackLayerConv3d": "pack-layer"}
D = 8
# name: (C, H, W, k) of the layer's input
PACK = {"pack1": (64, 192, 640, 5), "pack3": (128, 48, 160, 3)}
# name: (Cin, Cout, H, W, k) of the unpacking layer's input
UNPACK = {"unpack1": (64, 64, 96, 320, 3), "unpack3": (256, 128, 24, 80, 3)}
QUICK_PACK = {"pack-quick": (16, 16, 32, 5)}
QUICK_UNPACK = {"unpack-quick": (32, 32, 8, 16, 3)}


# ------------------------------------------------------- layer functions
def pack_layer(x, w3, b3, w2, b2, gn_w, gn_b):
    """PackLayerConv3d.forward as a function of its parameters."""
    return F.elu(F.group_norm(packops.pack_conv(x, w3, b3, w2, b2), 16, gn_w, gn_b))


def pack_layer_reference(x, w3, b3, w2, b2, gn_w, gn_b):
    return F.elu(F.group_norm(packops.pack_conv_reference(x, w3, b3, w2, b2), 16, gn_w, gn_b))


def _unpack_conv(x, wc, bc, gn_w, gn_b):
    k = wc.shape[-1]
    return F.elu(F.group_norm(F.conv2d(x, wc, bc, padding=k // 2), 16, gn_w, gn_b))


def unpack_layer(x, wc, bc, gn_w, gn_b, w3, b3):
    """UnpackLayerConv3d.forward as a function of its parameters."""
    return packops.unpack3d(_unpack_conv(x, wc, bc, gn_w, gn_b), w3, b3)


def unpack_layer_reference(x, wc, bc, gn_w, gn_b, w3, b3):
    return packops.unpack3d_reference(_unpack_conv(x, wc, bc, gn_w, gn_b), w3, b3)


# ------------------------------------------------------------------ inputs
def _maker(shapes, dtype, device, seed=0):
    """() -> tensors, made on CPU from a seed (same values for every provider)."""
    def make():
        g = torch.Generator().manual_seed(seed)
        out = []
        for shape, scale in shapes:
            out.append((torch.randn(shape, generator=g) * scale).to(device, dtype))
        return tuple(out)
    return make


def _conv3d(d=D):
    return [((d, 1, 3, 3, 3), 0.3), ((d,), 0.1)]


def _pack_inputs(op, B, C, H, W, k):
    cin = D * 4 * C
    x = [((B, C, H, W), 1.0)]
    if op == "pack3d":
        return x + _conv3d()
    w2 = [((C, cin, k, k), (1.0 / (cin * k * k)) ** 0.5), ((C,), 0.1)]
    if op == "pack_conv":
        return x + _conv3d() + w2
    return x + _conv3d() + w2 + [((C,), 1.0), ((C,), 0.1)]  # + GroupNorm weight, bias


def _unpack_inputs(op, B, cin, cout, H, W, k):
    cmid = cout * 4 // D
    if op == "unpack3d":
        return [((B, cmid, H, W), 1.0)] + _conv3d()
    return ([((B, cin, H, W), 1.0), ((cmid, cin, k, k), (1.0 / (cin * k * k)) ** 0.5),
             ((cmid,), 0.1), ((cmid,), 1.0), ((cmid,), 0.1)] + _conv3d())


_FNS = {
    "pack3d": (packops.pack3d, packops.pack3d_reference),
    "unpack3d": (packops.unpack3d, packops.unpack3d_reference),
    "pack_conv": (packops.pack_conv, packops.pack_conv_reference),
    "PackLayerConv3d": (pack_layer, pack_layer_reference),
    "UnpackLayerConv3d": (unpack_layer, unpack_layer_reference),
}


def _nbytes(shapes, out_numel, mode, elem):
    """Least traffic: read the inputs and write the output (fwd); fwd+bwd adds
    reading the output gradient and the inputs again and writing every
    input's gradient. Intermediates (the 3D conv output) are not counted:
    not materialising them is the point."""
    n_in = sum(torch.Size(s).numel() for s, _ in shapes)
    fwd = n_in + out_numel
    return elem * (fwd if mode == "fwd" else fwd + out_numel + 2 * n_in)


def cases(device, quick=False, ops=OPS):
    """Every (op, shape, dtype, mode) to benchmark on `device` (torch.device)."""
    dtypes = (torch.float32,) + ((torch.bfloat16,) if device.type == "cuda" else ())
    B = 1 if quick else (4 if device.type == "cuda" else 1)
    packs = QUICK_PACK if quick else PACK
    unpacks = QUICK_UNPACK if quick else UNPACK
    out = []
    for op in ops:
        public, reference = _FNS[op]
        if op in ("pack3d", "pack_conv", "PackLayerConv3d"):
            specs = []
            for C, H, W, k in packs.values():
                shapes = _pack_inputs(op, B, C, H, W, k)
                n_out = B * (D * 4 * C if op == "pack3d" else C) * (H // 2) * (W // 2)
                specs.append((shapes, n_out))
        else:
            specs = []
            for cin, cout, H, W, k in unpacks.values():
                shapes = _unpack_inputs(op, B, cin, cout, H, W, k)
                specs.append((shapes, B * cout * 4 * H * W))
        for shapes, n_out in specs:
            for dtype in dtypes:
                elem = torch.empty((), dtype=dtype).element_size()
                for mode in MODES:
                    out.append(Case(op=op, public=public, reference=reference,
                                    make_inputs=_maker(shapes, dtype, device),
                                    shape=shapes[0][0], dtype=dtype, mode=mode,
                                    bytes=_nbytes(shapes, n_out, mode, elem),
                                    suite=SUITES[op]))
    return out
