"""Sanitizer driver for pack3d, unpack3d and pack_conv."""
import torch

import packops


def run(backend, dtype, device):
    dev = device
    for B, C, H, W, k in ((1, 3, 2, 2, 3), (2, 5, 6, 10, 5), (1, 4, 12, 8, 3)):
        x = torch.rand(B, C, H, W, device=dev, dtype=dtype, requires_grad=True)
        w3 = torch.randn(8, 1, 3, 3, 3, device=dev, dtype=dtype, requires_grad=True)
        b3 = torch.randn(8, device=dev, dtype=dtype, requires_grad=True)
        w2 = torch.randn(C, 8 * 4 * C, k, k, device=dev, dtype=dtype, requires_grad=True)
        b2 = torch.randn(C, device=dev, dtype=dtype, requires_grad=True)
        with packops.use_backend(backend):
            y = packops.pack3d(x, w3, b3).sum() + packops.pack_conv(x, w3, b3, w2, b2).sum()
            y = y + packops.unpack3d(x, w3, b3).sum()
            y.backward()
