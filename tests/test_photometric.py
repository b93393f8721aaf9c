"""ssim / photometric_loss: the op contract (tests/contract.py) on every
backend present, plus known answers and the nn.Module drop-ins."""
import pytest
import torch

import packops
from packops.photometric import photometric_loss_reference, ssim_reference

from _assert import assert_close
from conftest import BACKEND_DEVICE
from contract import OpContract

# odd sizes, the minimum 2x2, batch 1, and sizes that cross the CPU band
# (32 rows) and the Triton/CUDA tile edges
SHAPES = {"2x3x7x9": (2, 3, 7, 9), "1x1x2x2": (1, 1, 2, 2), "1x3x2x5": (1, 3, 2, 5),
          "3x2x11x4": (3, 2, 11, 4), "1x3x34x70": (1, 3, 34, 70)}
ok = torch.rand(2, 3, 5, 6)


def _pair(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    # target near pred, as in training, so the clamp and L1 signs both vary
    y = (x + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return [x, y]


def _bad_pairs(a, b):
    """Bad tensor pairs for both ops (a, b are the argument names)."""
    return [
        ("shape", (ok, torch.rand(2, 3, 5, 7)), {}, ValueError,
         rf"{a} and {b} must have the same shape.*\(2, 3, 5, 6\).*\(2, 3, 5, 7\)"),
        ("3d", (ok[0], ok[0].clone()), {}, ValueError, r"4 dimensions.*\(3, 5, 6\)"),
        ("int", (torch.ones(2, 3, 5, 6, dtype=torch.int64), ok), {}, ValueError,
         r"floating-point.*int64"),
        ("dtypes", (ok, ok.double()), {}, ValueError, r"same dtype.*float32.*float64"),
        ("H1", (torch.rand(2, 3, 1, 6), torch.rand(2, 3, 1, 6)), {}, ValueError,
         r"H >= 2 and W >= 2.*\(2, 3, 1, 6\)"),
        ("W1", (torch.rand(2, 3, 5, 1), torch.rand(2, 3, 5, 1)), {}, ValueError, r"H >= 2 and W >= 2"),
        ("device", (ok, torch.rand(2, 3, 5, 6, device="meta")), {}, ValueError,
         r"same device.*cpu.*meta"),
        ("numpy", (ok, ok.numpy()), {}, TypeError, rf"{b} must be a torch.Tensor"),
        ("C1-inf", (ok, ok), {"C1": float("inf")}, ValueError, "C1 must be a finite number"),
        ("C2-str", (ok, ok), {"C2": "x"}, ValueError, "C2 must be a finite number"),
    ]


class _PairOp(OpContract):
    SHAPES = SHAPES
    LOW_SHAPE = (2, 3, 9, 37)
    AUTOCAST = False  # a loss: runs in its inputs' dtype under autocast
    GRADCHECK_SHAPE = (1, 2, 4, 5)
    OPCHECK_SHAPE = (2, 3, 5, 6)
    LAYOUTS = ("transposed", "channels_last", "strided")
    BATCHED = (0, 1)

    def make(self, shape, seed=0):
        return _pair(shape, seed)


class TestSSIM(_PairOp):
    fn = packops.ssim
    reference = ssim_reference
    NAMES = GRADS = ("x", "y")
    KERNELS = ("ssim_fwd",)

    BAD = _bad_pairs("x", "y")

    def kernel_args(self, args, kwargs):
        return "ssim_fwd", (*args, kwargs.get("C1", 1e-4), kwargs.get("C2", 9e-4))


class TestPhotometricLoss(_PairOp):
    fn = packops.photometric_loss
    reference = photometric_loss_reference
    NAMES = GRADS = ("pred", "target")
    KERNELS = ("photometric_fwd",)

    BAD = _bad_pairs("pred", "target") + [
        ("no-channels", (torch.rand(1, 0, 4, 4), torch.rand(1, 0, 4, 4)), {}, ValueError,
         "at least one channel"),
        ("alpha-nan", (ok, ok), {"alpha": float("nan")}, ValueError,
         "alpha must be a finite number"),
    ]

    def kernel_args(self, args, kwargs):
        return "photometric_fwd", (*args, kwargs.get("alpha", 0.85), kwargs.get("C1", 1e-4),
                                   kwargs.get("C2", 9e-4))


# ------------------------------------------------------------ known answers
@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_identical_inputs(backend, device):
    x, _ = (t.to(device) for t in _pair((2, 3, 9, 8), 0))
    with packops.use_backend(backend):
        assert_close(packops.ssim(x, x), torch.ones_like(x), 1e-12, "ssim(x, x)")
        loss = packops.photometric_loss(x, x)
    assert_close(loss, torch.zeros_like(loss), 1e-12, "photometric_loss(x, x)")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_known_ssim_of_constant_images(backend, device):
    """Constant images a, b: every moment is exact, ssim = (2ab + C1) / (a^2 + b^2 + C1)
    and the loss is 0.85 (1 - ssim) / 2 + 0.15 |a - b|."""
    a, b = 0.25, 0.75
    x = torch.full((1, 2, 4, 5), a, dtype=torch.float64, device=device)
    y = torch.full((1, 2, 4, 5), b, dtype=torch.float64, device=device)
    want = (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)
    with packops.use_backend(backend):
        assert_close(packops.ssim(x, y), torch.full_like(x, want), 1e-12, "ssim")
        loss = packops.photometric_loss(x, y)
    assert_close(loss, torch.full_like(loss, 0.85 * (1 - want) / 2 + 0.15 * (b - a)), 1e-12, "loss")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_nan_in_a_corner_reaches_its_reflected_windows(backend, device):
    """A NaN at (0, 0): the reflected windows of (0,0), (0,1), (1,0) and (1,1) see it."""
    x, y = (t.float().to(device) for t in _pair((1, 3, 7, 8), 0))
    y[0, 0, 0, 0] = float("nan")
    with packops.use_backend(backend):
        s = packops.ssim(x, y)
    want = torch.zeros(7, 8, dtype=torch.bool)
    want[:2, :2] = True
    assert torch.equal(torch.isnan(s[0, 0]).cpu(), want)
    assert not torch.isnan(s[0, 1:]).any()


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_ssim_of_no_channels_is_empty(backend, device):
    x = torch.rand(2, 0, 4, 5, device=device, requires_grad=True)
    with packops.use_backend(backend):
        out = packops.ssim(x, torch.rand(2, 0, 4, 5, device=device))
    assert out.shape == (2, 0, 4, 5)
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.slow
def test_compile_inductor_cpu_backend():
    """The default inductor backend keeps the op in one graph with the cpu kernels."""
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    torch._dynamo.reset()
    x, y = (t.float().requires_grad_() for t in _pair((2, 3, 8, 9), 0))
    with packops.use_backend("cpu"):
        compiled = torch.compile(lambda a, b: packops.photometric_loss(a, b).mean() * 2,
                                 fullgraph=True)
        loss = compiled(x, y)
    loss.backward()
    want = photometric_loss_reference(x.detach(), y.detach()).mean() * 2
    assert_close(loss, want, 1e-6, "inductor")
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_modules_match_functions():
    x, y = _pair((2, 3, 6, 5), 0)
    assert_close(packops.nn.SSIM(C1=1e-3)(x, y), packops.ssim(x, y, C1=1e-3), 0, "SSIM")
    assert_close(packops.nn.PhotometricLoss(alpha=0.5)(x, y),
                 packops.photometric_loss(x, y, alpha=0.5), 0, "PhotometricLoss")
    assert "alpha=0.5" in repr(packops.nn.PhotometricLoss(alpha=0.5))


def test_backend_that_cannot_serve_the_dtype():
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    h = ok.half()
    with packops.use_backend("cpu"), pytest.raises(RuntimeError, match="cpu.*float16"):
        packops.photometric_loss(h, h)
    # the compiled op itself refuses too, for callers that bypass the dispatch
    with pytest.raises(RuntimeError, match="cpu backend supports float32 and float64"):
        torch.ops.packops.photometric_fwd(h, h, 0.85, 1e-4, 9e-4)


def test_compiled_op_checks_shapes():
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    with pytest.raises(RuntimeError, match=r"pred and target must have the same shape"):
        torch.ops.packops.photometric_fwd(ok, ok[:, :, :4], 0.85, 1e-4, 9e-4)
    with pytest.raises(RuntimeError, match=r"grad must have shape \[2, 1, 5, 6\]"):
        torch.ops.packops.photometric_bwd(ok, ok, ok, 0.85, 1e-4, 9e-4, True, True)
    with pytest.raises(RuntimeError, match=r"alpha must be a finite number"):
        torch.ops.packops.photometric_fwd(ok, ok, float("nan"), 1e-4, 9e-4)
