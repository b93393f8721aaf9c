"""nn.Module drop-ins for the packops losses. PackNet-SfM's layers built on
pack_conv, unpack3d and group_norm_elu (Conv2D, PackLayerConv3d,
UnpackLayerConv3d) live with the model zoo, in packnet.models.layers."""
import torch

from .photometric import photometric_loss, ssim

__all__ = ["SSIM", "PhotometricLoss"]


class SSIM(torch.nn.Module):
    """Per-pixel SSIM, 3x3 window with reflection padding: (x, y) [B,C,H,W] -> [B,C,H,W]."""

    def __init__(self, C1=1e-4, C2=9e-4):
        super().__init__()
        self.C1, self.C2 = C1, C2

    def forward(self, x, y):
        return ssim(x, y, self.C1, self.C2)

    def extra_repr(self):
        return f"C1={self.C1}, C2={self.C2}"


class PhotometricLoss(torch.nn.Module):
    """alpha * (1 - SSIM) / 2 + (1 - alpha) * L1, channel-averaged:
    (pred, target) [B,C,H,W] -> [B,1,H,W]."""

    def __init__(self, alpha=0.85, C1=1e-4, C2=9e-4):
        super().__init__()
        self.alpha, self.C1, self.C2 = alpha, C1, C2

    def forward(self, pred, target):
        return photometric_loss(pred, target, self.alpha, self.C1, self.C2)

    def extra_repr(self):
        return f"alpha={self.alpha}, C1={self.C1}, C2={self.C2}"
