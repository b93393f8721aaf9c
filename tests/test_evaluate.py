"""packnet.evaluate / visualize / infer / export: metrics against numbers worked
out by hand in each test, evaluate() on a stub net, colour maps, PNG round
trips, inference on a temp directory and ONNX export of a tiny PackNet.

Kept small (the machine is shared, no GPU): the only real network is a
PackNet01 architecture with 16-channel layers at 64x64.
"""
import math

import pytest
import torch
from torch import nn

import packops
from packnet.evaluate import compute_depth_metrics, evaluate, format_metrics, garg_crop_mask
from packnet.models.packnet01 import _PackNet


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def depth(rows):
    """Nested list [H][W] -> [1,1,H,W] float tensor."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


class TinyPackNet(_PackNet):
    """The PackNet01 architecture ("1A") with 16-channel layers (GroupNorm(16)
    needs multiples of 16) and two 3D features: ~0.1 M parameters."""

    def __init__(self, version="1A", dropout=None):
        super().__init__("TinyPackNet", 16, (16, 16, 16, 16, 16), 2, version, dropout)


class ConstantInvDepth(nn.Module):
    """Eval mode: inverse depth `value` everywhere, [B,1,H,W]; train mode: a
    list (like the real nets), so evaluate() must switch to eval mode."""

    def __init__(self, value=0.5):
        super().__init__()
        self.value = value
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, rgb):
        out = torch.full_like(rgb[:, :1], self.value)
        return [out, out[..., ::2, ::2]] if self.training else out


# ------------------------------------------------------------------ metrics
def test_metrics_hand_computed():
    # Valid gt pixels 2, 4, 10 (0 = no depth); their predictions 1, 4, 8.
    gt = depth([[2.0, 4.0], [0.0, 10.0]])
    pred = depth([[1.0, 4.0], [5.0, 8.0]])
    m = compute_depth_metrics(gt, pred)
    assert m["n"] == 1
    assert m["abs_rel"] == approx((1 / 2 + 0 + 2 / 10) / 3)
    assert m["sq_rel"] == approx((1 / 2 + 0 + 4 / 10) / 3)
    assert m["rmse"] == approx(math.sqrt((1 + 0 + 4) / 3))
    assert m["rmse_log"] == approx(math.sqrt((math.log(2) ** 2 + 0 + math.log(10 / 8) ** 2) / 3))
    # max(gt/pred, pred/gt) = 2, 1, 1.25: 1.25 is not < 1.25; 2 is not < 1.25^3 = 1.953
    assert m["a1"] == approx(1 / 3)
    assert m["a2"] == approx(2 / 3)
    assert m["a3"] == approx(2 / 3)
    assert "scale" not in m


def test_metrics_median_scaling():
    # Valid gt 2, 4, 10 (median 4); pred 1, 2, 3 (median 2) -> scale 2 -> 2, 4, 6.
    gt = depth([[2.0, 4.0], [0.0, 10.0]])
    pred = depth([[1.0, 2.0], [7.0, 3.0]])
    m = compute_depth_metrics(gt, pred, median_scaling=True)
    assert m["scale"] == approx(2.0)
    assert m["abs_rel"] == approx((0 + 0 + 4 / 10) / 3)
    assert m["sq_rel"] == approx((0 + 0 + 16 / 10) / 3)
    assert m["rmse"] == approx(math.sqrt(16 / 3))
    assert m["rmse_log"] == approx(math.sqrt(math.log(10 / 6) ** 2 / 3))
    # ratios 1, 1, 10/6 = 1.667: < 1.25^3 = 1.953 but not < 1.5625
    assert (m["a1"], m["a2"], m["a3"]) == (approx(2 / 3), approx(2 / 3), approx(1.0))


def test_median_scaling_even_count_uses_lower_median():
    # torch.median (as the release) takes the lower middle value: gt 1,2,3,4 -> 2,
    # pred 1,1,1,1 -> 1, scale 2 (numpy's median would say 2.5).
    gt = depth([[1.0, 2.0], [3.0, 4.0]])
    m = compute_depth_metrics(gt, torch.ones_like(gt), median_scaling=True)
    assert m["scale"] == approx(2.0)


def test_metrics_clamp_and_max_depth():
    # pred 100 clamps to max_depth 80; gt 90 (>= max_depth) is not valid.
    gt = depth([[50.0, 90.0]])
    pred = depth([[100.0, 1.0]])
    m = compute_depth_metrics(gt, pred, max_depth=80.0)
    assert m["abs_rel"] == approx(30 / 50)
    assert m["rmse"] == approx(30.0)
    # min_depth clamps a prediction of 0 up to min_depth (no division by zero)
    m = compute_depth_metrics(depth([[1.0]]), depth([[0.0]]), min_depth=0.5)
    assert m["abs_rel"] == approx(0.5)


def test_garg_crop_mask_known_size():
    # H=10: rows int(4.081)=4 .. int(9.919)=9 (exclusive); W=30: cols int(1.078)=1 .. int(28.92)=28
    mask = garg_crop_mask(10, 30)
    expected = torch.zeros(10, 30, dtype=torch.bool)
    expected[4:9, 1:28] = True
    assert torch.equal(mask, expected)
    assert int(mask.sum()) == 5 * 27


def test_metrics_garg_crop():
    # pred right inside the crop (135 pixels), off by 2x outside it (165 pixels).
    gt = torch.full((1, 1, 10, 30), 5.0)
    pred = torch.full((1, 1, 10, 30), 10.0)
    pred[..., 4:9, 1:28] = 5.0
    assert compute_depth_metrics(gt, pred, crop="garg")["abs_rel"] == approx(0.0)
    m = compute_depth_metrics(gt, pred)
    assert m["abs_rel"] == approx(165 / 300 * 1.0)
    assert m["a1"] == approx(135 / 300)
    with pytest.raises(ValueError, match="crop"):
        compute_depth_metrics(gt, pred, crop="eigen")


def test_metrics_resize_bilinear_align_corners():
    # pred [1,2] = 1, 3 resized to 1x3 with align_corners=True -> 1, 2, 3.
    gt = depth([[1.0, 2.0, 3.0]])
    assert compute_depth_metrics(gt, depth([[1.0, 3.0]]))["abs_rel"] == approx(0.0)


def test_metrics_mean_over_images_skips_images_without_depth():
    # image 0: abs_rel 0.5; image 1: abs_rel 0; image 2: no valid gt -> left out.
    gt = torch.tensor([[[[4.0]]], [[[3.0]]], [[[0.0]]]])
    pred = torch.tensor([[[[2.0]]], [[[3.0]]], [[[5.0]]]])
    m = compute_depth_metrics(gt, pred)
    assert m["n"] == 2
    assert m["abs_rel"] == approx(0.25)
    empty = compute_depth_metrics(gt[2:], pred[2:])
    assert empty["n"] == 0 and math.isnan(empty["abs_rel"])


def test_metrics_bad_shapes():
    with pytest.raises(ValueError, match=r"gt must be \[B,1,H,W\]"):
        compute_depth_metrics(torch.ones(2, 2), torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="batch sizes"):
        compute_depth_metrics(torch.ones(2, 1, 2, 2), torch.ones(1, 1, 2, 2))


# ----------------------------------------------------------------- evaluate
def _items():
    # Stub net predicts inverse depth 0.5 -> depth 2 everywhere.
    # Image A: gt 4 -> abs_rel 0.5, scale 2; image B: gt 1 -> abs_rel 1, scale 0.5.
    rgb = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    return [{"rgb": rgb, "depth": torch.full((1, 32, 32), 4.0)},
            {"rgb": rgb, "depth": torch.full((1, 32, 32), 1.0)}]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_evaluate_stub_net(batch_size):
    net = ConstantInvDepth(0.5).train()
    loader = torch.utils.data.DataLoader(_items(), batch_size=batch_size)
    result = evaluate(net, loader, "cpu", progress=False)
    assert net.training, "evaluate() must restore the net's mode"
    assert result["n"] == 2
    assert result["metric"]["abs_rel"] == approx((0.5 + 1.0) / 2)
    assert result["metric"]["rmse"] == approx((2.0 + 1.0) / 2)
    assert result["metric"]["a1"] == approx(0.0)
    assert result["scale"] == approx((2.0 + 0.5) / 2)
    assert result["median_scaled"]["abs_rel"] == approx(0.0)
    assert result["median_scaled"]["a1"] == approx(1.0)
    table = format_metrics(result)
    assert "median_scaled" in table and "abs_rel" in table and "1.2500" in table


def test_evaluate_unbatched_list_and_progress(capsys):
    result = evaluate(ConstantInvDepth(0.5), _items(), "cpu", progress=True)
    assert result["metric"]["abs_rel"] == approx(0.75)
    with pytest.raises(ValueError, match="'rgb' and 'depth'"):
        evaluate(ConstantInvDepth(), [{"image": torch.rand(3, 8, 8)}], progress=False)


def test_evaluate_tiny_packnet_runs():
    torch.manual_seed(0)
    items = [{"rgb": torch.rand(3, 64, 64), "depth": torch.rand(1, 64, 64) * 10 + 1}
             for _ in range(2)]
    with packops.use_backend("reference"):
        result = evaluate(TinyPackNet(), items, "cpu", crop="garg", progress=False)
    assert result["n"] == 2
    for part in ("metric", "median_scaled"):
        assert all(math.isfinite(v) for v in result[part].values())
    # depth = 1/inv, inv in (0, 2): every prediction is > 0.5
    assert result["scale"] > 0
