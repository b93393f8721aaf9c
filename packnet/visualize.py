"""Depth pictures without matplotlib: colour maps, PNG files, previews.

colorize_depth(x [H,W]) -> uint8 [H,W,3]; save_png(path, img); load_png(path);
preview(rgb [3,H,W], pred_depth [1,H,W], gt_depth=None) -> uint8 [kH,W,3].

The colour maps are our own tables: "magma" is a piecewise-linear ramp
through 17 points sampled from matplotlib's magma (black -> purple -> orange
-> pale yellow, lightness increasing monotonically, so nearer = brighter
reads correctly in grey too); "gray" is the identity ramp.

PNG: Pillow writes and reads when installed; otherwise (or with
`backend="own"`) the built-in codec packnet.png does it.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from . import png

__all__ = ["COLORMAPS", "colorize_depth", "save_png", "load_png", "to_uint8_image", "preview"]

# magma at t = 0, 1/16, ..., 1 (RGB in [0, 1]).
_MAGMA_POINTS = np.array([
    [0.001462, 0.000466, 0.013866],
    [0.035520, 0.028397, 0.125209],
    [0.102815, 0.063010, 0.257854],
    [0.191460, 0.064818, 0.396152],
    [0.291366, 0.064553, 0.475462],
    [0.384299, 0.097855, 0.501002],
    [0.475780, 0.134577, 0.507921],
    [0.569172, 0.167454, 0.504105],
    [0.664915, 0.198075, 0.488836],
    [0.761077, 0.231214, 0.460162],
    [0.852126, 0.276106, 0.418573],
    [0.925937, 0.346844, 0.374959],
    [0.969680, 0.446936, 0.360311],
    [0.989363, 0.557873, 0.391671],
    [0.996580, 0.668256, 0.456192],
    [0.996727, 0.776795, 0.541039],
    [0.987053, 0.991438, 0.749504],
])


def _ramp(points, n=256):
    """Piecewise-linear table [n,3] uint8 through `points` [k,3] in [0,1]."""
    t = np.linspace(0.0, 1.0, n)
    knots = np.linspace(0.0, 1.0, len(points))
    table = np.stack([np.interp(t, knots, points[:, c]) for c in range(3)], axis=1)
    return np.round(table * 255).astype(np.uint8)


COLORMAPS = {
    "magma": _ramp(_MAGMA_POINTS),
    "gray": _ramp(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])),
}


def _as_2d(name, x):
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor or array [H,W], got {type(x).__name__}")
    x = x.detach().float().cpu()
    while x.dim() > 2 and x.shape[0] == 1:  # [1,H,W], [1,1,H,W]
        x = x[0]
    if x.dim() != 2:
        raise ValueError(f"{name} must be [H,W] (or [1,H,W]), got shape {tuple(x.shape)}")
    return x


def colorize_depth(depth_or_inv, cmap="magma", vmin=None, vmax=None, percentiles=(0.0, 95.0),
                   inverse=False):
    """[H,W] (or [1,H,W]) depth or inverse depth -> uint8 [H,W,3] numpy image.

    inverse=True: the input is depth and is shown as 1/depth, so near is
    bright (PackNet-SfM shows inverse depth this way). Values are mapped
    linearly from vmin..vmax to the colour map; vmin / vmax default to the
    given percentiles of the valid pixels (> 0 and finite; the release
    normalises inverse depth by its 95th percentile). Invalid pixels
    (<= 0, NaN, inf: "no depth") are black.
    """
    if cmap not in COLORMAPS:
        raise ValueError(f"colorize_depth: unknown cmap {cmap!r}, expected one of "
                         f"{sorted(COLORMAPS)}")
    x = _as_2d("colorize_depth: depth_or_inv", depth_or_inv)
    valid = torch.isfinite(x) & (x > 0)
    if inverse:
        x = torch.where(valid, 1.0 / x.clamp(min=1e-12), torch.zeros_like(x))
    values = x[valid]
    if values.numel() == 0:
        return np.zeros((*x.shape, 3), dtype=np.uint8)
    if vmin is None:
        vmin = float(torch.quantile(values.double(), percentiles[0] / 100.0)) \
            if percentiles[0] > 0 else float(values.min())
    if vmax is None:
        vmax = float(torch.quantile(values.double(), percentiles[1] / 100.0))
    span = max(vmax - vmin, 1e-12)
    t = torch.where(valid, (x - vmin) / span, torch.zeros_like(x)).clamp(0.0, 1.0)
    table = COLORMAPS[cmap]
    idx = torch.round(t * (len(table) - 1)).long().numpy()
    out = table[idx]
    out[~valid.numpy()] = 0
    return out


def to_uint8_image(rgb):
    """[3,H,W] float in [0,1] (tensor or array) -> uint8 [H,W,3]."""
    if isinstance(rgb, np.ndarray):
        rgb = torch.from_numpy(rgb)
    if rgb.dim() != 3 or rgb.shape[0] != 3:
        raise ValueError(f"to_uint8_image: rgb must be [3,H,W], got shape {tuple(rgb.shape)}")
    rgb = rgb.detach().float().cpu().clamp(0.0, 1.0)
    return (rgb * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def preview(rgb, pred_depth, gt_depth=None, cmap="magma"):
    """Input image over the colourised prediction (over the ground truth).

    rgb: [3,H,W] in [0,1]; pred_depth, gt_depth: [1,H',W'] or [H',W'] depth
    (0 = none), resized to H,W (pred bilinear, sparse gt nearest). Both depth
    maps are shown as inverse depth on one colour scale (from the ground
    truth's range when given, else the prediction's), so the same colour
    means the same depth. Returns uint8 [2H or 3H, W, 3].
    """
    top = to_uint8_image(rgb)
    H, W = top.shape[:2]
    pred = _as_2d("preview: pred_depth", pred_depth)
    if pred.shape != (H, W):
        pred = F.interpolate(pred[None, None], size=(H, W), mode="bilinear",
                             align_corners=False)[0, 0]
    inv_pred = torch.where(pred > 0, 1.0 / pred.clamp(min=1e-12), torch.zeros_like(pred))
    gt = None
    if gt_depth is not None:
        gt = _as_2d("preview: gt_depth", gt_depth)
        if gt.shape != (H, W):  # nearest: never blend a measured depth with "no depth"
            gt = F.interpolate(gt[None, None], size=(H, W), mode="nearest")[0, 0]
    # the colour scale: the ground truth's inverse depth when there is one (so a
    # wrongly near sky or a wrong scale shows as such), else the prediction's
    inv_gt = None if gt is None else 1.0 / gt[gt > 0]
    valid = inv_gt if inv_gt is not None and inv_gt.numel() else inv_pred[inv_pred > 0]
    vmin = float(valid.min()) if valid.numel() else 0.0
    vmax = float(torch.quantile(valid.double(), 0.95)) if valid.numel() else 1.0
    rows = [top, colorize_depth(inv_pred, cmap, vmin=vmin, vmax=vmax)]
    if gt is not None:
        rows.append(colorize_depth(gt, cmap, vmin=vmin, vmax=vmax, inverse=True))
    return np.concatenate(rows, axis=0)


# ------------------------------------------------------------------ PNG
def _have_pillow():
    try:
        import PIL.Image  # noqa: F401
        return True
    except ImportError:
        return False


def _check_image_array(img):
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"save_png: image must be uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ValueError(f"save_png: image must be [H,W], [H,W,3] or [H,W,4], got shape "
                         f"{img.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"save_png: image must be non-empty, got shape {img.shape}")
    return np.ascontiguousarray(img)


def encode_png(img):
    """uint8 [H,W] / [H,W,3] / [H,W,4] -> PNG bytes (packnet.png, filter 0 on every row)."""
    return png.encode(_check_image_array(img))


def decode_png(data, name="<bytes>"):
    """PNG bytes -> uint8 [H,W] (grey) or [H,W,C] (C = 2, 3, 4); see packnet.png."""
    img = png.decode(data, name=name)
    if img.dtype != np.uint8:
        raise ValueError(f"{name}: a 16-bit PNG is not an 8-bit picture")
    return img


def save_png(path, img, backend="auto"):
    """Write uint8 [H,W] / [H,W,3] / [H,W,4] to `path` as PNG; returns path.
    backend: "auto" (Pillow if installed), "pil" or "own"."""
    img = _check_image_array(img)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if backend == "pil" or (backend == "auto" and _have_pillow()):
        from PIL import Image
        Image.fromarray(img).save(path, format="PNG")
    else:
        with open(path, "wb") as f:
            f.write(encode_png(img))
    return path


def load_png(path, backend="auto"):
    """Read a PNG as uint8 [H,W] or [H,W,C]. backend: "auto", "pil" or "own"."""
    if backend == "pil" or (backend == "auto" and _have_pillow()):
        from PIL import Image
        with Image.open(path) as im:
            return np.asarray(im)
    with open(path, "rb") as f:
        return decode_png(f.read(), name=str(path))
