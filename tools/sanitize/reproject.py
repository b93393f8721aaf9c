"""Sanitizer driver for reproject, both padding modes (a NaN depth and points
landing outside included)."""
import torch

import packops


def run(backend, dtype, device):
    dev = device
    geo = torch.float64 if dtype == torch.float64 else torch.float32
    for B, C, H, W, Hs, Ws in ((1, 3, 2, 2, 2, 2), (2, 3, 9, 37, 12, 20), (1, 1, 33, 70, 33, 70)):
        image = torch.rand(B, C, Hs, Ws, device=dev, dtype=dtype, requires_grad=True)
        depth = (torch.rand(B, 1, H, W, device=dev, dtype=geo) * 5 + 0.5)
        depth[0, 0, 0, 0] = float("nan")
        depth.requires_grad_()
        K = torch.tensor([[W * 0.8, 0, W / 2], [0, W * 0.8, H / 2], [0, 0, 1]], device=dev,
                         dtype=geo).expand(B, 3, 3)
        T = torch.eye(4, device=dev, dtype=geo).repeat(B, 1, 1)
        T[:, :3, 3] = torch.tensor([0.3, -0.2, 0.5], device=dev, dtype=geo)  # some land outside
        T.requires_grad_()
        for padding_mode in ("zeros", "border"):
            with packops.use_backend(backend):
                out, mask = packops.reproject(image, depth, K, T, return_mask=True,
                                              padding_mode=padding_mode)
                out.nansum().backward()
