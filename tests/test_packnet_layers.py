"""PackNet-SfM's layers (packnet/models/layers.py) against the release's,
written from its description: state_dict layout, the release's
initialisation, outputs and gradients on every backend, autocast."""
import pytest
import torch
import torch.nn.functional as F

import packops
from packnet.models import PackNetTiny, PoseNet
from packnet.models.layers import InvDepth, PackLayerConv3d, UnpackLayerConv3d

from _assert import assert_close
from conftest import BACKEND_DEVICE, INTERPRETED


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rand(shape, g, scale=1.0):
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


def _has_release_init(module):
    """Every conv weight xavier_uniform_ (within its bound, and using it) and
    every conv bias zero, as the release initialises them."""
    for name, m in module.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            bound = (6.0 / (fan_in + fan_out)) ** 0.5  # xavier_uniform_
            top = m.weight.abs().max()
            assert 0.5 * bound < top <= bound, (name, float(top), bound)
            assert torch.equal(m.bias, torch.zeros_like(m.bias)), name


class _RefConv2D(torch.nn.Module):
    """PackNet-SfM's Conv2D, written from its description: the reference."""

    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_base = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)
        self.pad = torch.nn.ZeroPad2d([kernel_size // 2] * 4)
        self.normalize = torch.nn.GroupNorm(16, out_channels)
        self.activ = torch.nn.ELU(inplace=True)

    def forward(self, x):
        return self.activ(self.normalize(self.conv_base(self.pad(x))))


class _RefPack(torch.nn.Module):
    def __init__(self, in_channels, kernel_size, r=2, d=8):
        super().__init__()
        self.r = r
        self.conv = _RefConv2D(in_channels * r * r * d, in_channels, kernel_size, 1)
        self.conv3d = torch.nn.Conv3d(1, d, 3, padding=1)

    def forward(self, x):
        x = F.pixel_unshuffle(x, self.r).unsqueeze(1)
        x = self.conv3d(x)
        b, c, d, h, w = x.shape
        return self.conv(x.view(b, c * d, h, w))


class _RefUnpack(torch.nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, r=2, d=8):
        super().__init__()
        self.conv = _RefConv2D(in_channels, out_channels * r * r // d, kernel_size, 1)
        self.conv3d = torch.nn.Conv3d(1, d, 3, padding=1)
        self.unpack = torch.nn.PixelShuffle(r)

    def forward(self, x):
        x = self.conv(x).unsqueeze(1)
        x = self.conv3d(x)
        b, c, d, h, w = x.shape
        return self.unpack(x.view(b, c * d, h, w))


def _randomise(module, seed):
    # non-trivial values everywhere (the default init zeroes the biases)
    g = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.2)


MODULES = [
    ("pack", lambda: PackLayerConv3d(16, 5), lambda: _RefPack(16, 5), (2, 16, 8, 12)),
    ("pack_k3_d4", lambda: PackLayerConv3d(16, 3, d=4), lambda: _RefPack(16, 3, d=4),
     (1, 16, 4, 6)),
    ("unpack", lambda: UnpackLayerConv3d(16, 32, 3), lambda: _RefUnpack(16, 32, 3),
     (2, 16, 3, 5)),
]


@pytest.mark.parametrize("name,make,make_ref,shape", MODULES, ids=[m[0] for m in MODULES])
def test_state_dict_matches_original(name, make, make_ref, shape):
    ours, ref = make().state_dict(), make_ref().state_dict()
    assert list(ours) == list(ref) or set(ours) == set(ref)
    for k in ref:
        assert ours[k].shape == ref[k].shape, k
    _has_release_init(make())


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("name,make,make_ref,shape", MODULES, ids=[m[0] for m in MODULES])
def test_module_matches_original(backend, device, name, make, make_ref, shape, monkeypatch):
    """A state_dict saved from the reference module loads and gives the same
    output and parameter gradients (pack_conv on its folded route, the one
    with the border terms: these shapes would take the direct one)."""
    for dev in ("cpu", "cuda"):
        monkeypatch.setitem(packops.pack.FOLD_MIN_PIXELS, dev, 0)
    ref = make_ref().double().to(device)
    _randomise(ref, 17)
    ours = make().double().to(device)
    ours.load_state_dict(ref.state_dict())
    x = _rand(shape, _gen(19)).to(device)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with packops.use_backend(backend):
        out = ours(xa)
    want = ref(xb)
    assert_close(out, want, 1e-10, f"{backend} {name} forward")
    grad = torch.randn(out.shape, generator=_gen(23), dtype=torch.float64).to(device)
    got = torch.autograd.grad(out, [xa, *ours.parameters()], grad)
    wanted = torch.autograd.grad(want, [xb, *ref.parameters()], grad)
    names = ["x"] + [n for n, _ in ours.named_parameters()]
    for n, a, e in zip(names, got, wanted):
        assert_close(a, e, 1e-9 * max(1.0, e.abs().max().item()), f"{backend} {name} grad {n}")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_packing_layers_train_under_autocast(backend, device):
    """The modules under bf16 autocast, as TrainConfig(amp=True) runs them:
    close to the float32 result, gradients for every parameter."""
    if torch.bfloat16 not in packops._dispatch.DTYPES[backend]:
        pytest.skip(f"{backend} has no bfloat16")
    torch.manual_seed(0)
    size = 8 if INTERPRETED else 32
    net = torch.nn.Sequential(PackLayerConv3d(16, 3),
                              UnpackLayerConv3d(16, 32, 3)).to(device)
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


def test_module_repr_and_defaults():
    m = PackLayerConv3d(32, 3)
    assert m.conv3d.weight.shape == (8, 1, 3, 3, 3)
    assert m.conv.conv_base.weight.shape == (32, 32 * 4 * 8, 3, 3)
    assert "d=8" in repr(m)
    u = UnpackLayerConv3d(32, 64, 3)
    assert u.conv.conv_base.weight.shape == (64 * 4 // 8, 32, 3, 3)


def test_networks_have_the_release_initialisation():
    """Each conv of the networks is initialised once, as it is built, with the
    release's distribution; the inverse-depth heads' bias is zero without
    init_depth."""
    torch.manual_seed(0)
    _has_release_init(PackNetTiny())
    _has_release_init(PoseNet())
    _has_release_init(InvDepth(16))
