"""packnet.evaluate / visualize / infer / export: metrics against numbers worked
out by hand in each test, evaluate() on a stub net, colour maps, labelled
pictures, inference on a temp directory and ONNX export of a tiny PackNet.

Kept small (the machine is shared, no GPU): the only real network is a
PackNet01 architecture with 16-channel layers at 64x64.
"""
import importlib.util
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

import packops
from packnet.evaluate import compute_depth_metrics, evaluate, format_metrics, garg_crop_mask
from packnet.export import export_onnx
from packnet.infer import infer, load_depth_net
from packnet.models.packnet01 import _PackNet
from packnet.image import read_image, write_image
from packnet.visualize import COLORMAPS, colorize_depth, preview

HAVE_ONNX = importlib.util.find_spec("onnx") is not None
HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None


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


# ---------------------------------------------------------------- visualize
def _luminance(img):
    return img.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])


def test_colorize_monotonic_and_shapes():
    ramp = torch.linspace(0.1, 2.0, 200).view(1, 200).expand(3, 200)
    img = colorize_depth(ramp, percentiles=(0.0, 100.0))
    assert img.shape == (3, 200, 3) and img.dtype == np.uint8
    lum = _luminance(img[0])
    # brighter for larger values; rounding each channel to uint8 may dip < 1 level
    assert np.diff(lum).min() > -1.0 and lum[-1] - lum[0] > 200
    assert np.array_equal(img[0], img[2])
    # depth shown as inverse depth: near (small depth) is bright
    inv_img = colorize_depth(ramp[:1], inverse=True, percentiles=(0.0, 100.0))
    assert _luminance(inv_img[0])[0] > _luminance(inv_img[0])[-1]
    # [1,H,W] input, invalid pixels black, vmin/vmax clip
    x = torch.tensor([[[0.0, 1.0, float("nan"), 5.0]]])
    out = colorize_depth(x, vmin=1.0, vmax=2.0)
    assert out.shape == (1, 4, 3)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 2].tolist() == [0, 0, 0]
    assert out[0, 3].tolist() == COLORMAPS["magma"][-1].tolist()
    assert out[0, 1].tolist() == COLORMAPS["magma"][0].tolist()
    assert colorize_depth(torch.zeros(4, 5)).sum() == 0
    with pytest.raises(ValueError, match="cmap"):
        colorize_depth(ramp, cmap="jet")


def test_colormap_table_lightness_monotonic():
    from packnet.visualize import _MAGMA_POINTS
    assert np.all(np.diff(_MAGMA_POINTS @ np.array([0.2126, 0.7152, 0.0722])) > 0)


def test_preview_stacks_rows():
    rgb = torch.rand(3, 16, 24)
    pred = torch.rand(1, 8, 12) * 10 + 1  # half size: resized
    img = preview(rgb, pred)
    assert img.shape == (32, 24, 3) and img.dtype == np.uint8
    assert np.array_equal(img[:16], (rgb.permute(1, 2, 0) * 255).round().byte().numpy())
    gt = torch.zeros(1, 16, 24)
    gt[0, ::3, ::3] = 5.0
    img = preview(rgb, pred, gt)
    assert img.shape == (48, 24, 3)
    assert img[16:32].reshape(-1, 3).sum(1).min() > 0  # dense prediction: no black
    assert img[32 + 1, 1].tolist() == [0, 0, 0]  # no gt -> black
    assert img[32, 0].sum() > 0


# -------------------------------------------------------------------- infer
def _write_images(directory):
    rng = np.random.default_rng(0)
    write_image(str(directory / "a.png"), rng.integers(0, 256, (40, 70, 3), dtype=np.uint8))
    write_image(str(directory / "b.png"), rng.integers(0, 256, (64, 48), dtype=np.uint8))  # grey
    (directory / "notes.txt").write_text("not an image")


def _tiny_checkpoint(path):
    torch.manual_seed(0)
    net = TinyPackNet()
    torch.save({"model": {"depth_net": net.state_dict(), "pose_net": {}},
                "config": {"model": "TinyPackNet", "model_kwargs": {"version": "1A"}}}, path)
    return net


def test_infer_directory_with_checkpoint(tmp_path, monkeypatch):
    import packnet.models
    # the checkpoint names a class of packnet.models: register the tiny one there
    monkeypatch.setattr(packnet.models, "TinyPackNet", TinyPackNet, raising=False)
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    _write_images(images)
    net = _tiny_checkpoint(tmp_path / "ck.pt")
    loaded = load_depth_net(tmp_path / "ck.pt")
    assert not loaded.training
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k

    with packops.use_backend("reference"):
        written = infer(str(images), str(tmp_path / "ck.pt"), str(out))
    names = [os.path.basename(p) for p in written]
    assert names == ["a_depth.png", "a_depth.npy", "b_depth.png", "b_depth.npy"]
    a = np.load(out / "a_depth.npy")
    assert a.shape == (40, 70) and a.dtype == np.float32
    assert np.all(a > 0.5) and np.all(np.isfinite(a))  # depth = 1 / (0..2)
    assert read_image(str(out / "a_depth.png")).shape == (40, 70, 3)
    assert np.load(out / "b_depth.npy").shape == (64, 48)  # ran at 64x64 (48 -> 64)

    # a module works too, and a fixed network size gives the same output size
    with packops.use_backend("reference"):
        written = infer(str(images / "a.png"), loaded, str(tmp_path / "o2"), size=(64, 96))
    assert np.load(written[1]).shape == (40, 70)


def test_infer_and_load_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        infer(str(tmp_path / "missing.png"), ConstantInvDepth(), str(tmp_path / "o"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="bad.png"):
        infer(str(bad), ConstantInvDepth(), str(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_depth_net(tmp_path / "nope.pt")
    torch.save({"model": {"depth_net": {}}, "config": {"model": "NoSuchNet"}}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="unknown model 'NoSuchNet'"):
        load_depth_net(tmp_path / "c.pt")
    torch.save({"weights": 1}, tmp_path / "d.pt")
    with pytest.raises(ValueError, match="not a packnet checkpoint"):
        load_depth_net(tmp_path / "d.pt")
    with pytest.raises(ValueError, match="multiples of 32"):
        infer(str(tmp_path), ConstantInvDepth(), str(tmp_path / "o"), size=(40, 64))


def test_load_checkpoint_with_numpy_state(tmp_path, monkeypatch):
    """Checkpoints written before the RNG states became tensors hold numpy
    arrays: they load with weights_only (numpy arrays allowed, nothing else);
    a pickle that needs any other global is refused unless trust=True."""
    import fractions

    import packnet.models
    monkeypatch.setattr(packnet.models, "TinyPackNet", TinyPackNet, raising=False)
    state = {"model": {"depth_net": TinyPackNet().state_dict()},
             "config": {"model": "TinyPackNet"}, "rng": {"numpy": np.random.get_state()}}
    torch.save(state, tmp_path / "ck.pt")
    assert isinstance(load_depth_net(tmp_path / "ck.pt"), TinyPackNet)
    state["note"] = fractions.Fraction(1, 3)
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"old.pt.*fractions.Fraction.*trust"):
        load_depth_net(tmp_path / "old.pt")
    assert isinstance(load_depth_net(tmp_path / "old.pt", trust=True), TinyPackNet)


def test_model_outside_packnet_needs_trust(tmp_path):
    """config['model'] = 'module:Class' imports a module: that runs code, so
    only a trusted checkpoint may name one."""
    torch.save({"model": {"depth_net": {}}, "config": {"model": "collections:OrderedDict"}},
               tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"m.pt.*collections:OrderedDict.*trust"):
        load_depth_net(tmp_path / "m.pt")


# ------------------------------------------------------------------- export
def test_export_onnx_tiny_packnet(tmp_path):
    if not HAVE_ONNX:
        pytest.skip("onnx is not installed: pip install onnx onnxruntime")
    net = TinyPackNet().train()
    diff = export_onnx(net, str(tmp_path / "tiny.onnx"), size=(64, 64))
    assert net.training, "export_onnx must restore the net's mode"
    assert (tmp_path / "tiny.onnx").stat().st_size > 0
    if HAVE_ORT:
        assert diff is not None and diff < 1e-4
    else:
        assert diff is None
    with pytest.raises(ValueError, match="multiples of 32"):
        export_onnx(net, str(tmp_path / "x.onnx"), size=(60, 64))


def test_export_missing_onnx_says_what_to_install(tmp_path, monkeypatch):
    def no_onnx(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'onnx'")
    monkeypatch.setattr(torch.onnx, "export", no_onnx)
    with pytest.raises(RuntimeError, match="pip install onnx onnxruntime"):
        export_onnx(ConstantInvDepth(), str(tmp_path / "x.onnx"), size=(32, 32))


# --------------------------------------------------------------------- pose
def test_snippet_ate_convention():
    """monodepth2's compute_ate: first positions aligned, least-squares scale,
    sqrt(sum of squared errors) / N."""
    from packnet.evaluate import snippet_ate
    gt = torch.tensor([[0.0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3]], dtype=torch.float64)
    ate, scale = snippet_ate(gt, gt * 0.5, align_scale=True)
    assert ate == pytest.approx(0.0, abs=1e-12) and scale == pytest.approx(2.0)
    ate, scale = snippet_ate(gt, gt * 0.5, align_scale=False)
    assert scale == 1.0 and ate == pytest.approx(math.sqrt(0.25 + 1 + 2.25) / 4)
    shifted = gt + torch.tensor([5.0, 0, 0], dtype=torch.float64)  # the start is aligned
    assert snippet_ate(gt, shifted, align_scale=False)[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_evaluate_pose_against_exact_poses(monkeypatch, factor):
    """A pose net that returns the exact relative poses (translation times
    `factor`) gives metric ATE 0 at factor 1, and at 0.5 a metric error with
    a scale-aligned ATE of 0 and an alignment scale of 2."""
    import packnet.evaluate as ev
    from packnet.data import SyntheticDriving
    from packnet.data.scene import target_to_context
    data = SyntheticDriving(split="test", size=(32, 64), num_sequences=2, frames_per_sequence=7)
    table = {}

    class Exact(nn.Module):
        def forward(self, image, context):
            codes = []
            for img in image:
                s, t = next((s, t) for s in range(data.num_sequences)
                            for t in range(data.frames_per_sequence)
                            if torch.equal(data.frame(s, t)[0], img))
                _, traj = data.sequence(s)
                row = []
                for j, c in enumerate((t - 1, t + 1)):
                    T = torch.as_tensor(target_to_context(traj, t, c), dtype=torch.float64)
                    T[:3, 3] *= factor
                    table[len(table)] = T
                    row.append([float(len(table) - 1)] + [0.0] * 5)
                codes.append(row)
            return torch.tensor(codes, dtype=torch.float64)

    monkeypatch.setattr(ev, "pose_vec2mat", lambda v: torch.stack([table[int(c)] for c in v[:, 0]]))
    r = ev.evaluate_pose(Exact(), data, batch_size=3)
    assert r["snippets"] == 2 * (7 - 5 + 1) and r["snippet"] == 5
    assert r["ate_scaled"]["mean"] < 1e-9
    assert r["scale"] == pytest.approx(1 / factor, rel=1e-6)
    if factor == 1.0:
        assert r["ate"]["mean"] < 1e-9
    else:
        assert r["ate"]["mean"] > 0.01
    assert "metric" in ev.format_pose(r)


def test_evaluate_pose_needs_poses():
    from packnet.evaluate import evaluate_pose
    with pytest.raises(ValueError, match="no ground-truth poses"):
        evaluate_pose(nn.Identity(), [1, 2, 3])


# ----------------------------------------------------------------- pictures
def test_labelled_preview_is_large_labelled_and_has_a_colour_bar():
    from packnet.visualize import labelled_preview, test_strip
    rgb = torch.rand(3, 16, 48)
    gt = torch.rand(1, 16, 48) * 20 + 2
    gt[:, :3] = 0  # no depth: black in the ground truth and the error map
    pred = gt + 1
    img = labelled_preview(rgb, pred, gt)
    assert img.dtype == np.uint8 and img.shape[1] >= 576 and img.shape[1] % 48 == 0
    k = img.shape[1] // 48
    # four panels of 16k rows each below a header, then the colour bar
    assert img.shape[0] > 4 * 16 * k
    head = img[:22]
    assert (head == 255).any() and (head == 24).any()  # white label text on the dark header
    only_pred = labelled_preview(rgb, pred)
    assert only_pred.shape[0] < img.shape[0]  # no ground truth: no gt and error panels
    strip = test_strip([(rgb, pred, gt)] * 3)
    assert strip.shape[1] == 3 * 48 * 2 + 2 * 8
    with pytest.raises(ValueError, match="no frames"):
        test_strip([])


def test_colorize_depth_takes_more_than_2_pow_24_pixels():
    """A 6000x4000 photo has 24M pixels; torch.quantile refuses over 2**24.
    Here 4097x4096 values 1..1000: the colour range is the exact (min, 95th
    percentile), computed without a sort."""
    x = (torch.arange(4097 * 4096, dtype=torch.int32) % 1000 + 1).float().reshape(4097, 4096)
    img = colorize_depth(x)
    table = COLORMAPS["magma"]
    assert img.shape == (4097, 4096, 3)
    assert (img[0, 0] == table[0]).all() and (img[0, 999] == table[-1]).all()   # 1, 1000
    del img, x
    from packnet.visualize import _quantile
    small = torch.rand(999, generator=torch.Generator().manual_seed(0))
    for q in (0.0, 0.3, 0.95, 1.0):
        assert _quantile(small, q) == float(torch.quantile(small.double(), q))


@pytest.mark.parametrize("width", [1, 7, 40, 64, 136, 200, 300])
def test_the_colour_bar_draws_at_any_width(width):
    """A test strip of one or two 32x32 frames (64, 136 pixels) is narrower than
    the title beside a bar: the title goes above and the bar spans the picture."""
    from packnet.visualize import _colour_bar
    bar = _colour_bar(width, 1 / 80, 1 / 2, "magma")
    assert bar.shape[1] == width and bar.dtype == np.uint8
    magma = {tuple(c) for c in COLORMAPS["magma"]}
    ramp_row = [r for r in bar if sum(tuple(p) in magma for p in r) >= max(1, min(width // 2, 64))]
    assert ramp_row, "the colour ramp is missing"


@pytest.mark.parametrize("frames", [1, 2, 4])
def test_a_test_strip_of_small_frames_draws(frames):
    from packnet.visualize import test_strip
    rgb, gt = torch.rand(3, 32, 32), torch.rand(1, 32, 32) * 20 + 2
    strip = test_strip([(rgb, gt + 1, gt)] * frames)
    assert strip.shape[1] == frames * 64 + (frames - 1) * 8


def test_the_drawing_code_makes_pictures_of_the_committed_pictures_size():
    """docs/synthetic-tiny-{preview,test-strip}.png come from a training run on
    64x192 frames (four in the test strip); the same layout still comes out
    (the labels' font may differ: Pillow's default font since issue 25)."""
    from packnet.image import image_size
    from packnet.visualize import labelled_preview, test_strip
    docs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")
    rgb, gt = torch.rand(3, 64, 192), torch.rand(1, 64, 192) * 20 + 2
    for name, img in (("synthetic-tiny-preview.png", labelled_preview(rgb, gt + 1, gt)),
                      ("synthetic-tiny-test-strip.png", test_strip([(rgb, gt + 1, gt)] * 4))):
        assert image_size(os.path.join(docs, name)) == img.shape[:2], name
