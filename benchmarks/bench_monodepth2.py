"""Suite "monodepth2": packops in a monodepth2 / manydepth training step,
against their own route.

  warp_loss    monodepth2's view synthesis and reprojection loss at its KITTI
               training shape (batch 12, 3x192x640): BackprojectDepth ->
               Project3D -> grid_sample(border) -> compute_reprojection_loss
               (provider "monodepth2", its `layers` module) against
               packops.reproject(padding_mode="border") ->
               packops.photometric_loss ("packops"); forward, and forward and
               backward with the gradients training needs (depth and pose).
  cost_volume  manydepth's cost volume: 64-channel features at a quarter of
               192x640 (48x160), 96 depth hypotheses, batch 1, each warped
               into the target view (zeros padding) and compared by the mean
               absolute difference over channels. "grid_sample": its loop
               (backproject a constant depth, project, grid_sample per
               hypothesis); "packops": the same loop with packops.reproject;
               "packops-batched": one packops.reproject call for all 96
               hypotheses (the features expanded over the batch). Forward, and
               forward and backward to the features.

Needs the monodepth2 package (pip install monodepth2==1.0.0) for its providers.
"""
import functools
import math

import torch
import torch.nn.functional as F

import packops

from . import measure
from .cases import Case, Run, Skip, shape_str


def _layers():
    try:
        import layers
    except ImportError as e:
        raise Skip(f"monodepth2 is not installed (pip install monodepth2==1.0.0): {e}")
    if not hasattr(layers, "BackprojectDepth"):
        raise Skip("the `layers` module found is not monodepth2's")
    return layers


def _camera(B, H, W, device):
    """monodepth2's KITTI intrinsics (4x4, pixels), its inverse, a forward motion."""
    K = torch.eye(4).repeat(B, 1, 1)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2] = 0.58 * W, 1.92 * H, 0.5 * W, 0.5 * H
    a = 0.02
    T = torch.eye(4).repeat(B, 1, 1)
    T[:, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0],
                                 [-math.sin(a), 0, math.cos(a)]])
    T[:, :3, 3] = torch.tensor([0.02, -0.01, -0.5])
    return K.to(device), torch.linalg.inv(K).to(device), T.to(device)


def _run(fn, grad, wrt, device):
    """Run of fn: forward under no_grad, or (value, gradients to wrt)."""
    def step():
        if not grad:
            with torch.no_grad():
                return fn()
        value = fn()
        return (value.detach(),) + torch.autograd.grad(value if value.dim() == 0 else value.sum(),
                                                         wrt)

    def metrics(median_s, first):
        return {"peak_mem_mb": measure.memory(step, device)[0] / 1e6}
    return Run(fn=step, metrics=metrics)


def _warp_loss(provider, shape, mode, device):
    B, C, H, W = shape
    g = torch.Generator().manual_seed(0)
    source = torch.rand(B, C, H, W, generator=g).to(device)
    target = torch.rand(B, C, H, W, generator=g).to(device)
    depth = (2 + 38 * torch.rand(B, 1, H, W, generator=g)).to(device)
    K, inv_K, T = _camera(B, H, W, device)
    grad = mode == "fwd+bwd"
    depth.requires_grad_(grad)
    T.requires_grad_(grad)
    if provider == "monodepth2":
        layers = _layers()
        back = layers.BackprojectDepth(B, H, W).to(device)
        project = layers.Project3D(B, H, W).to(device)
        ssim = layers.SSIM().to(device)

        def loss():
            pix = project(back(depth, inv_K), K, T)
            warped = F.grid_sample(source, pix, padding_mode="border", align_corners=True)
            l1 = (target - warped).abs().mean(1, True)
            return (0.85 * ssim(warped, target).mean(1, True) + 0.15 * l1).mean()
    else:
        K3 = K[:, :3, :3].contiguous()

        def loss():
            warped = packops.reproject(source, depth, K3, T, padding_mode="border")
            return packops.photometric_loss(warped, target, C1=0.01 ** 2, C2=0.03 ** 2).mean()
    return _run(loss, grad, (depth, T), device)


def _cost_volume(provider, shape, D, mode, device):
    B, Cf, h, w = shape
    g = torch.Generator().manual_seed(1)
    current = torch.rand(B, Cf, h, w, generator=g).to(device)
    lookup = torch.rand(B, Cf, h, w, generator=g).to(device)
    bins = torch.exp(torch.linspace(math.log(0.1), math.log(20.0), D)).tolist()  # manydepth's range
    K, inv_K, T = _camera(B, h, w, device)
    grad = mode == "fwd+bwd"
    lookup.requires_grad_(grad)
    K3 = K[:, :3, :3].contiguous()
    if provider == "grid_sample":
        layers = _layers()
        back = layers.BackprojectDepth(B, h, w).to(device)
        project = layers.Project3D(B, h, w).to(device)

        def warp(d):
            pix = project(back(torch.full((B, 1, h, w), d, device=device), inv_K), K, T)
            return F.grid_sample(lookup, pix, padding_mode="zeros", align_corners=True)
    else:
        def warp(d):
            return packops.reproject(lookup, torch.full((B, 1, h, w), d, device=device), K3, T)

    def volume():
        if provider == "packops-batched":  # the hypotheses as the batch (B = 1)
            depth = torch.tensor(bins, device=device).view(D, 1, 1, 1).expand(D, 1, h, w)
            warped = packops.reproject(lookup.expand(D, Cf, h, w), depth, K3.expand(D, 3, 3),
                                       T.expand(D, 4, 4))
            return (warped - current).abs().mean(1)[None]
        return torch.stack([(warp(d) - current).abs().mean(1) for d in bins], 1)
    return _run(volume, grad, (lookup,), device)


def cases(device, quick=False):
    out = []
    shape = (1, 3, 24, 64) if quick else (12, 3, 192, 640)
    features, D = ((1, 8, 12, 40), 8) if quick else ((1, 64, 48, 160), 96)
    for mode in ("fwd", "fwd+bwd"):
        group = f"warp_loss-{shape_str(shape)}-{mode}"
        params = {"what": "warp_loss", "shape": shape_str(shape), "mode": mode}
        out += [Case("monodepth2", group, p, params, functools.partial(_warp_loss, p, shape, mode))
                for p in ("monodepth2", "packops")]
        group = f"cost_volume-{shape_str(features)}-{D}bins-{mode}"
        params = {"what": f"cost_volume, {D} depth bins", "shape": shape_str(features),
                  "mode": mode}
        out += [Case("monodepth2", group, p, params,
                     functools.partial(_cost_volume, p, features, D, mode))
                for p in ("grid_sample", "packops", "packops-batched")]
    return out
