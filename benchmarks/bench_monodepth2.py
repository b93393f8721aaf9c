"""packops in a monodepth2 / manydepth training step, against their own route.

  warp+loss    monodepth2's view synthesis and reprojection loss at its KITTI
               training shape (batch 12, 3x192x640): BackprojectDepth ->
               Project3D -> grid_sample(border) -> compute_reprojection_loss
               (provider "monodepth2", its `layers` module) against
               packops.reproject(padding_mode="border") ->
               packops.photometric_loss ("packops"); forward and backward with
               the gradients training needs (depth and pose).
  cost-volume  manydepth's cost volume: 64-channel features at a quarter of
               192x640 (48x160), 96 depth hypotheses, batch 1, each warped
               into the target view (zeros padding) and compared by the mean
               absolute difference over channels. "grid_sample": its loop
               (backproject a constant depth, project, grid_sample per
               hypothesis); "packops": the same loop with packops.reproject;
               "packops-batched": one packops.reproject call for all 96
               hypotheses (the features expanded over the batch). Forward,
               and forward+backward to the features.

Suite "monodepth2": benchmarks/results/<device>/monodepth2.md. Needs the
monodepth2 package (pip install monodepth2==1.0.0) for its providers.
"""
import math
import time

import torch
import torch.nn.functional as F

import packops

from . import harness

OPS = ("warp_loss", "cost_volume")
SUITE = "monodepth2"


def _layers():
    try:
        import layers
    except ImportError as e:
        raise harness.Skip(f"monodepth2 is not installed (pip install monodepth2==1.0.0): {e}")
    if not hasattr(layers, "BackprojectDepth"):
        raise harness.Skip("the `layers` module found is not monodepth2's")
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


class _Item:
    suite = SUITE

    def __init__(self, op, provider, shape, mode, extra=""):
        self.op, self.provider, self.shape, self.mode = op, provider, tuple(shape), mode
        self.group = f"{op}-{harness.shape_str(self.shape)}{extra}-{mode}"
        self.id = f"{self.group}-{self.provider}"

    def params(self):
        return {"what": self.op, "shape": harness.shape_str(self.shape), "mode": self.mode}

    def _run(self, fn, device):
        t0 = time.perf_counter()
        result = fn()
        first_s = time.perf_counter() - t0

        def extras(median_ms):
            return {**self.params(), "peak_mem_mb": harness.peak_memory(fn, device) / 1e6}
        return harness.Run(fn=fn, first_s=first_s, result=result, extras=extras)


class WarpLoss(_Item):
    """One context frame warped and scored: [B,3,H,W] images, [B,1,H,W] depth."""

    def __init__(self, provider, shape, mode):
        super().__init__("warp_loss", provider, shape, mode)

    def prepare(self, device, copy_gbps=None):
        B, C, H, W = self.shape
        g = torch.Generator().manual_seed(0)
        source = torch.rand(B, C, H, W, generator=g).to(device)
        target = torch.rand(B, C, H, W, generator=g).to(device)
        depth = (2 + 38 * torch.rand(B, 1, H, W, generator=g)).to(device)
        K, inv_K, T = _camera(B, H, W, device)
        grad = self.mode == "fwd+bwd"
        depth.requires_grad_(grad)
        T.requires_grad_(grad)
        if self.provider == "monodepth2":
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

        def step():
            if not grad:
                with torch.no_grad():
                    return loss()
            value = loss()
            return (value.detach(),) + torch.autograd.grad(value, (depth, T))
        return self._run(step, device)


class CostVolume(_Item):
    """features [B,Cf,h,w] of the target and the source frame, D hypotheses -> cost [B,D,h,w]."""

    def __init__(self, provider, shape, depths, mode):
        super().__init__("cost_volume", provider, shape, mode, extra=f"-{depths}bins")
        self.depths = depths

    def params(self):
        return {**super().params(), "what": f"cost_volume, {self.depths} depth bins"}

    def prepare(self, device, copy_gbps=None):
        B, Cf, h, w = self.shape
        D = self.depths
        g = torch.Generator().manual_seed(1)
        current = torch.rand(B, Cf, h, w, generator=g).to(device)
        lookup = torch.rand(B, Cf, h, w, generator=g).to(device)
        bins = torch.exp(torch.linspace(math.log(0.1), math.log(20.0), D)).tolist()  # manydepth's range
        K, inv_K, T = _camera(B, h, w, device)
        grad = self.mode == "fwd+bwd"
        lookup.requires_grad_(grad)
        if self.provider == "grid_sample":
            layers = _layers()
            back = layers.BackprojectDepth(B, h, w).to(device)
            project = layers.Project3D(B, h, w).to(device)

            def volume():
                costs = []
                for d in bins:
                    pix = project(back(torch.full((B, 1, h, w), d, device=device), inv_K), K, T)
                    warped = F.grid_sample(lookup, pix, padding_mode="zeros", align_corners=True)
                    costs.append((warped - current).abs().mean(1))
                return torch.stack(costs, 1)
        elif self.provider == "packops":
            K3 = K[:, :3, :3].contiguous()

            def volume():
                costs = []
                for d in bins:
                    warped = packops.reproject(lookup, torch.full((B, 1, h, w), d, device=device),
                                               K3, T)
                    costs.append((warped - current).abs().mean(1))
                return torch.stack(costs, 1)
        else:  # packops-batched: the hypotheses as the batch (B = 1)
            K3 = K[:, :3, :3].expand(D, 3, 3)
            depth = torch.tensor(bins, device=device).view(D, 1, 1, 1).expand(D, 1, h, w)

            def volume():
                warped = packops.reproject(lookup.expand(D, Cf, h, w), depth, K3,
                                           T.expand(D, 4, 4))
                return (warped - current).abs().mean(1)[None]

        def step():
            if not grad:
                with torch.no_grad():
                    return volume()
            cost = volume()
            return cost.detach(), torch.autograd.grad(cost.sum(), lookup)[0]
        return self._run(step, device)


def cases(device, quick=False, ops=OPS):
    out = []
    if "warp_loss" in ops:
        shape = (1, 3, 24, 64) if quick else (12, 3, 192, 640)
        for mode in ("fwd", "fwd+bwd"):
            out += [WarpLoss(p, shape, mode) for p in ("monodepth2", "packops")]
    if "cost_volume" in ops:
        shape, depths = ((1, 8, 12, 40), 8) if quick else ((1, 64, 48, 160), 96)
        for mode in ("fwd", "fwd+bwd"):
            out += [CostVolume(p, shape, depths, mode)
                    for p in ("grid_sample", "packops", "packops-batched")]
    return out


def table(rows, head=None):
    lines = ["| what | shape | mode | provider | median ms | p20/p80 ms | speedup | peak MB |",
             "|---|---|---|---|--:|--:|--:|--:|"]
    base = {}
    for r in rows:
        base.setdefault(r["group"], r["median_ms"])
        lines.append(f"| {r['what']} | {r['shape']} | {r['mode']} | {r['provider']} | "
                     f"{r['median_ms']:.1f} | {r['p20_ms']:.1f}/{r['p80_ms']:.1f} | "
                     f"{base[r['group']] / r['median_ms']:.2f}x | {r['peak_mem_mb']:.0f} |")
    return lines
