"""group_norm_elu: the op contract (tests/contract.py) on every backend
present, plus known answers and the statistics it returns."""
import pytest
import torch
import torch.nn.functional as F

import packops
from packops.norm import group_norm_elu_reference

from _assert import assert_close, rounding_floor
from conftest import BACKEND_DEVICE, FUSED
from contract import OpContract

x = torch.randn(2, 8, 5, 6)
w, b = torch.randn(8), torch.randn(8)


class TestGroupNormElu(OpContract):
    fn = packops.group_norm_elu
    reference = group_norm_elu_reference
    NAMES = ("x", "weight", "bias", "groups")
    GRADS = ("x", "weight", "bias")
    KERNELS = ("group_norm_elu_fwd",)
    # (B, C, H, W, groups): odd sizes, one channel per group, one group, batch 1,
    # a 1x1 plane, and planes larger than a Triton/CUDA block
    SHAPES = {"2x8x5x7-g4": (2, 8, 5, 7, 4), "1x4x3x3-g4": (1, 4, 3, 3, 4),
              "3x6x4x5-g1": (3, 6, 4, 5, 1), "2x16x1x1-g16": (2, 16, 1, 1, 16),
              "1x32x33x40-g16": (1, 32, 33, 40, 16)}
    LOW_SHAPE = (2, 16, 9, 13, 4)
    GRADCHECK_SHAPE = (2, 4, 3, 4, 2)
    OPCHECK_SHAPE = (2, 8, 4, 5, 4)
    BAD = [
        ("groups", (x, w, b, 3), {}, ValueError,
         r"channels of x \(8\) must be divisible by groups = 3"),
        ("groups0", (x, w, b, 0), {}, ValueError, r"groups must be a positive int, got 0"),
        ("3d", (x[0], w, b, 4), {}, ValueError, r"x must have 4 dimensions"),
        ("int", (x.long(), w, b, 4), {}, ValueError, r"x must be a floating-point"),
        ("weight-shape", (x, w[:4], b, 4), {}, ValueError,
         r"weight must be \[C\] = \[8\] for x \(2, 8, 5, 6\), got shape \(4,\)"),
        ("bias-dtype", (x, w, b.double(), 4), {}, ValueError, r"x and bias must have the same dtype"),
        ("weight-device", (x, w.to("meta"), b, 4), {}, ValueError,
         r"x and weight must be on the same device"),
        ("eps0", (x, w, b, 4), {"eps": 0.0}, ValueError, r"eps must be > 0"),
        ("alpha-nan", (x, w, b, 4), {"alpha": float("nan")}, ValueError,
         r"alpha must be a finite number"),
    ]

    def make(self, shape, seed=0):
        B, C, H, W, G = shape
        g = torch.Generator().manual_seed(seed)
        # an offset and a spread per channel, as conv outputs have them
        xs = (torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
              * (0.5 + torch.rand(1, C, 1, 1, generator=g, dtype=torch.float64))
              + torch.randn(1, C, 1, 1, generator=g, dtype=torch.float64))
        weight = 1 + 0.3 * torch.randn(C, generator=g, dtype=torch.float64)
        bias = 0.3 * torch.randn(C, generator=g, dtype=torch.float64)
        return [xs, weight, bias, G]

    def floors(self, ex, pos, grad, dtype):
        """Rounding floors of the op's reductions (tests/_assert.py), in the
        order of pos: the weight and bias gradients sum over the batch and the
        plane (n = B*H*W terms: gz * xhat and gz, with gz = grad * elu'(z)),
        and the input gradient holds two means over each group (n = C/G*H*W
        terms: dxhat = gz * weight and dxhat * xhat), scaled by rstd. The
        forward's statistics are left to the 2x-reference rule."""
        xs, weight, bias, groups = [a.detach() if torch.is_tensor(a) else a for a in ex]
        B, C, H, W = xs.shape
        xg = xs.view(B, groups, -1)
        rstd = (xg.var(2, unbiased=False, keepdim=True) + 1e-5).rsqrt()
        xhat = ((xg - xg.mean(2, keepdim=True)) * rstd).view_as(xs)
        z = xhat * weight.view(1, C, 1, 1) + bias.view(1, C, 1, 1)
        gz = (grad * torch.where(z > 0, torch.ones_like(z), z.exp())).abs()
        plane = torch.full((C,), float(B * H * W), dtype=torch.float64)
        group = torch.full((B, groups, 1), float(C // groups * H * W), dtype=torch.float64)
        dxhat = (gz * weight.abs().view(1, C, 1, 1)).view(B, groups, -1)
        means = (rounding_floor(dxhat.sum(2, keepdim=True), group, dtype)
                 + rounding_floor((dxhat * xhat.abs().view_as(dxhat)).sum(2, keepdim=True),
                                  group, dtype) * xhat.abs().view_as(dxhat)) / group
        floor = {"x": (rstd * means).view_as(xs),
                 "weight": rounding_floor((gz * xhat.abs()).sum((0, 2, 3)), plane, dtype),
                 "bias": rounding_floor(gz.sum((0, 2, 3)), plane, dtype)}
        return [None] + [floor[self.NAMES[i]] for i in pos]

    def kernel_args(self, args, kwargs):
        xx, weight, bias, groups = args
        return "group_norm_elu_fwd", (xx, weight, bias, groups, kwargs.get("eps", 1e-5),
                                      kwargs.get("alpha", 1.0))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_constant_groups_give_elu_of_the_bias(backend, device):
    """A constant group normalises to 0: the output is elu(bias), and with one
    weight and bias per group the input gradient is 0 (the mean absorbs any
    change)."""
    xs = torch.full((2, 4, 3, 5), 7.0, dtype=torch.float64, device=device, requires_grad=True)
    weight = torch.tensor([2.0, 2.0, -1.0, -1.0], dtype=torch.float64, device=device)
    bias = torch.tensor([0.5, 0.5, -2.0, -2.0], dtype=torch.float64, device=device)
    with packops.use_backend(backend):
        out = packops.group_norm_elu(xs, weight, bias, 2)
    want = F.elu(bias).view(1, 4, 1, 1).expand_as(out)
    assert_close(out, want, 1e-12, "elu(bias)")
    (g,) = torch.autograd.grad(out.sum(), xs)
    assert_close(g, torch.zeros_like(g), 1e-12, "input gradient")


@pytest.mark.parametrize("backend,device", FUSED)
def test_statistics_are_group_norms(backend, device):
    """The forward kernel's mean and rstd are torch.native_group_norm's."""
    xs = torch.randn(3, 8, 6, 7, dtype=torch.float64, device=device)
    weight, bias = torch.ones(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    y, mean, rstd = packops._library.kernel("group_norm_elu_fwd", backend)(
        xs, weight.to(device), bias.to(device), 4, 1e-5, 1.0)
    _, want_mean, want_rstd = torch.native_group_norm(xs, weight.to(device), bias.to(device),
                                                      3, 8, 42, 4, 1e-5)
    assert_close(mean, want_mean, 1e-12, "mean")
    assert_close(rstd, want_rstd, 1e-10, "rstd")


def test_none_weight_and_bias_mean_identity():
    xs = torch.randn(2, 8, 3, 4)
    torch.testing.assert_close(packops.group_norm_elu(xs, None, None, 4),
                               F.elu(F.group_norm(xs, 4, None, None)))


@pytest.mark.parametrize("backend,device", FUSED)
def test_alpha_and_eps(backend, device):
    xs, weight, bias, _ = TestGroupNormElu().make((2, 8, 4, 5, 2), seed=3)
    args = [t.to(device) for t in (xs, weight, bias)]
    with packops.use_backend(backend):
        out = packops.group_norm_elu(*args, 2, eps=0.1, alpha=0.3)
    assert_close(out, group_norm_elu_reference(*args, 2, eps=0.1, alpha=0.3), 1e-12, "eps, alpha")
