"""Depth evaluation: the Eigen et al. metrics as PackNet-SfM computes them.

compute_depth_metrics(gt, pred, ...) -> dict for one batch;
evaluate(depth_net, loader, device, ...) -> {"metric", "median_scaled", "scale", "n"}
over a data set; format_metrics(result) -> str table.

Conventions follow PackNet-SfM's `compute_depth_metrics` (utils/depth.py):
pred is resized to the ground truth's size (bilinear, align_corners=True),
valid pixels are min_depth < gt < max_depth (inside the Garg crop when asked),
median scaling multiplies pred by median(gt) / median(pred) over the valid
pixels (torch.median: the lower middle value for an even count), and only
then is pred clamped to [min_depth, max_depth]. Metrics are computed per
image and averaged over images.

One deliberate difference: the release divides the per-image sums by the
batch size even when an image has no valid pixel (it is skipped), which pulls
every metric towards 0; here such images are left out of the mean (and out of
`n`). The per-image values are computed in float64.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

from .geometry import invert_pose, inv2depth, pose_vec2mat

__all__ = ["METRIC_NAMES", "garg_crop_mask", "compute_depth_metrics", "evaluate",
           "format_metrics", "evaluate_pose", "snippet_ate", "format_pose", "strict_json",
           "write_json"]

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")

# Garg et al.'s crop of KITTI (as fractions of the ground truth's H and W).
GARG_ROWS = (0.40810811, 0.99189189)
GARG_COLS = (0.03594771, 0.96405229)


def garg_crop_mask(height, width, device=None):
    """[H,W] bool: True inside the Garg crop, rows int(0.408 H) .. int(0.992 H) - 1,
    cols int(0.036 W) .. int(0.964 W) - 1 (the release's int() truncation)."""
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    y1, y2 = int(GARG_ROWS[0] * height), int(GARG_ROWS[1] * height)
    x1, x2 = int(GARG_COLS[0] * width), int(GARG_COLS[1] * width)
    mask[y1:y2, x1:x2] = True
    return mask


def _check_depth(name, t):
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"compute_depth_metrics: {name} must be a torch.Tensor [B,1,H,W], "
                         f"got {type(t).__name__}")
    if t.dim() != 4 or t.shape[1] != 1:
        raise ValueError(f"compute_depth_metrics: {name} must be [B,1,H,W], got shape "
                         f"{tuple(t.shape)}")


def _per_image(gt, pred, min_depth, max_depth, crop, median_scaling):
    """gt [B,1,H,W], pred [B,1,h,w] -> (metrics [n,7] float64, scales [n] float64)
    for the n images that have at least one valid pixel."""
    _check_depth("gt", gt)
    _check_depth("pred", pred)
    if gt.shape[0] != pred.shape[0]:
        raise ValueError(f"compute_depth_metrics: gt and pred batch sizes differ: "
                         f"{tuple(gt.shape)} vs {tuple(pred.shape)}")
    if crop not in (None, "garg"):
        raise ValueError(f"compute_depth_metrics: crop must be None or 'garg', got {crop!r}")
    H, W = gt.shape[-2:]
    pred = pred.to(gt.device, torch.float64)
    gt = gt.to(torch.float64)
    if pred.shape[-2:] != (H, W):
        pred = F.interpolate(pred, size=(H, W), mode="bilinear", align_corners=True)
    crop_mask = garg_crop_mask(H, W, gt.device) if crop == "garg" else None

    rows, scales = [], []
    for gt_i, pred_i in zip(gt[:, 0], pred[:, 0]):  # each [H,W]
        valid = (gt_i > min_depth) & (gt_i < max_depth)
        if crop_mask is not None:
            valid &= crop_mask
        if not bool(valid.any()):
            continue
        gt_v, pred_v = gt_i[valid], pred_i[valid]
        scale = gt_v.new_tensor(1.0)
        if median_scaling:
            # Why the clamp: a net that predicts 0 everywhere would divide by zero.
            scale = gt_v.median() / pred_v.median().clamp(min=1e-12)
            pred_v = pred_v * scale
        pred_v = pred_v.clamp(min_depth, max_depth)

        thresh = torch.maximum(gt_v / pred_v, pred_v / gt_v)
        diff = gt_v - pred_v
        rows.append(torch.stack([
            (diff.abs() / gt_v).mean(),                                 # abs_rel
            (diff ** 2 / gt_v).mean(),                                  # sq_rel
            (diff ** 2).mean().sqrt(),                                  # rmse
            ((gt_v.log() - pred_v.log()) ** 2).mean().sqrt(),           # rmse_log
            (thresh < 1.25).double().mean(),                            # a1
            (thresh < 1.25 ** 2).double().mean(),                       # a2
            (thresh < 1.25 ** 3).double().mean(),                       # a3
        ]))
        scales.append(scale)
    if not rows:
        return gt.new_zeros(0, len(METRIC_NAMES)), gt.new_zeros(0)
    return torch.stack(rows), torch.stack(scales)


def _to_dict(metric_sum, n, scale_sum=None):
    nan = float("nan")
    out = {k: (float(v) / n if n else nan) for k, v in zip(METRIC_NAMES, metric_sum)}
    if scale_sum is not None:
        out["scale"] = float(scale_sum) / n if n else nan
    return out


def compute_depth_metrics(gt, pred, min_depth=1e-3, max_depth=80.0, crop=None,
                          median_scaling=False):
    """Depth metrics of one batch, averaged over its images.

    gt:   [B,1,H,W] metric depth, 0 (or anything <= min_depth) = no depth.
    pred: [B,1,h,w] predicted depth; resized bilinearly to H,W if h,w differ.
    crop: None or "garg". median_scaling: scale each prediction by
    median(gt_valid) / median(pred_valid) before clamping.

    Returns {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "n"}
    plus "scale" (mean per-image factor) with median_scaling; n = images with
    at least one valid pixel (metrics are NaN when n == 0).
    """
    metrics, scales = _per_image(gt, pred, min_depth, max_depth, crop, median_scaling)
    n = metrics.shape[0]
    out = _to_dict(metrics.sum(0), n, scales.sum() if median_scaling else None)
    out["n"] = n
    return out


def _unbatched_to_batched(t, rank):
    return t.unsqueeze(0) if t.dim() == rank - 1 else t


def evaluate(depth_net, loader, device="cpu", crop=None, max_depth=80.0, progress=True,
             min_depth=1e-3):
    """Run `depth_net` (eval mode, no grad) over `loader` and aggregate metrics.

    loader: any iterable of dicts with "rgb" [B,3,H,W] in [0,1] and "depth"
    [B,1,H,W] (a DataLoader over items {"rgb": [3,H,W], "depth": [1,H,W]});
    unbatched items are accepted too. The net returns inverse depth
    [B,1,h,w], turned into depth with packnet.geometry.inv2depth.

    Returns {"metric": {...}, "median_scaled": {...}, "scale": float, "n": int}:
    metrics without scaling, metrics with per-image median scaling, the mean
    median-scaling factor, and the number of images with valid ground truth.
    Each metric is the mean over images (not over batches).
    """
    was_training = depth_net.training
    depth_net.eval()
    metric_sum = torch.zeros(len(METRIC_NAMES), dtype=torch.float64)
    scaled_sum = torch.zeros(len(METRIC_NAMES), dtype=torch.float64)
    scale_sum, n = 0.0, 0

    iterator = loader
    if progress:
        try:
            from tqdm.auto import tqdm
            iterator = tqdm(loader, desc="evaluate", unit="batch",
                            total=len(loader) if hasattr(loader, "__len__") else None)
        except ImportError:  # plain loop, a line every batch is noise in logs
            pass
    try:
        with torch.no_grad():
            for i, batch in enumerate(iterator):
                if not isinstance(batch, dict) or "rgb" not in batch or "depth" not in batch:
                    raise ValueError(f"evaluate: batch {i} must be a dict with 'rgb' and "
                                     f"'depth', got {type(batch).__name__}"
                                     + (f" with keys {sorted(batch)}" if isinstance(batch, dict)
                                        else ""))
                rgb = _unbatched_to_batched(batch["rgb"], 4).to(device)
                gt = _unbatched_to_batched(batch["depth"], 4).to(device)
                inv_depth = depth_net(rgb)
                if isinstance(inv_depth, (list, tuple)):  # a net left in a train-style API
                    inv_depth = inv_depth[0]
                pred = inv2depth(inv_depth)
                m, _ = _per_image(gt, pred, min_depth, max_depth, crop, False)
                ms, s = _per_image(gt, pred, min_depth, max_depth, crop, True)
                metric_sum += m.sum(0).cpu()
                scaled_sum += ms.sum(0).cpu()
                scale_sum += float(s.sum())
                n += m.shape[0]
                if progress and iterator is not loader and n:
                    iterator.set_postfix(abs_rel=f"{float(metric_sum[0]) / n:.4f}")
    finally:
        depth_net.train(was_training)
    return {"metric": _to_dict(metric_sum, n), "median_scaled": _to_dict(scaled_sum, n),
            "scale": scale_sum / n if n else math.nan, "n": n}


def format_metrics(result):
    """A plain-text table of evaluate()'s result (or of a single metrics dict)."""
    if "metric" in result:
        rows = [("metric", result["metric"]), ("median_scaled", result["median_scaled"])]
        footer = f"images: {result['n']}   mean median scale: {result['scale']:.4f}"
    else:
        rows = [("metrics", result)]
        footer = f"images: {result.get('n', '?')}" + (
            f"   mean median scale: {result['scale']:.4f}" if "scale" in result else "")
    label_w = max(len(r[0]) for r in rows)
    head = " " * label_w + " | " + " | ".join(f"{k:>8}" for k in METRIC_NAMES)
    lines = [head, "-" * len(head)]
    for label, d in rows:
        lines.append(f"{label:<{label_w}} | " + " | ".join(f"{d[k]:8.4f}" for k in METRIC_NAMES))
    lines.append(footer)
    return "\n".join(lines)


# ------------------------------------------------------------------ pose
def snippet_ate(gt_xyz, pred_xyz, align_scale=True):
    """Absolute trajectory error of one snippet, as SfMLearner and monodepth2
    compute it (monodepth2's compute_ate): both trajectories start at the
    origin, the prediction is scaled by the least-squares factor
    sum(gt . pred) / sum(pred . pred) (align_scale=False: not scaled, the
    metric error), and ATE = sqrt(sum of squared position errors) / N.
    gt_xyz, pred_xyz: [N,3] float64. Returns (ate, scale)."""
    pred = pred_xyz - pred_xyz[0] + gt_xyz[0]
    denom = float((pred ** 2).sum())
    scale = float((gt_xyz * pred).sum()) / denom if align_scale and denom > 0 else 1.0
    err = pred * scale - gt_xyz
    return math.sqrt(float((err ** 2).sum())) / gt_xyz.shape[0], scale


def _positions(steps):
    """Camera positions [N+1,3] in the first camera's frame from N relative
    motions [N,4,4] (each: camera k+1 in camera k's coordinates)."""
    P = torch.eye(4, dtype=torch.float64)
    xyz = [P[:3, 3].clone()]
    for M in steps:
        P = P @ M
        xyz.append(P[:3, 3].clone())
    return torch.stack(xyz)


def evaluate_pose(pose_net, dataset, device="cpu", snippet=5, batch_size=8):
    """Absolute trajectory error of the pose network over every `snippet`-frame
    window of every sequence (SfMLearner's and monodepth2's convention),
    against a data set's exact poses.

    dataset: a sequence data set with ground-truth poses (SyntheticDriving:
    `sequence(s)` -> (scene, trajectory), `frame(s, i)`); its context must be
    (-1, 1), the pose network's two frames. Each motion between frames k and
    k+1 comes from the network run on target k+1 (its pose to frame k) or, for
    the last pair, on target k (the inverse of its pose to frame k+1); a
    snippet's trajectory chains its snippet-1 motions.

    Returns {"ate": {"mean", "std"} metric (no scaling: with the velocity
    loss the scale should be right), "ate_scaled": {...} aligned by scale,
    "scale": the mean alignment factor, "snippets": count, "snippet": frames},
    ATE in metres.
    """
    if not (hasattr(dataset, "sequence") and hasattr(dataset, "frame")):
        raise ValueError(f"evaluate_pose: {type(dataset).__name__} has no ground-truth poses "
                         f"(a sequence data set such as SyntheticDriving is needed)")
    F_ = dataset.frames_per_sequence
    if F_ < snippet or snippet < 2:
        raise ValueError(f"evaluate_pose: snippets of {snippet} frames need sequences at least "
                         f"that long (frames_per_sequence={F_}) and snippet >= 2")
    was_training = pose_net.training
    pose_net.eval()
    ates, ates_scaled, scales = [], [], []
    try:
        with torch.no_grad():
            for s in range(dataset.num_sequences):
                _, traj = dataset.sequence(s)
                world = [torch.as_tensor(traj.world_from_camera(i), dtype=torch.float64)
                         for i in range(F_)]
                gt_steps = [torch.linalg.inv(world[k]) @ world[k + 1] for k in range(F_ - 1)]
                targets = list(range(1, F_ - 1))
                prev, nxt = {}, {}
                for b in range(0, len(targets), batch_size):
                    ts = targets[b:b + batch_size]
                    rgb = [torch.stack([dataset.frame(s, t + o)[0] for t in ts]).to(device)
                           for o in (0, -1, 1)]
                    vec = pose_net(rgb[0], rgb[1:]).double().cpu()
                    T_prev, T_next = pose_vec2mat(vec[:, 0]), pose_vec2mat(vec[:, 1])
                    for j, t in enumerate(ts):
                        prev[t], nxt[t] = T_prev[j], T_next[j]
                # motion k -> k+1 (camera k+1 in camera k): target k+1's pose to frame k
                pred_steps = [prev[k + 1] if k + 1 in prev else invert_pose(nxt[k][None])[0]
                              for k in range(F_ - 1)]
                for i in range(F_ - snippet + 1):
                    gt_xyz = _positions(gt_steps[i:i + snippet - 1])
                    pred_xyz = _positions(pred_steps[i:i + snippet - 1])
                    ates.append(snippet_ate(gt_xyz, pred_xyz, align_scale=False)[0])
                    a, sc = snippet_ate(gt_xyz, pred_xyz, align_scale=True)
                    ates_scaled.append(a)
                    scales.append(sc)
    finally:
        pose_net.train(was_training)

    def stats(v):
        t = torch.tensor(v, dtype=torch.float64)
        return {"mean": float(t.mean()), "std": float(t.std(unbiased=False))} if v else None
    return {"ate": stats(ates), "ate_scaled": stats(ates_scaled),
            "scale": float(torch.tensor(scales).mean()) if scales else math.nan,
            "snippets": len(ates), "snippet": snippet}


def format_pose(result):
    """One line: metric and scale-aligned ATE (mean +- std, metres)."""
    a, b = result["ate"], result["ate_scaled"]
    return (f"pose ATE over {result['snippets']} {result['snippet']}-frame snippets: metric "
            f"{a['mean']:.4f} +- {a['std']:.4f} m, scale-aligned {b['mean']:.4f} +- "
            f"{b['std']:.4f} m (mean alignment scale {result['scale']:.3f})")


# ------------------------------------------------------------------- JSON
NON_FINITE_NOTE = ("the values listed in non_finite were not finite numbers and are written as "
                   "null (JSON has no NaN or Infinity). A depth metric is NaN when no evaluated "
                   "image had a valid ground-truth pixel (depth in (min_depth, max_depth), "
                   "inside the crop), or when the network predicted NaN")


def strict_json(obj):
    """(obj with every NaN or infinite number replaced by None, {dotted path:
    'nan' | 'inf' | '-inf'} of those): what json.dumps(allow_nan=False) takes.
    numpy scalars and one-element tensors become floats."""
    found = {}

    def clean(v, path):
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, dict):
            return {k: clean(x, f"{path}.{k}" if path else str(k)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{path}[{i}]") for i, x in enumerate(v)]
        v = float(v)  # float, numpy scalar, 0-d tensor (TypeError for anything else)
        if math.isfinite(v):
            return v
        found[path] = "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return None

    return clean(obj, ""), found


def write_json(path, obj):
    """Write `obj` (a dict) as strict JSON, atomically (a temporary file, then
    os.replace): non-finite numbers become null, and the file then says which
    ("non_finite") and why ("note"), so strict parsers read every summary."""
    out, found = strict_json(obj)
    if found:
        out["non_finite"] = found
        out["note"] = NON_FINITE_NOTE
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
    return found
