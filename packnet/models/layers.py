"""PackNet-SfM's layers, with the release's attribute names (so state_dict
keys match), computing through packops' fused ops (pack_conv, unpack3d,
group_norm_elu; the backend is chosen by packops' dispatch), plus the model
zoo's initialisation and input checks.

Initialisation: the release's (xavier_uniform_ conv weights, zero conv biases,
GroupNorm's 1 and 0), given once, to each conv as it is built (release_init),
so a layer built alone starts like one inside a network and the networks have
no second pass.
"""
import torch
from torch import nn

from packops import group_norm_elu, pack_conv, unpack3d

__all__ = ["Conv2D", "PackLayerConv3d", "UnpackLayerConv3d", "ResidualConv", "ResidualBlock",
           "InvDepth", "release_init", "check_image"]


def release_init(conv):
    """The release's initialisation of a conv module, which it returns:
    xavier_uniform_ weight, zero bias."""
    nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def norm_elu(normalize, x):
    """ELU(GroupNorm(x)) through packops.group_norm_elu, with a GroupNorm
    module's parameters: x [B,C,H,W] -> [B,C,H,W]."""
    return group_norm_elu(x, normalize.weight, normalize.bias, normalize.num_groups,
                          normalize.eps)


def _conv3d(d):
    """The (un)packing layers' Conv3d(1 -> d, 3x3x3, padding 1)."""
    return release_init(nn.Conv3d(1, d, kernel_size=(3, 3, 3), stride=(1, 1, 1),
                                  padding=(1, 1, 1)))


class Conv2D(nn.Module):
    """Zero pad k//2 + Conv2d (no padding) + GroupNorm(16) + ELU, as in
    PackNet-SfM; the padding runs inside the conv (the same zeros, without
    a padded copy of x) and the last two as one packops.group_norm_elu (the
    modules pad, normalize and activ stay, so the module tree and state_dict
    are the release's)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_base = release_init(nn.Conv2d(in_channels, out_channels,
                                                kernel_size=kernel_size, stride=stride))
        self.pad = nn.ZeroPad2d([kernel_size // 2] * 4)
        self.normalize = nn.GroupNorm(16, out_channels)
        self.activ = nn.ELU(inplace=True)

    def forward(self, x):
        """x: [B, in_channels, H, W] -> [B, out_channels, H', W']."""
        conv = self.conv_base
        x = nn.functional.conv2d(x, conv.weight, conv.bias, conv.stride, self.kernel_size // 2)
        return norm_elu(self.normalize, x)


class PackLayerConv3d(nn.Module):
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
        self.pack = nn.PixelUnshuffle(r)
        self.conv3d = _conv3d(d)

    def forward(self, x):
        conv = self.conv
        x = pack_conv(x, self.conv3d.weight, self.conv3d.bias, conv.conv_base.weight,
                      conv.conv_base.bias, self.r)
        return norm_elu(conv.normalize, x)

    def extra_repr(self):
        return f"r={self.r}, d={self.d}"


class UnpackLayerConv3d(nn.Module):
    """PackNet's unpacking layer: x [B,Cin,H,W] -> [B,Cout,H*r,W*r].

    Conv2D(Cin -> Cout*r*r/d, k), then Conv3d(1 -> d) + pixel shuffle as one
    packops.unpack3d (the un-shuffled conv output is never stored).
    """

    def __init__(self, in_channels, out_channels, kernel_size, r=2, d=8):
        super().__init__()
        self.r, self.d = r, d
        self.conv = Conv2D(in_channels, out_channels * (r ** 2) // d, kernel_size, 1)
        self.unpack = nn.PixelShuffle(r)
        self.conv3d = _conv3d(d)

    def forward(self, x):
        return unpack3d(self.conv(x), self.conv3d.weight, self.conv3d.bias, self.r)

    def extra_repr(self):
        return f"r={self.r}, d={self.d}"


class ResidualConv(nn.Module):
    """Two Conv2D(3x3) plus a 1x1 conv shortcut, summed, then GroupNorm(16) + ELU:
    x [B, in_channels, H, W] -> [B, out_channels, H/stride, W/stride].

    With `dropout`, the shortcut becomes Sequential(conv, Dropout2d) exactly as
    in the release, which renames its parameters to conv3.0.weight / conv3.0.bias;
    such keys load into a model built with dropout, or rename them to conv3.*
    (what the release's loader does for its older checkpoints).
    """

    def __init__(self, in_channels, out_channels, stride, dropout=None):
        super().__init__()
        self.conv1 = Conv2D(in_channels, out_channels, 3, stride)
        self.conv2 = Conv2D(out_channels, out_channels, 3, 1)
        self.conv3 = release_init(nn.Conv2d(in_channels, out_channels, kernel_size=1,
                                            stride=stride))
        self.normalize = nn.GroupNorm(16, out_channels)
        self.activ = nn.ELU(inplace=True)
        if dropout:
            self.conv3 = nn.Sequential(self.conv3, nn.Dropout2d(dropout))

    def forward(self, x):
        """x: [B, in_channels, H, W] -> [B, out_channels, H', W']."""
        out = self.conv2(self.conv1(x))
        return norm_elu(self.normalize, out + self.conv3(x))  # GroupNorm + ELU, one fused op


def ResidualBlock(in_channels, out_channels, num_blocks, stride, dropout=None):  # noqa: N802
    """nn.Sequential of `num_blocks` ResidualConv (the first changes channels and
    stride); a function returning a Sequential, as in the release, so the keys
    are conv2.0.conv1..., conv2.1.conv1... with no extra level."""
    layers = [ResidualConv(in_channels, out_channels, stride, dropout=dropout)]
    layers += [ResidualConv(out_channels, out_channels, 1, dropout=dropout)
               for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class InvDepth(nn.Module):
    """Inverse-depth head: zero pad 1, conv 3x3, sigmoid / min_depth:
    x [B, in_channels, H, W] -> [B, out_channels, H, W] in (0, 1/min_depth)."""

    def __init__(self, in_channels, out_channels=1, min_depth=0.5):
        super().__init__()
        self.min_depth = min_depth
        self.conv1 = release_init(nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1))
        self.pad = nn.ConstantPad2d([1] * 4, value=0)
        self.activ = nn.Sigmoid()

    def forward(self, x):
        """x: [B, in_channels, H, W] -> [B, out_channels, H, W]."""
        # the pad module stays for the release's module tree; the conv pads
        # with the same zeros without copying x
        x = nn.functional.conv2d(x, self.conv1.weight, self.conv1.bias, padding=1)
        return self.activ(x) / self.min_depth

    def extra_repr(self):
        return f"min_depth={self.min_depth}"


def check_image(owner, name, x, channels=3, multiple=1):
    """Raise ValueError naming `owner`'s argument `name` unless x is a floating
    [B, channels, H, W] tensor with B >= 1 and H, W positive multiples of `multiple`."""
    where = f"{owner}: {name}"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where} must be a torch.Tensor [B,{channels},H,W], got "
                         f"{type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{where} must be [B,{channels},H,W] (rank 4), got shape "
                         f"{tuple(x.shape)} (rank {x.dim()})")
    B, C, H, W = x.shape
    if C != channels:
        raise ValueError(f"{where} must have {channels} channels ([B,{channels},H,W]), got "
                         f"shape {tuple(x.shape)}")
    if B < 1 or H < 1 or W < 1:
        raise ValueError(f"{where} must be non-empty, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{where} must be a floating-point tensor, got {x.dtype}")
    if H % multiple or W % multiple:
        raise ValueError(f"{where}: H and W must be divisible by {multiple} (the network "
                         f"packs the image {multiple.bit_length() - 1} times by 2), got "
                         f"H={H}, W={W}")
