"""Under torch.autocast the network-layer ops (pack3d, unpack3d, pack_conv,
group_norm_elu) run in the autocast dtype, like the convolutions they stand
for: a bf16 activation beside float32 parameters (what autocast hands a
layer) works, gives what the op gives on the inputs cast by hand, and the
float32 parameters get float32 gradients. Loss ops are left to the caller."""
import pytest
import torch

import packops
from packops import nn as pnn

from conftest import BACKEND_DEVICE, INTERPRETED


def _bf16_ok(backend, device):
    return torch.bfloat16 in packops._dispatch.DTYPES[backend]


def _cases(g):
    x = torch.randn(2, 4, 6, 8, generator=g)
    w3, b3 = 0.3 * torch.randn(2, 1, 3, 3, 3, generator=g), 0.1 * torch.randn(2, generator=g)
    w2, b2 = 0.1 * torch.randn(4, 32, 3, 3, generator=g), 0.1 * torch.randn(4, generator=g)
    gw, gb = 1 + 0.2 * torch.randn(4, generator=g), 0.2 * torch.randn(4, generator=g)
    return {
        "pack3d": (packops.pack3d, (x, w3, b3), {}),
        "unpack3d": (packops.unpack3d, (x, w3, b3), {}),
        "pack_conv": (packops.pack_conv, (x, w3, b3, w2, b2), {}),
        "group_norm_elu": (packops.group_norm_elu, (x, gw, gb, 2), {}),
    }


@pytest.mark.parametrize("op", ["pack3d", "unpack3d", "pack_conv", "group_norm_elu"])
@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_autocast_runs_the_op_in_the_autocast_dtype(op, backend, device):
    if not _bf16_ok(backend, device):
        pytest.skip(f"{backend} has no bfloat16")
    fn, args, kwargs = _cases(torch.Generator().manual_seed(0))[op]
    args = tuple(a.to(device).requires_grad_() if isinstance(a, torch.Tensor) else a
                 for a in args)
    x_low = args[0].detach().to(torch.bfloat16)       # what autocast hands the layer
    with packops.use_backend(backend):
        with torch.autocast(device, dtype=torch.bfloat16):
            out = fn(x_low.requires_grad_(), *args[1:], **kwargs)
        by_hand = fn(x_low.detach(), *(a.detach().to(torch.bfloat16)
                                       if isinstance(a, torch.Tensor) else a for a in args[1:]))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, by_hand, rtol=0, atol=0)   # the same computation
    out.float().square().mean().backward()
    assert x_low.grad is not None and x_low.grad.dtype == torch.bfloat16
    for a in args[1:]:
        if isinstance(a, torch.Tensor):
            assert a.grad is not None and a.grad.dtype == torch.float32
            assert torch.isfinite(a.grad).all()


@pytest.mark.parametrize("op", ["pack_conv", "group_norm_elu"])
def test_autocast_leaves_float64_alone(op):
    """autocast never casts float64: the op's dtype check still speaks."""
    fn, args, kwargs = _cases(torch.Generator().manual_seed(1))[op]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(*(a.double() if isinstance(a, torch.Tensor) else a for a in args), **kwargs)
        assert out.dtype == torch.float64
        with pytest.raises(ValueError, match="same dtype"):
            fn(args[0].double(), *args[1:], **kwargs)


def test_outside_autocast_nothing_is_cast():
    fn, args, kwargs = _cases(torch.Generator().manual_seed(2))["pack_conv"]
    with pytest.raises(ValueError, match="same dtype"):
        fn(args[0].to(torch.bfloat16), *args[1:], **kwargs)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_packing_layers_train_under_autocast(backend, device):
    """The modules under bf16 autocast, as TrainConfig(amp=True) runs them:
    close to the float32 result, gradients for every parameter."""
    if not _bf16_ok(backend, device):
        pytest.skip(f"{backend} has no bfloat16")
    torch.manual_seed(0)
    size = 8 if INTERPRETED else 32
    net = torch.nn.Sequential(pnn.PackLayerConv3d(16, 3), pnn.UnpackLayerConv3d(16, 32, 3)).to(device)
    x = torch.randn(2, 16, size, size, device=device)
    with packops.use_backend(backend):
        ref = net(x)
        with torch.autocast(device, dtype=torch.bfloat16):
            out = net(x)
        assert out.dtype == torch.bfloat16
        out.float().sum().backward()
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 3e-2, rel
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32, name


def test_compiled_op_under_autocast():
    fn, args, kwargs = _cases(torch.Generator().manual_seed(3))["group_norm_elu"]
    f = torch.compile(packops.group_norm_elu, fullgraph=True, backend="eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = f(args[0].to(torch.bfloat16), *args[1:])
    assert out.dtype == torch.bfloat16
    assert f(*args).dtype == torch.float32
