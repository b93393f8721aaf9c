"""Depth pictures without matplotlib: colour maps, previews, test strips.

colorize_depth(x [H,W]) -> uint8 [H,W,3];
preview(rgb [3,H,W], pred_depth [1,H,W], gt_depth=None) -> uint8 [kH,W,3];
labelled_preview(...) -> the panels enlarged, labelled, with an error map
and a colour bar in metres (the trainer's previews); test_strip(frames) ->
several frames side by side on one colour scale (test-strip.png).

The colour maps are our own tables: "magma" is a piecewise-linear ramp
through 17 points sampled from matplotlib's magma (black -> purple -> orange
-> pale yellow, lightness increasing monotonically, so nearer = brighter
reads correctly in grey too); "gray" is the identity ramp.

Pictures are uint8 [H,W,3] arrays; packnet.image writes them
(write_image) and draws their labels in Pillow's default font.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from .image import draw_text, text_size

__all__ = ["COLORMAPS", "colorize_depth", "to_uint8_image", "preview", "labelled_preview",
           "test_strip", "ERROR_RANGE"]

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
    # error maps: dark blue (none) -> teal -> yellow -> red (large)
    "error": _ramp(np.array([[0.05, 0.05, 0.35], [0.1, 0.55, 0.55], [0.95, 0.85, 0.15],
                             [0.85, 0.1, 0.1]])),
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


def _quantile(values, q):
    """torch.quantile(values, q) (linear interpolation) of a tensor of any
    size: torch.quantile refuses more than 2**24 elements, fewer than a
    6000x4000 photo has. The two order statistics around q * (n - 1) come
    from kthvalue (exact, no sort, one copy of the input) and are interpolated
    in float64 as torch.quantile does, so the result is the same number."""
    v = values.reshape(-1)
    pos = q * (v.numel() - 1)
    lo = math.floor(pos)
    below = torch.kthvalue(v, lo + 1).values.double()
    if pos == lo:
        return float(below)
    above = torch.kthvalue(v, lo + 2).values.double()
    return float(torch.lerp(below, above, pos - lo))


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
        vmin = _quantile(values, percentiles[0] / 100.0) if percentiles[0] > 0 \
            else float(values.min())
    if vmax is None:
        vmax = _quantile(values, percentiles[1] / 100.0)
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
    vmax = _quantile(valid, 0.95) if valid.numel() else 1.0
    rows = [top, colorize_depth(inv_pred, cmap, vmin=vmin, vmax=vmax)]
    if gt is not None:
        rows.append(colorize_depth(gt, cmap, vmin=vmin, vmax=vmax, inverse=True))
    return np.concatenate(rows, axis=0)


# ------------------------------------------------------- labelled pictures
ERROR_RANGE = 0.3          # the error panel's colour scale: abs rel 0 .. 0.3
_HEADER, _GAP, _BAR = 22, 8, 14
# text sizes in pixels: the labels', and a smaller one where they do not fit (a
# narrow panel); both fit a _HEADER-row band with their descenders
_TEXT, _SMALL_TEXT = 16, 10
_BG = np.array([24, 24, 24], dtype=np.uint8)


def _enlarge(img, k):
    return img if k == 1 else img.repeat(k, 0).repeat(k, 1)


def _fit(name, x, H, W, mode):
    x = _as_2d(name, x)
    if x.shape != (H, W):
        kw = {"align_corners": False} if mode == "bilinear" else {}
        x = F.interpolate(x[None, None], size=(H, W), mode=mode, **kw)[0, 0]
    return x


def _inverse_range(preds, gts):
    """(vmin, vmax) of inverse depth shared by a set of frames: the ground
    truth's (min, 95th percentile) when there is any, else the prediction's."""
    vals = [1.0 / g[g > 0] for g in gts if g is not None and (g > 0).any()]
    if not vals:
        vals = [1.0 / p[p > 0] for p in preds if (p > 0).any()]
    if not vals:
        return 0.0, 1.0
    v = torch.cat(vals)
    return float(v.min()), _quantile(v, 0.95)


def _panels(rgb, pred, gt, k, vmin, vmax, cmap):
    """[(label, uint8 image)] of one frame, enlarged k times."""
    top = to_uint8_image(rgb)
    inv_pred = torch.where(pred > 0, 1.0 / pred.clamp(min=1e-12), torch.zeros_like(pred))
    out = [("input", top), ("predicted depth",
                            colorize_depth(inv_pred, cmap, vmin=vmin, vmax=vmax))]
    if gt is not None:
        valid = gt > 0
        out.append(("ground truth", colorize_depth(gt, cmap, vmin=vmin, vmax=vmax, inverse=True)))
        err = torch.where(valid, (pred - gt).abs() / gt.clamp(min=1e-12), torch.zeros_like(gt))
        img = colorize_depth(torch.where(valid, err.clamp(min=1e-6), err), "error", vmin=0.0,
                             vmax=ERROR_RANGE)
        img[~valid.numpy()] = 0
        mean = float(err[valid].mean()) if valid.any() else float("nan")
        out.append((f"abs rel error 0-{ERROR_RANGE:g}, mean {mean:.3f}", img))
    return [(label, _enlarge(img, k)) for label, img in out]


def _text_fit(text, room):
    """_TEXT (the labels' size) when `text` fits in `room` pixels, else
    _SMALL_TEXT, else None."""
    for size in (_TEXT, _SMALL_TEXT):
        if text_size(text, size)[1] <= room:
            return size
    return None


def _labelled(label, img):
    head = np.empty((_HEADER, img.shape[1], 3), dtype=np.uint8)
    head[:] = _BG
    size = _text_fit(label, img.shape[1] - 6) or _SMALL_TEXT   # too long even then: clipped
    draw_text(head, label, 6, _HEADER // 2, size, anchor="lm")
    return np.concatenate([head, img], 0)


def _tick_label(inv):
    return "inf" if inv <= 0 else (f"{1 / inv:.1f}" if 1 / inv < 100 else f"{1 / inv:.0f}")


def _ticks(x0, bar_w, width, vmin, vmax, most):
    """[(x, label, left)] and the text size: as many ticks (at most `most`,
    at least the two ends) as fit without their labels touching, in the
    larger text when it fits."""
    for size in (_TEXT, _SMALL_TEXT):
        for n in range(most, 1, -1):
            out = []
            for i in range(n):
                t = i / (n - 1)
                label = _tick_label(vmin + t * (vmax - vmin))
                x = x0 + round(t * (bar_w - 1))
                _, lw = text_size(label, size)
                out.append((x, label, min(max(x - lw // 2, 0), width - lw), lw))
            if all(b[2] - (a[2] + a[3]) >= size // 2 for a, b in zip(out, out[1:])):
                return out, size
    return out, _SMALL_TEXT   # narrower than two labels: the ends, clipped


def _colour_bar(width, vmin, vmax, cmap, ticks=5):
    """A horizontal bar of the inverse-depth colour scale, ticked in metres.
    The title sits left of the bar when the picture is wide enough for both,
    else on a row of its own above a bar as wide as the picture (a test strip
    of one 32x32 frame is 64 pixels wide), in smaller text and with fewer
    ticks where the labels would not fit. Any width >= 1 draws."""
    pad, title = 6, "depth (m)"
    _, tw = text_size(title, _TEXT)
    beside = width - (pad + tw + 12) - (pad + 24) >= 64   # room for a 64-pixel bar
    if beside:
        top, x0, x1 = 0, pad + tw + 12, width - pad - 24
    else:
        edge = pad if width > 4 * pad else 0
        top, x0, x1 = _HEADER, edge, width - edge
    bar_w = x1 - x0
    out = np.empty((top + _HEADER + _BAR + _HEADER, width, 3), dtype=np.uint8)
    out[:] = _BG
    y_bar = top + _HEADER
    ramp = COLORMAPS[cmap][np.round(np.linspace(0, 255, bar_w)).astype(int)]
    out[y_bar:y_bar + _BAR, x0:x1] = ramp[None]
    if beside:
        draw_text(out, title, pad, y_bar + _BAR // 2, _TEXT, anchor="lm")
    else:
        size = _text_fit(title, width - x0) or _SMALL_TEXT
        draw_text(out, title, x0, _HEADER // 2, size, anchor="lm")
    marks, size = _ticks(x0, bar_w, width, vmin, vmax, ticks)
    for x, label, left, _ in marks:
        out[y_bar - 4:y_bar, x] = 255
        draw_text(out, label, left, y_bar + _BAR + 2, size)
    for size in (_TEXT, _SMALL_TEXT):  # "far" and "near" over the ends, when they fit
        (_, fw), (_, nw) = text_size("far", size), text_size("near", size)
        if fw + nw + size <= bar_w:
            draw_text(out, "far", x0, top + 2, size)
            draw_text(out, "near", x1 - nw, top + 2, size)
            break
    return out


def _prepare(rgb, pred_depth, gt_depth):
    H, W = rgb.shape[-2:]
    pred = _fit("labelled_preview: pred_depth", pred_depth, H, W, "bilinear")
    gt = None if gt_depth is None else _fit("labelled_preview: gt_depth", gt_depth, H, W,
                                            "nearest")  # never blend depth with "no depth"
    return pred, gt


def labelled_preview(rgb, pred_depth, gt_depth=None, min_width=576, cmap="magma"):
    """The input, the predicted depth, the ground truth and the absolute
    relative error map (when gt_depth is given), stacked, each enlarged
    (nearest) to at least `min_width` pixels and labelled, with one colour bar
    in metres for the two depth panels (inverse depth on a linear scale from
    the ground truth's range, else the prediction's). rgb: [3,H,W] in [0,1];
    depths [1,H',W'] or [H',W'] (0 = none). Returns uint8 [h, w, 3]."""
    pred, gt = _prepare(rgb, pred_depth, gt_depth)
    W = rgb.shape[-1]
    k = max(1, -(-int(min_width) // W))
    vmin, vmax = _inverse_range([pred], [gt])
    rows = [_labelled(label, img) for label, img in _panels(rgb, pred, gt, k, vmin, vmax, cmap)]
    rows.append(_colour_bar(W * k, vmin, vmax, cmap))
    return np.concatenate(rows, 0)


def test_strip(frames, scale=2, cmap="magma"):
    """Several test frames side by side, each a column of labelled panels
    (input, prediction, ground truth, error), on one shared colour scale with
    one colour bar in metres. frames: list of (rgb [3,H,W], pred_depth,
    gt_depth or None), all of one size; panels enlarged `scale` times."""
    if not frames:
        raise ValueError("test_strip: no frames")
    prepared = [(rgb,) + _prepare(rgb, p, g) for rgb, p, g in frames]
    vmin, vmax = _inverse_range([p for _, p, _ in prepared], [g for _, _, g in prepared])
    columns = []
    for rgb, pred, gt in prepared:
        col = [_labelled(label, img) for label, img in _panels(rgb, pred, gt, scale, vmin, vmax,
                                                                 cmap)]
        columns.append(np.concatenate(col, 0))
    h = max(c.shape[0] for c in columns)
    gap = np.empty((h, _GAP, 3), dtype=np.uint8)
    gap[:] = _BG
    parts = []
    for i, c in enumerate(columns):
        if c.shape[0] < h:
            filler = np.empty((h - c.shape[0], c.shape[1], 3), dtype=np.uint8)
            filler[:] = _BG
            c = np.concatenate([c, filler], 0)
        parts += ([gap] if i else []) + [c]
    body = np.concatenate(parts, 1)
    return np.concatenate([body, _colour_bar(body.shape[1], vmin, vmax, cmap)], 0)
