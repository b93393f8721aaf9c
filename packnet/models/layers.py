"""PackNet-SfM's building blocks that packops.nn does not provide, with the
release's attribute names (so state_dict keys match), plus the shared
initialisation and input checks of the model zoo.

Conv2D, PackLayerConv3d and UnpackLayerConv3d come from packops.nn: they hold
the same parameters as the original layers and compute through packops' fused
ops (the backend is chosen by packops' dispatch).
"""
import torch
from torch import nn

from packops.nn import Conv2D, PackLayerConv3d, UnpackLayerConv3d, norm_elu

__all__ = ["Conv2D", "PackLayerConv3d", "UnpackLayerConv3d", "ResidualConv", "ResidualBlock",
           "InvDepth", "init_weights", "check_image"]


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
        self.conv3 = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride)
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
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1)
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


def init_weights(model, conv_types=(nn.Conv2d, nn.Conv3d)):
    """The release's init pass: xavier_uniform_ on every conv weight, zero bias,
    in module order; GroupNorm keeps PyTorch's default (weight 1, bias 0).
    (The same distribution as the release; the random draws differ from a
    same-seed run of the release because packops' layers also initialise
    themselves when built.)"""
    for m in model.modules():
        if isinstance(m, conv_types):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


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
