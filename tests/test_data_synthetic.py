"""The synthetic renderer: determinism, splits, and exact depth/pose
(reprojecting frame t+1 into t with the true depth and pose reproduces it).
Its speed is a benchmark case, not a test: benchmarks/bench_data.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import packops
from packnet.data.synthetic import PRESETS, SyntheticDriving


def _ds(split="train", size="64x192", **kw):
    kw.setdefault("num_sequences", 2)
    kw.setdefault("frames_per_sequence", 5)
    return SyntheticDriving(split=split, size=size, **kw)


def test_item_keys_shapes():
    ds = _ds()
    assert len(ds) == 2 * 3
    s = ds[0]
    H, W = PRESETS["64x192"]
    assert s["rgb"].shape == (3, H, W) and s["depth"].shape == (1, H, W)
    assert len(s["rgb_context"]) == 2 and s["rgb_context"][0].shape == (3, H, W)
    assert s["intrinsics"].shape == (3, 3) and s["pose_context"][0].shape == (4, 4)
    assert 0.0 <= s["rgb"].min() and s["rgb"].max() <= 1.0
    assert s["timestamps_context"] == pytest.approx([s["timestamp"] - 0.1, s["timestamp"] + 0.1])
    assert 3.0 < s["speed"] < 17.0
    assert s["frame"] == 1 and s["idx"] == 0


def test_deterministic_and_splits_disjoint():
    a, b = _ds(seed=3)[2], _ds(seed=3, cache_frames=0)[2]
    for k in ("rgb", "depth", "intrinsics"):
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(a["pose_context"][1], b["pose_context"][1]) and a["speed"] == b["speed"]
    other = [_ds(split)[2]["rgb"] for split in ("val", "test")] + [_ds(seed=4)[2]["rgb"]]
    for o in other:
        assert (o - a["rgb"]).abs().mean() > 0.02
    trains = {_ds().sequence_seed(s) for s in range(2)}
    assert not trains & {_ds("val").sequence_seed(s) for s in range(2)}


def test_depth_positive_and_sky():
    s = _ds(size="96x320")[0]
    d = s["depth"]
    valid = d > 0
    assert 0.5 < valid.float().mean() < 0.99  # road, buildings ... and some sky
    assert d[valid].min() > 1.0 and d.max() <= 200.0
    assert valid[:, -1].all()  # the bottom row sees the road


# ------------------------------------------------------------ exactness
def _warp_error(ds, s, t, depth_scale=1.0, pose_fn=None):
    """Mean |frame t - warp(frame t+1)| over pixels visible in both frames
    (the visibility mask always comes from the true depth and pose)."""
    rgb0, d0 = ds.frame(s, t)
    rgb1, d1 = ds.frame(s, t + 1)
    _, traj = ds.sequence(s)
    T = torch.tensor(np.linalg.inv(traj.world_from_camera(t + 1)) @ traj.world_from_camera(t),
                     dtype=torch.float32)[None]
    K = torch.tensor(ds.K, dtype=torch.float32)[None]
    # occlusion: depth_t moved into frame t+1 must match depth_{t+1} sampled there
    H, W = d0.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    q = torch.stack([xs, ys, torch.ones_like(xs)]).float().view(3, -1)
    X = torch.linalg.inv(K[0]) @ q * d0.view(1, -1)
    Y = T[0, :3, :3] @ X + T[0, :3, 3:]
    p = K[0] @ Y
    z = p[2].clamp(min=1e-6)
    grid = torch.stack([2 * p[0] / z / (W - 1) - 1, 2 * p[1] / z / (H - 1) - 1], -1).view(1, H, W, 2)
    d1s = F.grid_sample(d1[None], grid, mode="nearest", align_corners=True).view(-1)
    warped, inside = packops.reproject_reference(rgb1[None], d0[None], K, T, return_mask=True)
    ok = (d0.view(-1) > 0) & (inside.view(-1) > 0) & ((d1s - Y[2]).abs() < 0.01 * Y[2])
    assert ok.float().mean() > 0.4
    T_used = pose_fn(T) if pose_fn else T
    warped = packops.reproject_reference(rgb1[None], d0[None] * depth_scale, K, T_used)
    err = (warped[0] - rgb0).abs().mean(0).view(-1)
    return err[ok].mean().item()


def test_reprojection_reproduces_next_frame():
    ds = _ds("test", "96x320", num_sequences=2, frames_per_sequence=4)
    for s in range(2):
        exact = _warp_error(ds, s, 1)
        scaled = _warp_error(ds, s, 1, depth_scale=1.3)

        def wrong_pose(T):
            T = T.clone()
            T[:, :3, 3] *= 1.5
            return T

        wrong = _warp_error(ds, s, 1, pose_fn=wrong_pose)
        print(f"\nseq {s}: photometric error exact {exact:.4f}, depth x1.3 {scaled:.4f}, "
              f"translation x1.5 {wrong:.4f}")
        assert exact < 0.01
        assert scaled > 2 * exact and wrong > 2 * exact


def test_default_cache_keeps_every_frame_when_it_fits(monkeypatch):
    from packnet.data import synthetic
    ds = _ds()
    assert ds.cache_frames == 2 * 5
    for i in range(len(ds)):
        ds[i]
    assert len(ds._frames) == 10          # every frame rendered once, none evicted
    monkeypatch.setattr(synthetic, "CACHE_BYTES", 10 * 4 * 4 * 64 * 192 - 1)
    assert _ds().cache_frames == 32       # one byte short: the bounded LRU
    assert _ds(cache_frames=3).cache_frames == 3
