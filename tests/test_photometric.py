"""ssim / photometric_loss on every backend present, against the reference."""
import pytest
import torch

import packops
from packops.photometric import photometric_loss_reference, ssim_reference

from _assert import assert_as_accurate, assert_close
from conftest import BACKEND_DEVICE, FUSED

OPS = {
    "photometric_loss": (packops.photometric_loss, photometric_loss_reference),
    "ssim": (packops.ssim, ssim_reference),
}
# odd sizes, the minimum 2x2, batch 1, and sizes that cross the CPU band
# (32 rows) and the Triton/CUDA tile edges
SHAPES = [(2, 3, 7, 9), (1, 1, 2, 2), (1, 3, 2, 5), (3, 2, 11, 4), (1, 3, 34, 70)]
LOW = (torch.float16, torch.bfloat16)


def _inputs(shape, dtype, device, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    # target near pred, as in training, so the clamp and L1 signs both vary
    y = (x + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return [t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (x, y)]


def _supports(backend, dtype):
    return dtype in packops._dispatch.DTYPES[backend]


def _run(backend, fn, *args):
    with packops.use_backend(backend):
        return fn(*args)


def _check_against_reference(backend, device, op, shape, dtype, seed=0):
    fn, ref = OPS[op]
    x, y = _inputs(shape, dtype, device, seed, requires_grad=True)
    out = _run(backend, fn, x, y)
    x64, y64 = (t.detach().double().requires_grad_() for t in (x, y))
    exact = ref(x64, y64)
    same = ref(x, y)
    assert out.dtype == dtype and out.shape == exact.shape
    assert_as_accurate(out, same, exact, f"{backend} {op} forward")

    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1),
                       dtype=torch.float64).to(device)
    got = torch.autograd.grad(out, (x, y), grad.to(dtype))
    want = torch.autograd.grad(exact, (x64, y64), grad)
    same_g = torch.autograd.grad(same, (x, y), grad.to(dtype))
    for name, a, s, e in zip(("x", "y"), got, same_g, want):
        assert_as_accurate(a, s, e, f"{backend} {op} grad {name}")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_matches_reference(backend, device, op, shape, dtype):
    if not _supports(backend, dtype):
        pytest.skip(f"{backend} does not serve {dtype}")
    _check_against_reference(backend, device, op, shape, dtype)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision(backend, device, op, dtype):
    if not _supports(backend, dtype):
        pytest.skip(f"{backend} does not serve {dtype}")
    if device == "cpu" and backend == "reference" and dtype == torch.float16:
        pytest.skip("no fp16 reflection pad on CPU in some torch builds")
    _check_against_reference(backend, device, op, (2, 3, 9, 37), dtype)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("layout", ["transposed", "channels_last", "strided"])
def test_noncontiguous(backend, device, layout):
    x, y = _inputs((2, 3, 12, 10), torch.float32, device)
    if layout == "transposed":
        x, y = x.transpose(2, 3), y.transpose(2, 3)
    elif layout == "channels_last":
        x, y = (t.to(memory_format=torch.channels_last) for t in (x, y))
    else:
        x, y = x[:, :, ::2, 1:], y[:, :, ::2, 1:]
    assert not x.is_contiguous()
    for op, (fn, ref) in OPS.items():
        xg, yg = (t.detach().requires_grad_() for t in (x, y))
        out = _run(backend, fn, xg, yg)
        want = ref(x.double(), y.double())
        assert_close(out, want, 1e-5, f"{backend} {op} {layout}")
        gx, gy = torch.autograd.grad(out.sum(), (xg, yg))
        xr, yr = (t.detach().double().requires_grad_() for t in (x, y))
        rx, ry = torch.autograd.grad(ref(xr, yr).sum(), (xr, yr))
        assert_close(gx, rx, 1e-4, f"{backend} {op} {layout} grad x")
        assert_close(gy, ry, 1e-4, f"{backend} {op} {layout} grad y")


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("which", ["pred", "target"])
def test_gradient_to_one_input(backend, device, which):
    pred, target = _inputs((2, 3, 6, 7), torch.float64, device)
    (pred if which == "pred" else target).requires_grad_()
    out = _run(backend, packops.photometric_loss, pred, target)
    out.sum().backward()
    assert (pred.grad is None) == (which == "target")
    assert (target.grad is None) == (which == "pred")
    p, t = (v.detach().requires_grad_() for v in (pred, target))
    rp, rt = torch.autograd.grad(photometric_loss_reference(p, t).sum(), (p, t))
    got, want = (pred.grad, rp) if which == "pred" else (target.grad, rt)
    assert_close(got, want, 1e-12, f"{backend} grad {which}")


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", [(1, 2, 4, 5), (2, 1, 2, 3)], ids=str)
def test_gradcheck(backend, device, op, shape):
    if not _supports(backend, torch.float64):
        pytest.skip(f"{backend} does not serve float64")
    fn = OPS[op][0]
    x, y = _inputs(shape, torch.float64, device, requires_grad=True)
    with packops.use_backend(backend):
        assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend,device", FUSED)
def test_opcheck(backend, device):
    suffix = "_triton" if backend == "triton" else ""
    for need in [(True, True), (True, False), (False, True)]:
        x, y = _inputs((2, 3, 5, 6), torch.float32, device)
        x.requires_grad_(need[0])
        y.requires_grad_(need[1])
        torch.library.opcheck(getattr(torch.ops.packops, "photometric_fwd" + suffix).default,
                              (x, y, 0.85, 1e-4, 9e-4))
        torch.library.opcheck(getattr(torch.ops.packops, "ssim_fwd" + suffix).default,
                              (x, y, 1e-4, 9e-4))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_compile_fullgraph(backend, device):
    torch._dynamo.reset()
    x, y = _inputs((2, 3, 8, 9), torch.float32, device, requires_grad=True)

    def step(a, b):
        return packops.photometric_loss(a, b).mean() + packops.ssim(a, b).mean()

    with packops.use_backend(backend):
        compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
        loss = compiled(x, y)
        got = torch.autograd.grad(loss, (x, y))
        eager = step(x, y)
        want = torch.autograd.grad(eager, (x, y))
    assert_close(loss, eager, 1e-6, "compiled loss")
    for a, b in zip(got, want):
        assert_close(a, b, 1e-6, "compiled grad")


@pytest.mark.slow
def test_compile_inductor_cpu_backend():
    """The default inductor backend keeps the op in one graph with the cpu kernels."""
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    torch._dynamo.reset()
    x, y = _inputs((2, 3, 8, 9), torch.float32, "cpu", requires_grad=True)
    with packops.use_backend("cpu"):
        compiled = torch.compile(lambda a, b: packops.photometric_loss(a, b).mean() * 2,
                                 fullgraph=True)
        loss = compiled(x, y)
    loss.backward()
    want = photometric_loss_reference(x.detach(), y.detach()).mean() * 2
    assert_close(loss, want, 1e-6, "inductor")
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_identical_inputs(backend, device):
    x, _ = _inputs((2, 3, 9, 8), torch.float64, device)
    assert_close(_run(backend, packops.ssim, x, x), torch.ones_like(x), 1e-12, "ssim(x, x)")
    loss = _run(backend, packops.photometric_loss, x, x)
    assert_close(loss, torch.zeros_like(loss), 1e-12, "photometric_loss(x, x)")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_nan_propagates_to_the_same_pixels(backend, device):
    x, y = _inputs((1, 3, 7, 8), torch.float32, device)
    x[0, 1, 3, 4] = float("nan")
    y[0, 0, 0, 0] = float("nan")  # a corner: its reflected windows reach (1, 1)
    for op, (fn, ref) in OPS.items():
        xg, yg = (t.detach().requires_grad_() for t in (x, y))
        out = _run(backend, fn, xg, yg)
        want = ref(x, y)
        assert torch.equal(torch.isnan(out), torch.isnan(want)), f"{backend} {op} NaN pattern"
        assert_close(out, want, 1e-5, f"{backend} {op} with NaN")
        gx, gy = torch.autograd.grad(out.nansum(), (xg, yg))  # must not crash
        assert gx.shape == x.shape and gy.shape == y.shape


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_empty_batch(backend, device):
    x, y = _inputs((0, 3, 5, 6), torch.float32, device, requires_grad=True)
    out = _run(backend, packops.photometric_loss, x, y)
    assert out.shape == (0, 1, 5, 6)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert _run(backend, packops.ssim, x, y).shape == (0, 3, 5, 6)


def test_modules_match_functions():
    x, y = _inputs((2, 3, 6, 5), torch.float64, "cpu")
    assert_close(packops.nn.SSIM(C1=1e-3)(x, y), packops.ssim(x, y, C1=1e-3), 0, "SSIM")
    assert_close(packops.nn.PhotometricLoss(alpha=0.5)(x, y),
                 packops.photometric_loss(x, y, alpha=0.5), 0, "PhotometricLoss")
    assert "alpha=0.5" in repr(packops.nn.PhotometricLoss(alpha=0.5))
