"""Sanitizer driver for photometric_loss and ssim."""
import torch

import packops


def run(backend, dtype, device):
    for shape in ((1, 3, 2, 2), (2, 3, 9, 37), (1, 2, 33, 70)):
        x = torch.rand(shape, device=device, dtype=dtype, requires_grad=True)
        y = torch.rand(shape, device=device, dtype=dtype, requires_grad=True)
        with packops.use_backend(backend):
            (packops.photometric_loss(x, y).sum() + packops.ssim(x, y).sum()).backward()
