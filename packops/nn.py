"""nn.Module drop-ins for the packops ops."""
import torch

from .norm import group_norm_elu
from .pack import pack_conv, unpack3d
from .photometric import photometric_loss, ssim


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


# ------------------------------------------------------------------ packing
# PackNet-SfM's layers with their original attribute names, so state_dict
# keys and shapes match the released checkpoints; they compute through the
# packops ops (pack_conv, unpack3d), which pick a backend like every op.
def norm_elu(normalize, x):
    """ELU(GroupNorm(x)) through packops.group_norm_elu, with a GroupNorm
    module's parameters: x [B,C,H,W] -> [B,C,H,W]."""
    return group_norm_elu(x, normalize.weight, normalize.bias, normalize.num_groups,
                          normalize.eps)


class Conv2D(torch.nn.Module):
    """Zero pad k//2 + Conv2d (no padding) + GroupNorm(16) + ELU, as in
    PackNet-SfM; the padding runs inside the conv (the same zeros, without
    a padded copy of x) and the last two as one packops.group_norm_elu (the
    modules pad, normalize and activ stay, so the module tree and state_dict
    are the release's)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_base = torch.nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size,
                                         stride=stride)
        self.pad = torch.nn.ZeroPad2d([kernel_size // 2] * 4)
        self.normalize = torch.nn.GroupNorm(16, out_channels)
        self.activ = torch.nn.ELU(inplace=True)
        _xavier_init(self)

    def forward(self, x):
        """x: [B, in_channels, H, W] -> [B, out_channels, H', W']."""
        conv = self.conv_base
        x = torch.nn.functional.conv2d(x, conv.weight, conv.bias, conv.stride,
                                       self.kernel_size // 2)
        return norm_elu(self.normalize, x)


def _xavier_init(module):
    # The release applies xavier_uniform_ to every conv weight and zeros the biases.
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            torch.nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)


class PackLayerConv3d(torch.nn.Module):
    """PackNet's packing layer: x [B,C,H,W] -> [B,C,H/r,W/r].

    space-to-depth, Conv3d(1 -> d), Conv2D(d*r*r*C -> C, k): the first two
    convs run as one packops.pack_conv (never materialising the d*r*r*C-channel
    tensor on the fused backends), then GroupNorm and ELU as one
    packops.group_norm_elu.
    """

    def __init__(self, in_channels, kernel_size, r=2, d=8):
        super().__init__()
        self.r, self.d = r, d
        self.conv = Conv2D(in_channels * (r ** 2) * d, in_channels, kernel_size, 1)
        self.pack = torch.nn.PixelUnshuffle(r)
        self.conv3d = torch.nn.Conv3d(1, d, kernel_size=(3, 3, 3), stride=(1, 1, 1),
                                      padding=(1, 1, 1))
        _xavier_init(self)

    def forward(self, x):
        conv = self.conv
        x = pack_conv(x, self.conv3d.weight, self.conv3d.bias, conv.conv_base.weight,
                      conv.conv_base.bias, self.r)
        return norm_elu(conv.normalize, x)

    def extra_repr(self):
        return f"r={self.r}, d={self.d}"


class UnpackLayerConv3d(torch.nn.Module):
    """PackNet's unpacking layer: x [B,Cin,H,W] -> [B,Cout,H*r,W*r].

    Conv2D(Cin -> Cout*r*r/d, k), then Conv3d(1 -> d) + pixel shuffle as one
    packops.unpack3d (the un-shuffled conv output is never stored).
    """

    def __init__(self, in_channels, out_channels, kernel_size, r=2, d=8):
        super().__init__()
        self.r, self.d = r, d
        self.conv = Conv2D(in_channels, out_channels * (r ** 2) // d, kernel_size, 1)
        self.unpack = torch.nn.PixelShuffle(r)
        self.conv3d = torch.nn.Conv3d(1, d, kernel_size=(3, 3, 3), stride=(1, 1, 1),
                                      padding=(1, 1, 1))
        _xavier_init(self)

    def forward(self, x):
        return unpack3d(self.conv(x), self.conv3d.weight, self.conv3d.bias, self.r)

    def extra_repr(self):
        return f"r={self.r}, d={self.d}"
