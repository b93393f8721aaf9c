"""Sanitizer driver for group_norm_elu (groups of one channel, one group, a
plane larger than a block, an empty plane)."""
import torch

import packops


def run(backend, dtype, device):
    for B, C, H, W, G in ((1, 4, 2, 2, 4), (2, 16, 9, 37, 4), (1, 32, 33, 70, 1), (2, 8, 0, 5, 2)):
        x = torch.randn(B, C, H, W, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(C, device=device, dtype=dtype, requires_grad=True)
        b = torch.randn(C, device=device, dtype=dtype, requires_grad=True)
        with packops.use_backend(backend):
            packops.group_norm_elu(x, w, b, G).sum().backward()
