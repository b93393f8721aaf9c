"""pack3d / unpack3d / pack_conv: the op contract (tests/contract.py) on every
backend present, plus other packing factors, pack_conv's routes and its
memory. The PackNet layers built on them: tests/test_packnet_layers.py."""
import pytest
import torch

import packops
from packops.pack import pack3d_reference, pack_conv_reference, unpack3d_reference

from _assert import assert_as_accurate, assert_close
from conftest import FUSED
from contract import OpContract


@pytest.fixture(autouse=True)
def _folded_route_everywhere(monkeypatch):
    """Small test shapes would take pack_conv's direct route (FOLD_MIN_PIXELS):
    force the folded route, the one with the border-ring logic, in this file."""
    for device in ("cpu", "cuda"):
        monkeypatch.setitem(packops.pack.FOLD_MIN_PIXELS, device, 0)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rand(shape, g, scale=1.0):
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


def _conv3d_params(d, g):
    return _rand((d, 1, 3, 3, 3), g, 0.3), _rand((d,), g, 0.1)


def _conv_inputs(shape, seed=0):
    B, C, H, W, d, k, cout = shape
    g = _gen(seed)
    w3, b3 = _conv3d_params(d, g)
    w2 = _rand((cout, d * 4 * C, k, k), g, 1.0 / (d * 4 * C * k * k) ** 0.5)
    return [_rand((B, C, H, W), g), w3, b3, w2, _rand((cout,), g, 0.1)]


def _to(ts, dtype, device, requires_grad=True):
    return [t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in ts]


def _run(backend, fn, *args):
    with packops.use_backend(backend):
        return fn(*args)


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


# ------------------------------------------------------------------ bad input
x = torch.rand(2, 3, 4, 6)
w3, b3 = torch.rand(4, 1, 3, 3, 3), torch.rand(4)
w2, b2 = torch.rand(5, 4 * 4 * 3, 3, 3), torch.rand(5)


def _bad_conv3d(op):
    """Bad inputs shared by pack3d and unpack3d."""
    cases = [
        ("3d", (x[0], w3, b3), {}, ValueError, r"x must have 4 dimensions.*\(3, 4, 6\)"),
        ("int", (x.long(), w3, b3), {}, ValueError, r"x must be a floating-point.*int64"),
        ("weight-taps", (x, w3[:, :, :2], b3), {}, ValueError,
         r"weight must be \[d,1,3,3,3\].*\(4, 1, 2, 3, 3\)"),
        ("weight-in", (x, w3.expand(4, 2, 3, 3, 3), b3), {}, ValueError,
         r"weight must be \[d,1,3,3,3\].*\(4, 2, 3, 3, 3\)"),
        ("bias-shape", (x, w3, b3[:3]), {}, ValueError,
         r"bias must be \[4\] for weight \(4, 1, 3, 3, 3\), got shape \(3,\)"),
        ("dtypes", (x, w3.double(), b3), {}, ValueError,
         r"x and weight must have the same dtype.*float32.*float64"),
        ("device", (x, w3, b3.to("meta")), {}, ValueError,
         r"x and bias must be on the same device.*cpu.*meta"),
        ("bias-int", (x, w3, b3.int()), {}, ValueError, r"bias must be a floating-point"),
        ("r0", (x, w3, b3), {"r": 0}, ValueError, r"r must be a positive int, got 0"),
    ]
    if op == "pack3d":
        cases.append(("H5", (torch.rand(2, 3, 5, 6), w3, b3), {}, ValueError,
                      r"pack3d: H and W of x must be divisible by r = 2.*\(2, 3, 5, 6\)"))
    else:
        cases.append(("dC", (x, w3[:3], b3[:3]), {}, ValueError,
                      r"unpack3d: d\*C = 3\*3 must be divisible by r\*r = 4"))
    return cases


class _Conv3dOp(OpContract):
    NAMES = GRADS = ("x", "weight", "bias")
    MULTILINEAR = True
    GRADCHECK_SHAPE = (1, 2, 4, 2, 2)
    OPCHECK_SHAPE = (2, 3, 4, 6, 4)
    LOW_SHAPE = (2, 3, 6, 12, 4)

    def make(self, shape, seed=0):
        B, C, H, W, d = shape
        g = _gen(seed)
        return [_rand((B, C, H, W), g), *_conv3d_params(d, g)]

    def kernel_args(self, args, kwargs):
        xx, weight, bias = args
        if bias is None:
            bias = weight.new_zeros(weight.shape[0])
        return self.KERNELS[0], (xx, weight, bias, kwargs.get("r", 2))


class TestPack3d(_Conv3dOp):
    fn, reference, KERNELS = packops.pack3d, pack3d_reference, ("pack3d_fwd",)
    # (B, C, H, W, d): odd channel counts, batch 1, the minimum 2x2, d = 1 and 8
    SHAPES = {"2x3x4x6-d2": (2, 3, 4, 6, 2), "1x1x2x2-d4": (1, 1, 2, 2, 4),
              "1x5x6x10-d8": (1, 5, 6, 10, 8), "2x2x8x4-d1": (2, 2, 8, 4, 1)}
    BAD = _bad_conv3d("pack3d")


class TestUnpack3d(_Conv3dOp):
    fn, reference, KERNELS = packops.unpack3d, unpack3d_reference, ("unpack3d_fwd",)
    # unpack3d needs d*C divisible by r*r
    SHAPES = {"2x3x3x5-d4": (2, 3, 3, 5, 4), "1x1x2x2-d4": (1, 1, 2, 2, 4),
              "1x2x5x4-d8": (1, 2, 5, 4, 8), "2x4x4x3-d1": (2, 4, 4, 3, 1)}
    BAD = _bad_conv3d("unpack3d")


class TestPackConv(OpContract):
    fn = packops.pack_conv
    reference = pack_conv_reference
    NAMES = GRADS = ("x", "w3", "b3", "w2", "b2")
    MULTILINEAR = True
    # (B, C, H, W, d, k, Cout): H/2 or W/2 as small as 2 so the border ring
    # covers or nearly covers the image, and shapes with an interior
    SHAPES = {
        "no-interior-k5": (1, 2, 4, 12, 2, 5, 3),   # h = 2 < k: computed directly
        "interior-2x3-k3": (2, 3, 8, 10, 2, 3, 5),
        "interior-2x3-k5": (1, 1, 12, 14, 3, 5, 4),
        "w2-k3": (1, 2, 6, 4, 2, 3, 2),             # w = 2: no interior
        "d1-k3": (2, 3, 10, 8, 1, 3, 3),
        "k1": (1, 2, 6, 8, 2, 1, 3),                # k = 1: no ring at all
    }
    FLOAT32_SHAPES = ("no-interior-k5", "interior-2x3-k5")
    LOW_SHAPE = (1, 3, 12, 16, 4, 3, 2)
    GRADCHECK_SHAPE = (1, 1, 6, 8, 2, 3, 2)
    OPCHECK_SHAPE = (1, 2, 8, 10, 2, 3, 4)

    def make(self, shape, seed=0):
        return _conv_inputs(shape, seed)

    @pytest.mark.parametrize("backend,device", FUSED)
    def test_no_second_derivative(self, backend, device, monkeypatch):
        # the direct route runs the pack3d kernel, which has no second derivative
        for dev in ("cpu", "cuda"):
            monkeypatch.setitem(packops.pack.FOLD_MIN_PIXELS, dev, 10 ** 9)
        super().test_no_second_derivative(backend, device)

    @pytest.mark.parametrize("backend,device", FUSED)
    def test_second_derivative_on_the_folded_route(self, backend, device):
        """The folded route is made of PyTorch ops only (no packops kernel), so
        its second derivatives exist and match the reference's."""
        args = [a.to(device).requires_grad_() for a in self.make(self.GRADCHECK_SHAPE, 6)]
        with packops.use_backend(backend):
            assert torch.autograd.gradgradcheck(self.op, tuple(args), eps=1e-6, atol=1e-6)

    BAD = [
        ("w2-cin", (x, w3, b3, w2[:, :40], b2), {}, ValueError,
         r"w2 must be \[Cout, d\*r\*r\*C, k, k\] = \[Cout, 48, k, k\].*got shape \(5, 40, 3, 3\)"),
        ("w2-even-k", (x, w3, b3, torch.rand(5, 48, 2, 2), b2), {}, ValueError,
         r"k odd.*\(5, 48, 2, 2\)"),
        ("w2-not-square", (x, w3, b3, torch.rand(5, 48, 3, 5), b2), {}, ValueError,
         r"w2 must be.*\(5, 48, 3, 5\)"),
        ("b2-shape", (x, w3, b3, w2, b2[:4]), {}, ValueError,
         r"b2 must be \[5\] for w2 \(5, 48, 3, 3\), got shape \(4,\)"),
        ("w2-dtype", (x, w3, b3, w2.double(), b2), {}, ValueError,
         r"x and w2 must have the same dtype"),
        ("w3-taps", (x, w3[:, :, :2], b3, w2, b2), {}, ValueError, r"w3 must be \[d,1,3,3,3\]"),
        ("b3-shape", (x, w3, b3[:2], w2, b2), {}, ValueError, r"b3 must be \[4\]"),
        ("b2-device", (x, w3, b3, w2, b2.to("meta")), {}, ValueError,
         r"x and b2 must be on the same device"),
        ("r3", (x, w3, b3, w2, b2), {"r": 3}, ValueError, r"divisible by r = 3.*\(2, 3, 4, 6\)"),
    ]


# ------------------------------------------------------------ other cases
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
def test_pack_conv_routes_agree(backend, device, monkeypatch):
    """Direct (pack3d + conv2d), recompute (the same, the pack3d output made
    again in backward) and folded routes give the same values and gradients."""
    args = [a.to(device).requires_grad_() for a in _conv_inputs((1, 3, 12, 16, 8, 3, 3))]
    got = {}
    for route in packops.pack.ROUTES:
        with packops.pack.use_route(route), packops.use_backend(backend):
            assert packops.pack.route_for(args[0], args[3], 2) == route
            out = packops.pack_conv(*args)
        got[route] = (out, torch.autograd.grad(out.square().sum(), args))
    for route in ("recompute", "folded"):
        assert_close(got[route][0], got["direct"][0], 1e-10, f"{route} values")
        for a, b in zip(got[route][1], got["direct"][1]):
            assert_close(a, b, 1e-9 * max(1.0, float(b.abs().max())), f"{route} grads")


@pytest.mark.parametrize("backend,device", FUSED)
def test_pack_conv_recompute_route_gradcheck(backend, device):
    """float64 gradcheck of the recompute route, some inputs without gradient
    and no b2 (its backward asks convolution_backward for what is needed)."""
    x, w3, b3, w2, _ = [a.to(device) for a in _conv_inputs((1, 1, 6, 8, 2, 3, 2), 4)]
    with packops.use_backend(backend), packops.pack.use_route("recompute"):
        assert torch.autograd.gradcheck(
            lambda *a: packops.pack_conv(*a, None),
            (x.requires_grad_(), w3, b3.requires_grad_(), w2.requires_grad_()),
            eps=1e-6, atol=1e-6)


def test_pack_conv_route_choice(monkeypatch):
    x, w2 = torch.empty(1, 8, 40, 40), torch.empty(4, 8 * 4 * 8, 3, 3)
    monkeypatch.setitem(packops.pack.FOLD_MIN_PIXELS, "cpu", 1536)
    assert packops.pack.route_for(x, w2, 2) == "direct"             # 400 px
    assert packops.pack.route_for(x.expand(4, -1, -1, -1), w2, 2) == "folded"
    # per device type, others take the CPU's threshold
    meta = torch.empty(4, 8, 128, 128, device="meta")                 # 16384 px
    monkeypatch.setitem(packops.pack.FOLD_MIN_PIXELS, "cpu", 16384)
    assert packops.pack.route_for(meta, w2, 2) == "folded"
    assert packops.pack.route_for(meta[:, :, :126], w2, 2) == "direct"
    monkeypatch.setitem(packops.pack.FOLD_MIN_PIXELS, "meta", 10 ** 9)
    assert packops.pack.route_for(meta, w2, 2) == "direct"
    # no interior (h < k): never folded, whatever is asked
    with packops.pack.use_route("folded"):
        assert packops.pack.route_for(x[..., :4, :], w2, 2) == "direct"
        with packops.pack.use_route("recompute"):
            assert packops.pack.route_for(x[..., :4, :], w2, 2) == "recompute"
        assert packops.pack.route_for(x[..., :4, :], w2, 2) == "direct"  # restored
    assert packops.pack.route_for(x.expand(4, -1, -1, -1), w2, 2) == "direct"  # auto again
    with pytest.raises(ValueError, match="route must be 'auto' or one of"):
        with packops.pack.use_route("fast"):
            pass


def test_pack_conv_memory_is_small():
    """The fused route never keeps the d*r*r*C-channel tensor for the backward:
    no tensor it saves is that large and all of them together are smaller,
    while the reference saves it. Counted from the tensors autograd saves
    (saved_tensors_hooks), so neither threads nor the allocator matter (a
    peak-memory bound broke on 16 cores: oneDNN's scratch grows per thread)."""
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    # activations dominate, as in PackNet (pack1: v is 20x the size of w2)
    args = [a.float().requires_grad_() for a in _conv_inputs((1, 4, 128, 128, 8, 5, 4))]
    v_numel = 8 * 4 * 4 * 64 * 64  # the pack3d output [1, d*r*r*C, H/r, W/r]

    def saved(backend):
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t
        with packops.use_backend(backend), torch.autograd.graph.saved_tensors_hooks(
                pack, lambda t: t):
            out = packops.pack_conv(*args)
        torch.autograd.grad(out.sum(), args)  # the saved tensors serve a backward
        return sizes

    ref, fused = saved("reference"), saved("cpu")
    assert max(ref) >= v_numel, ref
    assert max(fused) < v_numel and sum(fused) < v_numel, fused


def test_none_biases_mean_zero():
    z3, z2 = torch.zeros(4), torch.zeros(5)
    torch.testing.assert_close(packops.pack3d(x, w3, None), packops.pack3d(x, w3, z3))
    torch.testing.assert_close(packops.pack_conv(x, w3, None, w2, None),
                               packops.pack_conv(x, w3, z3, w2, z2))


def test_compiled_ops_check_shapes():
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    with pytest.raises(RuntimeError, match=r"pack3d: H and W of x must be divisible by r = 2"):
        torch.ops.packops.pack3d_fwd(torch.rand(1, 1, 3, 4), w3, b3, 2)
    with pytest.raises(RuntimeError, match=r"weight must be \[d,1,3,3,3\], got shape \[4, 1, 3, 3\]"):
        torch.ops.packops.unpack3d_fwd(x, w3[..., 0], b3, 2)
    with pytest.raises(RuntimeError, match=r"grad must have shape \[2, 48, 2, 3\]"):
        torch.ops.packops.pack3d_bwd(x, x, w3, 2, True, True, True)
    with pytest.raises(RuntimeError, match=r"cpu backend supports float32 and float64"):
        torch.ops.packops.pack3d_fwd(x.half(), w3.half(), b3.half(), 2)


def test_recompute_route_compiles():
    """torch.compile(fullgraph=True) traces the recompute route's autograd.Function."""
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    args = [a.float().requires_grad_() for a in _conv_inputs((1, 2, 8, 10, 2, 3, 4), 5)]
    f = torch.compile(packops.pack_conv, fullgraph=True, backend="aot_eager")
    with packops.pack.use_route("recompute"):
        out = f(*args)
    grads = torch.autograd.grad(out.square().sum(), args)
    ref = pack_conv_reference(*args)
    ref_grads = torch.autograd.grad(ref.square().sum(), args)
    assert_close(out, ref, 1e-5, "values")
    for a, b in zip(grads, ref_grads):
        assert_close(a, b, 1e-4 * max(1.0, float(b.abs().max())), "grads")
