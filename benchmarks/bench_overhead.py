"""Suite "overhead": what one op call costs where compute is negligible.

Every op at a tiny size, fwd+bwd and forward alone under no_grad, on each
fused backend that serves the device against its native baseline: the
PyTorch ops a user would call instead, the same sizes, one process. The
table's "x native" is ours / native. The targets (issue 21, measured here,
never asserted): fwd+bwd at most 1.5x the baseline; group_norm_elu at most
its two native ops.

| op | shape | native baseline |
| --- | --- | --- |
| photometric_loss, ssim | 1x3x8x8 | F.avg_pool2d(pred, 3, 1) (one of the 3x3 means they compute) |
| group_norm_elu | 1x16x4x4, 16 groups | F.group_norm then F.elu |
| reproject | 1x3x8x8, grads to depth, pose | the same warp in PyTorch ops: back-projection, transform, projection and F.grid_sample (packops.reproject_reference), grads to depth, pose |
| pack3d | 1x2x8x8, d=4 | F.pixel_unshuffle then F.conv3d |
| unpack3d | 1x2x4x4, d=4 | F.conv3d then F.pixel_shuffle |
| pack_conv | 1x2x8x8, d=4, 3x3 to 2 ch | F.pixel_unshuffle, F.conv3d, F.conv2d |
"""
import contextlib
import functools

import torch
import torch.nn.functional as F

import packops

from .cases import Case, Run, Skip, op_step, shape_str, skip_reason, with_grad

R, D = 2, 4


def _pack3d_native(x, w3, b3):
    return F.conv3d(F.pixel_unshuffle(x, R).unsqueeze(1), w3, b3, padding=1).flatten(1, 2)


def _unpack3d_native(x, w3, b3):
    return F.pixel_shuffle(F.conv3d(x.unsqueeze(1), w3, b3, padding=1).flatten(1, 2), R)


def _pack_conv_native(x, w3, b3, w2, b2):
    return F.conv2d(_pack3d_native(x, w3, b3), w2, b2, padding=1)


def _camera():
    K = torch.tensor([[[6.0, 0, 3.5], [0, 6, 3.5], [0, 0, 1]]])
    T = torch.eye(4)[None].clone()
    T[0, :3, 3] = torch.tensor([0.02, -0.01, -0.5])
    return K, T


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# op: (shape, packops call, inputs, indices needing grad, baseline name, native call,
#      native inputs, their indices needing grad)
OPS = {
    "photometric_loss": ((1, 3, 8, 8), packops.photometric_loss,
                         lambda: (_rand(1, 3, 8, 8), _rand(1, 3, 8, 8, seed=1)), (0, 1),
                         "F.avg_pool2d", functools.partial(F.avg_pool2d, kernel_size=3, stride=1),
                         lambda: (_rand(1, 3, 8, 8),), (0,)),
    "ssim": ((1, 3, 8, 8), packops.ssim,
             lambda: (_rand(1, 3, 8, 8), _rand(1, 3, 8, 8, seed=1)), (0, 1),
             "F.avg_pool2d", functools.partial(F.avg_pool2d, kernel_size=3, stride=1),
             lambda: (_rand(1, 3, 8, 8),), (0,)),
    "group_norm_elu": ((1, 16, 4, 4), lambda x, w, b: packops.group_norm_elu(x, w, b, 16),
                       lambda: (_rand(1, 16, 4, 4), _rand(16) + 0.5, _rand(16)), (0, 1, 2),
                       "F.group_norm + F.elu", lambda x, w, b: F.elu(F.group_norm(x, 16, w, b)),
                       lambda: (_rand(1, 16, 4, 4), _rand(16) + 0.5, _rand(16)), (0, 1, 2)),
    "reproject": ((1, 3, 8, 8), packops.reproject,
                  lambda: (_rand(1, 3, 8, 8), 2 + _rand(1, 1, 8, 8)) + _camera(), (1, 3),
                  "geometry + F.grid_sample", packops.reproject_reference,
                  lambda: (_rand(1, 3, 8, 8), 2 + _rand(1, 1, 8, 8)) + _camera(), (1, 3)),
    "pack3d": ((1, 2, 8, 8), packops.pack3d,
               lambda: (_rand(1, 2, 8, 8), _rand(D, 1, 3, 3, 3), _rand(D)), (0, 1, 2),
               "F.pixel_unshuffle + F.conv3d", _pack3d_native,
               lambda: (_rand(1, 2, 8, 8), _rand(D, 1, 3, 3, 3), _rand(D)), (0, 1, 2)),
    "unpack3d": ((1, 2, 4, 4), packops.unpack3d,
                 lambda: (_rand(1, 2, 4, 4), _rand(D, 1, 3, 3, 3), _rand(D)), (0, 1, 2),
                 "F.conv3d + F.pixel_shuffle", _unpack3d_native,
                 lambda: (_rand(1, 2, 4, 4), _rand(D, 1, 3, 3, 3), _rand(D)), (0, 1, 2)),
    "pack_conv": ((1, 2, 8, 8), packops.pack_conv,
                  lambda: (_rand(1, 2, 8, 8), _rand(D, 1, 3, 3, 3), _rand(D),
                           _rand(2, D * 4 * 2, 3, 3) * 0.1, _rand(2)), (0, 1, 2, 3, 4),
                  "F.pixel_unshuffle + F.conv3d + F.conv2d", _pack_conv_native,
                  lambda: (_rand(1, 2, 8, 8), _rand(D, 1, 3, 3, 3), _rand(D),
                           _rand(2, D * 4 * 2, 3, 3) * 0.1, _rand(2)), (0, 1, 2, 3, 4)),
}


def _case(op, mode, provider, device):
    shape, ours, make, grads, baseline, native, make_native, native_grads = OPS[op]
    group = f"{op}-{shape_str(shape)}-{mode}"
    params = {"op": op, "shape": list(shape), "mode": mode, "native baseline": baseline}

    def setup(device):
        if provider == "native":
            fn, made, wrt, context = native, make_native(), native_grads, contextlib.nullcontext
        else:
            why = skip_reason(provider, device)
            if why is not None:
                raise Skip(why)
            fn, made, wrt = ours, make(), grads
            context = functools.partial(packops.use_backend, provider)
        inputs = with_grad([t.to(device) for t in made], mode, wrt)
        with torch.no_grad(), context():
            grad_out = torch.ones_like(fn(*inputs))
        return Run(fn=op_step(fn, inputs, mode, grad_out), context=context)
    return Case("overhead", group, provider, params, setup)


def cases(device, quick=False):
    fused = ("cpu",) if device.type == "cpu" else ("cuda", "triton")
    return [_case(op, mode, p, device) for op in OPS for mode in ("fwd", "fwd+bwd")
            for p in fused + ("native",)]
