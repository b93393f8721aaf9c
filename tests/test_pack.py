"""pack3d / unpack3d / pack_conv and the packing modules on every backend
present, against the reference sequence of ops."""
import pytest
import torch
import torch.nn.functional as F

import packops
from packops.pack import pack3d_reference, pack_conv_reference, unpack3d_reference

from _assert import assert_as_accurate, assert_close
from conftest import BACKEND_DEVICE, FUSED

DTYPES = [torch.float32, torch.float64]
# (B, C, H, W, d): odd channel counts, batch 1, the minimum 2x2, d = 1 and 8
PACK_SHAPES = [(2, 3, 4, 6, 2), (1, 1, 2, 2, 4), (1, 5, 6, 10, 8), (2, 2, 8, 4, 1)]
# unpack3d needs d*C divisible by r*r
UNPACK_SHAPES = [(2, 3, 3, 5, 4), (1, 1, 2, 2, 4), (1, 2, 5, 4, 8), (2, 4, 4, 3, 1)]
# (B, C, H, W, d, k, Cout): H/2 or W/2 as small as 2 so the border ring covers
# or nearly covers the image, and shapes with an interior
@pytest.fixture(autouse=True)
def _folded_route_everywhere(monkeypatch):
    """Small test shapes would take pack_conv's direct route (FOLD_MIN_PIXELS):
    force the folded route, the one with the border-ring logic, in this file."""
    monkeypatch.setattr(packops.pack, "FOLD_MIN_PIXELS", 0)


CONV_SHAPES = [
    (1, 2, 4, 12, 2, 5, 3),   # h = 2 < k: no interior, computed directly
    (2, 3, 8, 10, 2, 3, 5),   # h=4, w=5, k=3: interior 2x3
    (1, 1, 12, 14, 3, 5, 4),  # h=6, w=7, k=5: interior 2x3
    (1, 2, 6, 4, 2, 3, 2),    # w = 2: no interior
    (2, 3, 10, 8, 1, 3, 3),   # d = 1
    (1, 2, 6, 8, 2, 1, 3),    # k = 1: no ring at all
]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rand(shape, g, scale=1.0):
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


def _conv3d_params(d, g):
    return _rand((d, 1, 3, 3, 3), g, 0.3), _rand((d,), g, 0.1)


def _to(ts, dtype, device, requires_grad=True):
    return [t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in ts]


def _run(backend, fn, *args):
    with packops.use_backend(backend):
        return fn(*args)


def _supports(backend, dtype):
    return dtype in packops._dispatch.DTYPES[backend]


def _check(backend, fn, ref, inputs64, dtype, device, what, seed=1):
    """Forward and every gradient of fn on `backend` vs the float64 reference."""
    ins = _to(inputs64, dtype, device)
    out = _run(backend, fn, *ins)
    ex = [t.detach().to(device).requires_grad_() for t in inputs64]
    exact = ref(*ex)
    same = ref(*ins)
    assert out.dtype == dtype and out.shape == exact.shape
    assert_as_accurate(out, same, exact, f"{backend} {what} forward")
    grad = torch.randn(out.shape, generator=_gen(seed), dtype=torch.float64).to(device)
    got = torch.autograd.grad(out, ins, grad.to(dtype))
    want = torch.autograd.grad(exact, ex, grad)
    same_g = torch.autograd.grad(same, ins, grad.to(dtype))
    for i, (a, s, e) in enumerate(zip(got, same_g, want)):
        assert_as_accurate(a, s, e, f"{backend} {what} grad of input {i}")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("shape", PACK_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pack3d_matches_reference(backend, device, shape, dtype):
    if not _supports(backend, dtype):
        pytest.skip(f"{backend} does not serve {dtype}")
    B, C, H, W, d = shape
    g = _gen(0)
    inputs = [_rand((B, C, H, W), g), *_conv3d_params(d, g)]
    _check(backend, packops.pack3d, pack3d_reference, inputs, dtype, device, "pack3d")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("shape", UNPACK_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_unpack3d_matches_reference(backend, device, shape, dtype):
    if not _supports(backend, dtype):
        pytest.skip(f"{backend} does not serve {dtype}")
    B, C, H, W, d = shape
    g = _gen(0)
    inputs = [_rand((B, C, H, W), g), *_conv3d_params(d, g)]
    _check(backend, packops.unpack3d, unpack3d_reference, inputs, dtype, device, "unpack3d")


def _conv_inputs(shape, seed=0):
    B, C, H, W, d, k, cout = shape
    g = _gen(seed)
    w3, b3 = _conv3d_params(d, g)
    w2 = _rand((cout, d * 4 * C, k, k), g, 1.0 / (d * 4 * C * k * k) ** 0.5)
    return [_rand((B, C, H, W), g), w3, b3, w2, _rand((cout,), g, 0.1)]


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pack_conv_matches_reference(backend, device, shape, dtype):
    if not _supports(backend, dtype):
        pytest.skip(f"{backend} does not serve {dtype}")
    if backend == "triton" and dtype == torch.float32 and shape[5] != 5:
        pytest.skip("interpreter time: float32 triton runs the k=5 shapes only")
    _check(backend, packops.pack_conv, pack_conv_reference, _conv_inputs(shape), dtype, device,
           f"pack_conv k={shape[5]}")


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("r", [1, 3])
def test_other_r(backend, device, r):
    g = _gen(3)
    x = _rand((1, 2, 3 * r, 4 * r), g)
    w3, b3 = _conv3d_params(4 if r == 3 else 2, g)
    d = w3.shape[0]
    _check(backend, lambda *a: packops.pack3d(*a, r=r), lambda *a: pack3d_reference(*a, r=r),
           [x, w3, b3], torch.float64, device, f"pack3d r={r}")
    xu = _rand((1, 9 if r == 3 else 3, 3, 2), g)
    _check(backend, lambda *a: packops.unpack3d(*a, r=r), lambda *a: unpack3d_reference(*a, r=r),
           [xu, w3, b3], torch.float64, device, f"unpack3d r={r}")
    w2 = _rand((3, d * r * r * 2, 3, 3), g, 0.1)
    _check(backend, lambda *a: packops.pack_conv(*a, r=r),
           lambda *a: pack_conv_reference(*a, r=r), [x, w3, b3, w2, _rand((3,), g)],
           torch.float64, device, f"pack_conv r={r}")


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_noncontiguous(backend, device, layout):
    g = _gen(5)
    x = _rand((2, 3, 12, 16), g).to(device)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    else:
        x = x[:, :, ::2, 2:14]  # [2, 3, 6, 12]
    assert not x.is_contiguous()
    w3, b3 = (t.to(device) for t in _conv3d_params(4, g))
    w2 = _rand((2, 4 * 4 * 3, 3, 3), g, 0.05).to(device).transpose(2, 3)  # non-contiguous too
    b2 = _rand((2,), g).to(device)
    for fn, ref, args in [(packops.pack3d, pack3d_reference, (x, w3, b3)),
                          (packops.unpack3d, unpack3d_reference, (x, w3, b3)),
                          (packops.pack_conv, pack_conv_reference, (x, w3, b3, w2, b2))]:
        ins = [a.detach().float().requires_grad_() for a in args]
        out = _run(backend, fn, *ins)
        ex = [a.detach().requires_grad_() for a in args]
        want = ref(*ex)
        assert_close(out, want, 1e-4, f"{backend} {fn.__name__} {layout}")
        got = torch.autograd.grad(out.sum(), ins)
        wanted = torch.autograd.grad(want.sum(), ex)
        for i, (a, e) in enumerate(zip(got, wanted)):
            assert_close(a, e, 1e-3 * max(1.0, e.abs().max().item()),
                         f"{backend} {fn.__name__} {layout} grad {i}")


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("which", ["x", "weight", "bias"])
def test_gradient_to_one_input(backend, device, which):
    g = _gen(7)
    args = [_rand((1, 2, 4, 6), g).to(device), *(t.to(device) for t in _conv3d_params(2, g))]
    idx = ["x", "weight", "bias"].index(which)
    args[idx].requires_grad_()
    for fn, ref in [(packops.pack3d, pack3d_reference), (packops.unpack3d, unpack3d_reference)]:
        out = _run(backend, fn, *args)
        (got,) = torch.autograd.grad(out.sum(), args[idx])
        (want,) = torch.autograd.grad(ref(*args).sum(), args[idx])
        assert_close(got, want, 1e-12, f"{backend} {fn.__name__} grad {which}")


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("op", ["pack3d", "unpack3d", "pack_conv"])
def test_gradcheck(backend, device, op):
    g = _gen(11)
    if op == "pack_conv":
        args = _conv_inputs((1, 1, 6, 8, 2, 3, 2), seed=11)
    else:
        args = [_rand((1, 2, 4, 2), g), *_conv3d_params(2, g)]
    args = [a.to(device).requires_grad_() for a in args]
    fn = getattr(packops, op)
    # the interpreter runs each launch in Python: fast mode (random projections)
    with packops.use_backend(backend):
        assert torch.autograd.gradcheck(fn, tuple(args), eps=1e-6, atol=1e-7,
                                        fast_mode=backend == "triton")


@pytest.mark.parametrize("backend,device", FUSED)
def test_opcheck(backend, device):
    suffix = "_triton" if backend == "triton" else ""
    g = _gen(13)
    for need in [(True, True, True), (True, False, False), (False, True, False)]:
        x = _rand((2, 3, 4, 6), g).float().to(device).requires_grad_(need[0])
        w3, b3 = (t.float().to(device) for t in _conv3d_params(4, g))
        w3.requires_grad_(need[1])
        b3.requires_grad_(need[2])
        for name in ("pack3d_fwd", "unpack3d_fwd"):
            torch.library.opcheck(getattr(torch.ops.packops, name + suffix).default,
                                  (x, w3, b3, 2))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_compile_fullgraph(backend, device):
    torch._dynamo.reset()
    args = [a.float().to(device).requires_grad_() for a in _conv_inputs((1, 2, 8, 10, 2, 3, 4))]

    def step(x, w3, b3, w2, b2):
        y = packops.pack_conv(x, w3, b3, w2, b2)           # [1, 4, 4, 5]
        z = packops.unpack3d(y, w3, b3)                     # [1, 2, 8, 10]
        return y.square().mean() + z.mean() + packops.pack3d(x, w3, b3).mean()

    with packops.use_backend(backend):
        compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
        loss = compiled(*args)
        got = torch.autograd.grad(loss, args)
        eager = step(*args)
        want = torch.autograd.grad(eager, args)
    assert_close(loss, eager, 1e-6, "compiled loss")
    for a, b in zip(got, want):
        assert_close(a, b, 1e-5, "compiled grad")


@pytest.mark.parametrize("backend,device", FUSED)
def test_empty_batch(backend, device):
    args = [a.float().to(device).requires_grad_() for a in _conv_inputs((0, 2, 8, 10, 2, 3, 4))]
    out = _run(backend, packops.pack_conv, *args)
    assert out.shape == (0, 4, 4, 5)
    x, w3, b3 = args[:3]
    for fn, shape in [(packops.pack3d, (0, 16, 4, 5)), (packops.unpack3d, (0, 1, 16, 20))]:
        y = _run(backend, fn, x, w3, b3)
        assert y.shape == shape
        gx, gw, gb = torch.autograd.grad(y.sum(), (x, w3, b3))
        assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(gw))


def test_pack_conv_memory_is_small():
    """The fused route never holds the d*r*r*C-channel tensor: forward+backward
    peaks at well under a third of the reference's memory."""
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    from benchmarks.harness import peak_memory
    # activations dominate, as in PackNet (pack1: v is 20x the size of w2)
    args = [a.float().requires_grad_() for a in _conv_inputs((1, 4, 128, 128, 8, 5, 4))]

    def step(backend):
        def run():
            with packops.use_backend(backend):
                return torch.autograd.grad(packops.pack_conv(*args).sum(), args)
        return run

    # oneDNN's per-thread im2col scratch for the folded conv grows with the
    # thread count (on a 16-core machine it outgrew the reference's peak):
    # measure with the 2 threads of the machines this project targets on CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    try:
        fused, ref = peak_memory(step("cpu")), peak_memory(step("reference"))
    finally:
        torch.set_num_threads(threads)
    v_bytes = 8 * 4 * 4 * 64 * 64 * 4  # the pack3d output
    assert ref >= v_bytes
    assert fused < ref / 3 and fused < v_bytes, (fused, ref)


# ------------------------------------------------------------------ modules
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
    ("pack", lambda: packops.nn.PackLayerConv3d(16, 5), lambda: _RefPack(16, 5), (2, 16, 8, 12)),
    ("pack_k3_d4", lambda: packops.nn.PackLayerConv3d(16, 3, d=4), lambda: _RefPack(16, 3, d=4),
     (1, 16, 4, 6)),
    ("unpack", lambda: packops.nn.UnpackLayerConv3d(16, 32, 3), lambda: _RefUnpack(16, 32, 3),
     (2, 16, 3, 5)),
]


@pytest.mark.parametrize("name,make,make_ref,shape", MODULES, ids=[m[0] for m in MODULES])
def test_state_dict_matches_original(name, make, make_ref, shape):
    ours, ref = make().state_dict(), make_ref().state_dict()
    assert list(ours) == list(ref) or set(ours) == set(ref)
    for k in ref:
        assert ours[k].shape == ref[k].shape, k
    m = make()
    for mod in m.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Conv3d)):
            fan_in = mod.weight[0].numel()
            fan_out = mod.weight.shape[0] * mod.weight[0, 0].numel()
            bound = (6.0 / (fan_in + fan_out)) ** 0.5  # xavier_uniform_
            assert mod.weight.abs().max() <= bound and mod.weight.abs().max() > 0.5 * bound
            assert torch.equal(mod.bias, torch.zeros_like(mod.bias))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("name,make,make_ref,shape", MODULES, ids=[m[0] for m in MODULES])
def test_module_matches_original(backend, device, name, make, make_ref, shape):
    """A state_dict saved from the reference module loads and gives the same
    output and parameter gradients."""
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


def test_module_repr_and_defaults():
    m = packops.nn.PackLayerConv3d(32, 3)
    assert m.conv3d.weight.shape == (8, 1, 3, 3, 3)
    assert m.conv.conv_base.weight.shape == (32, 32 * 4 * 8, 3, 3)
    assert "d=8" in repr(m)
    u = packops.nn.UnpackLayerConv3d(32, 64, 3)
    assert u.conv.conv_base.weight.shape == (64 * 4 // 8, 32, 3, 3)


@pytest.mark.parametrize("backend,device", FUSED)
def test_pack_conv_route_choice_agrees(backend, device, monkeypatch):
    """Direct (pack3d + conv2d) and folded routes give the same values and
    gradients; the automatic choice takes direct below FOLD_MIN_PIXELS."""
    args = [a.to(device).requires_grad_() for a in _conv_inputs((1, 3, 12, 16, 8, 3, 3))]
    got = {}
    for name, threshold in (("folded", 0), ("direct", 10 ** 9)):
        monkeypatch.setattr(packops.pack, "FOLD_MIN_PIXELS", threshold)
        with packops.use_backend(backend):
            out = packops.pack_conv(*args)
        got[name] = (out, torch.autograd.grad(out.square().sum(), args))
    assert_close(got["folded"][0], got["direct"][0], 1e-10, "values")
    for a, b in zip(got["folded"][1], got["direct"][1]):
        assert_close(a, b, 1e-9 * max(1.0, float(b.abs().max())), "grads")
