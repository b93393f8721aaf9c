"""Bad input raises errors that name the argument and the shapes."""
import pytest
import torch

import packops

OPS = [packops.photometric_loss, packops.ssim]
ok = torch.rand(2, 3, 5, 6)


@pytest.mark.parametrize("fn", OPS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
@pytest.mark.parametrize("a,b,match", [
    (ok, torch.rand(2, 3, 5, 7), r"same shape.*\(2, 3, 5, 6\).*\(2, 3, 5, 7\)"),
    (ok[0], ok[0].clone(), r"4 dimensions.*\(3, 5, 6\)"),
    (torch.ones(2, 3, 5, 6, dtype=torch.int64), ok, r"floating-point.*int64"),
    (ok, ok.double(), r"same dtype.*float32.*float64"),
    (torch.rand(2, 3, 1, 6), torch.rand(2, 3, 1, 6), r"H >= 2 and W >= 2.*\(2, 3, 1, 6\)"),
    (torch.rand(2, 3, 5, 1), torch.rand(2, 3, 5, 1), r"H >= 2 and W >= 2"),
    (ok, torch.rand(2, 3, 5, 6, device="meta"), r"same device.*cpu.*meta"),
])
def test_bad_tensors(fn, backend, a, b, match):
    with packops.use_backend(backend), pytest.raises(ValueError, match=match):
        fn(a, b)


def test_argument_names_in_messages():
    with pytest.raises(ValueError, match="pred and target"):
        packops.photometric_loss(ok, ok[:, :2])
    with pytest.raises(ValueError, match="x and y"):
        packops.ssim(ok, ok[:, :2])
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        packops.photometric_loss(ok, ok.numpy())
    with pytest.raises(ValueError, match="at least one channel"):
        packops.photometric_loss(torch.rand(1, 0, 4, 4), torch.rand(1, 0, 4, 4))


@pytest.mark.parametrize("kw", [{"alpha": float("nan")}, {"C1": float("inf")}, {"C2": "x"}])
def test_bad_scalars(kw):
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        packops.photometric_loss(ok, ok, **kw)


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
