"""pack3d / unpack3d / pack_conv: bad input raises errors that name the
argument and the shapes, on every backend (checks run before dispatch), and
the compiled ops check too."""
import pytest
import torch

import packops

x = torch.rand(2, 3, 4, 6)
w3, b3 = torch.rand(4, 1, 3, 3, 3), torch.rand(4)
w2, b2 = torch.rand(5, 4 * 4 * 3, 3, 3), torch.rand(5)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
@pytest.mark.parametrize("fn", [packops.pack3d, packops.unpack3d], ids=lambda f: f.__name__)
@pytest.mark.parametrize("args,match", [
    ((x[0], w3, b3), r"x must have 4 dimensions.*\(3, 4, 6\)"),
    ((x.long(), w3, b3), r"x must be a floating-point.*int64"),
    ((x, w3[:, :, :2], b3), r"weight must be \[d,1,3,3,3\].*\(4, 1, 2, 3, 3\)"),
    ((x, w3.expand(4, 2, 3, 3, 3), b3), r"weight must be \[d,1,3,3,3\].*\(4, 2, 3, 3, 3\)"),
    ((x, w3, b3[:3]), r"bias must be \[4\] for weight \(4, 1, 3, 3, 3\), got shape \(3,\)"),
    ((x, w3.double(), b3), r"x and weight must have the same dtype.*float32.*float64"),
    ((x, w3, b3.to("meta")), r"x and bias must be on the same device.*cpu.*meta"),
    ((x, w3, b3.int()), r"bias must be a floating-point"),
])
def test_bad_tensors(backend, fn, args, match):
    with packops.use_backend(backend), pytest.raises(ValueError, match=match):
        fn(*args)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_sizes_not_divisible(backend):
    with packops.use_backend(backend):
        with pytest.raises(ValueError, match=r"pack3d: H and W of x must be divisible by r = 2.*"
                                             r"\(2, 3, 5, 6\)"):
            packops.pack3d(torch.rand(2, 3, 5, 6), w3, b3)
        with pytest.raises(ValueError, match=r"divisible by r = 3.*\(2, 3, 4, 6\)"):
            packops.pack_conv(x, w3, b3, w2, b2, r=3)
        with pytest.raises(ValueError, match=r"unpack3d: d\*C = 3\*3 must be divisible by "
                                             r"r\*r = 4"):
            packops.unpack3d(x, w3[:3], b3[:3])
        with pytest.raises(ValueError, match=r"r must be a positive int, got 0"):
            packops.pack3d(x, w3, b3, r=0)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
@pytest.mark.parametrize("args,match", [
    ((x, w3, b3, w2[:, :40], b2), r"w2 must be \[Cout, d\*r\*r\*C, k, k\] = \[Cout, 48, k, k\].*"
                                  r"got shape \(5, 40, 3, 3\)"),
    ((x, w3, b3, torch.rand(5, 48, 2, 2), b2), r"k odd.*\(5, 48, 2, 2\)"),
    ((x, w3, b3, torch.rand(5, 48, 3, 5), b2), r"w2 must be.*\(5, 48, 3, 5\)"),
    ((x, w3, b3, w2, b2[:4]), r"b2 must be \[5\] for w2 \(5, 48, 3, 3\), got shape \(4,\)"),
    ((x, w3, b3, w2.double(), b2), r"x and w2 must have the same dtype"),
    ((x, w3[:, :, :2], b3, w2, b2), r"w3 must be \[d,1,3,3,3\]"),
    ((x, w3, b3[:2], w2, b2), r"b3 must be \[4\]"),
    ((x, w3, b3, w2, b2.to("meta")), r"x and b2 must be on the same device"),
])
def test_pack_conv_bad_weights(backend, args, match):
    with packops.use_backend(backend), pytest.raises(ValueError, match=match):
        packops.pack_conv(*args)


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
