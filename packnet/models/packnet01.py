"""PackNet01 and PackNetSlim01: the depth networks of "3D Packing for
Self-Supervised Depth Estimation" (CVPR 2020), with the release's module
names, parameter shapes and initialisation, computing through packops.

Encoder: pre_calc Conv2D(3, ni, 5), conv1 Conv2D(ni, n1, 7), then five
packing layers (kernels 5, 3, 3, 3, 3), each but the last followed by a
ResidualBlock (2, 2, 3, 3 ResidualConv). Decoder: five unpacking layers, each
followed by an iconv Conv2D(3) over the unpacked features joined with the
encoder skip (version "1A": channel concatenation; "1B": addition) and, from
scale 1/4 up, the nearest-upsampled inverse depth of the previous scale.
"""
import torch
import torch.utils.checkpoint
from torch import nn

from .layers import (Conv2D, InvDepth, PackLayerConv3d, ResidualBlock, UnpackLayerConv3d,
                     check_image)

__all__ = ["PackNet01", "PackNetSlim01", "PackNetTiny"]

NUM_BLOCKS = (2, 2, 3, 3)
PACK_KERNELS = (5, 3, 3, 3, 3)
UNPACK_KERNEL = 3
ICONV_KERNEL = 3
DIVISOR = 32  # five packings by 2


class _PackNet(nn.Module):
    """The shared PackNet01 architecture; ni = pre_calc width, n = (n1..n5)
    encoder widths, d = 3D features of the (un)packing layers; init_depth: see
    PackNet01."""

    def __init__(self, name, ni, n, d, version, dropout, init_depth=None):
        super().__init__()
        if not isinstance(version, str) or len(version) != 2 or version[1] not in "AB":
            raise ValueError(f"{name}: unknown version {version!r}, expected '1A' "
                             f"(concatenated skips) or '1B' (added skips)")
        self.version = version[1:]  # the release keeps only the stacking letter
        if init_depth is not None and not 0.5 < init_depth < float("inf"):
            raise ValueError(f"{name}: init_depth must be a finite depth > min_depth 0.5, "
                             f"got {init_depth!r}")
        self.config = dict(version=version, dropout=dropout)
        if init_depth is not None:
            self.config["init_depth"] = float(init_depth)
        no = 1  # one inverse-depth channel
        n1, n2, n3, n4, n5 = n
        if self.version == "A":
            n1o, n1i = n1, n1 + ni + no
            n2o, n2i = n2, n2 + n1 + no
            n3o, n3i = n3, n3 + n2 + no
            n4o, n4i = n4, n4 + n3
            n5o, n5i = n5, n5 + n4
        else:  # addition: unpack outputs are as wide as their skips
            n1o, n1i = n1, n1 + no
            n2o, n2i = n2, n2 + no
            n3o, n3i = n3 // 2, n3 // 2 + no
            n4o, n4i = n4 // 2, n4 // 2
            n5o, n5i = n5 // 2, n5 // 2

        self.pre_calc = Conv2D(3, ni, 5, 1)
        # Construction order = registration order = the release's module order.
        self.pack1 = PackLayerConv3d(n1, PACK_KERNELS[0], d=d)
        self.pack2 = PackLayerConv3d(n2, PACK_KERNELS[1], d=d)
        self.pack3 = PackLayerConv3d(n3, PACK_KERNELS[2], d=d)
        self.pack4 = PackLayerConv3d(n4, PACK_KERNELS[3], d=d)
        self.pack5 = PackLayerConv3d(n5, PACK_KERNELS[4], d=d)

        self.conv1 = Conv2D(ni, n1, 7, 1)
        self.conv2 = ResidualBlock(n1, n2, NUM_BLOCKS[0], 1, dropout=dropout)
        self.conv3 = ResidualBlock(n2, n3, NUM_BLOCKS[1], 1, dropout=dropout)
        self.conv4 = ResidualBlock(n3, n4, NUM_BLOCKS[2], 1, dropout=dropout)
        self.conv5 = ResidualBlock(n4, n5, NUM_BLOCKS[3], 1, dropout=dropout)

        self.unpack5 = UnpackLayerConv3d(n5, n5o, UNPACK_KERNEL, d=d)
        self.unpack4 = UnpackLayerConv3d(n5, n4o, UNPACK_KERNEL, d=d)
        self.unpack3 = UnpackLayerConv3d(n4, n3o, UNPACK_KERNEL, d=d)
        self.unpack2 = UnpackLayerConv3d(n3, n2o, UNPACK_KERNEL, d=d)
        self.unpack1 = UnpackLayerConv3d(n2, n1o, UNPACK_KERNEL, d=d)

        self.iconv5 = Conv2D(n5i, n5, ICONV_KERNEL, 1)
        self.iconv4 = Conv2D(n4i, n4, ICONV_KERNEL, 1)
        self.iconv3 = Conv2D(n3i, n3, ICONV_KERNEL, 1)
        self.iconv2 = Conv2D(n2i, n2, ICONV_KERNEL, 1)
        self.iconv1 = Conv2D(n1i, n1, ICONV_KERNEL, 1)

        # Parameter-free, kept for module-tree parity with the release
        # (unpack_disps is unused there too).
        self.unpack_disps = nn.PixelShuffle(2)
        self.unpack_disp4 = nn.Upsample(scale_factor=2, mode="nearest")
        self.unpack_disp3 = nn.Upsample(scale_factor=2, mode="nearest")
        self.unpack_disp2 = nn.Upsample(scale_factor=2, mode="nearest")

        self.disp4_layer = InvDepth(n4, out_channels=no)
        self.disp3_layer = InvDepth(n3, out_channels=no)
        self.disp2_layer = InvDepth(n2, out_channels=no)
        self.disp1_layer = InvDepth(n1, out_channels=no)

        self.checkpoint_activations = "none"
        if init_depth is not None:
            # sigmoid(b) / min_depth = 1 / init_depth on a zero input; the
            # weights keep the release's init, so outputs start spread around it
            for head in (self.disp1_layer, self.disp2_layer, self.disp3_layer, self.disp4_layer):
                p = head.min_depth / float(init_depth)
                nn.init.constant_(head.conv1.bias, float(torch.logit(torch.tensor(p))))

    def _join(self, unpacked, skip, *extra):
        # "A" concatenates the skip; "B" adds it (same width by construction).
        parts = (unpacked, skip) if self.version == "A" else (unpacked + skip,)
        parts += extra
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def _stage(self, part, fn, *args):
        """fn(*args), its activations recomputed in backward (not stored) when
        checkpoint_activations names `part` ("encoder" or "decoder") or "all"."""
        if (self.checkpoint_activations in (part, "all") and self.training
                and torch.is_grad_enabled()):
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _encode(self, conv, pack, x):
        return pack(conv(x))

    def _decode(self, unpack, iconv, disp_layer, x, skip, up=None, disp=None):
        """One decoder stage: unpack, join the skip (and the upsampled
        inverse depth of the previous scale), iconv, and this scale's
        inverse depth when it has a head."""
        extra = () if up is None else (up(disp),)
        out = iconv(self._join(unpack(x), skip, *extra))
        return out, (None if disp_layer is None else disp_layer(out))

    def forward(self, rgb):
        """rgb: [B,3,H,W], H and W divisible by 32, images in [0, 1].

        Train mode: [inv_depth 1/1, 1/2, 1/4, 1/8], each [B,1,H/s,W/s].
        Eval mode: the full-resolution inverse depth [B,1,H,W].
        Values are sigmoid / 0.5, so in (0, 2): depth > 0.5 (unitless until
        scaled, metric when trained with the velocity loss).
        checkpoint_activations ("none", "encoder", "decoder", "all"; a plain
        attribute, not saved in the state_dict) recomputes each stage of
        that part in backward instead of storing its activations.
        """
        check_image(type(self).__name__, "rgb", rgb, channels=3, multiple=DIVISOR)
        enc, dec = "encoder", "decoder"
        x = self._stage(enc, self.pre_calc, rgb)

        x1p = self._stage(enc, self._encode, self.conv1, self.pack1, x)
        x2p = self._stage(enc, self._encode, self.conv2, self.pack2, x1p)
        x3p = self._stage(enc, self._encode, self.conv3, self.pack3, x2p)
        x4p = self._stage(enc, self._encode, self.conv4, self.pack4, x3p)
        x5p = self._stage(enc, self._encode, self.conv5, self.pack5, x4p)

        iconv5, _ = self._stage(dec, self._decode, self.unpack5, self.iconv5, None, x5p, x4p)
        iconv4, disp4 = self._stage(dec, self._decode, self.unpack4, self.iconv4,
                                    self.disp4_layer, iconv5, x3p)
        iconv3, disp3 = self._stage(dec, self._decode, self.unpack3, self.iconv3,
                                    self.disp3_layer, iconv4, x2p, self.unpack_disp4, disp4)
        iconv2, disp2 = self._stage(dec, self._decode, self.unpack2, self.iconv2,
                                    self.disp2_layer, iconv3, x1p, self.unpack_disp3, disp3)
        _, disp1 = self._stage(dec, self._decode, self.unpack1, self.iconv1,
                               self.disp1_layer, iconv2, x, self.unpack_disp2, disp2)

        if self.training:
            return [disp1, disp2, disp3, disp4]
        return disp1

    def example_inputs(self, batch=1, height=192, width=640, device="cpu"):
        """Positional arguments of forward for a [batch, 3, height, width] image."""
        return (torch.rand(batch, 3, height, width, device=device),)


class PackNet01(_PackNet):
    """PackNet with 3D packing, version 01 (the CVPR paper's network).

    version: "1A" (concatenated skips, 128.29M parameters) or "1B" (added
    skips); dropout: Dropout2d probability on the residual shortcuts, or None;
    init_depth: None (the release's zero bias: inverse depths start near 1,
    depths near 1) or a depth the inverse-depth heads' biases start at, a
    prior for short runs where a metric pose is learned fast (changes no
    parameter shape or name).

    forward(rgb [B,3,H,W]) returns, in train mode, the list of four inverse
    depths [full, 1/2, 1/4, 1/8] and, in eval mode, the full-resolution one
    [B,1,H,W]. The release wraps these in {'inv_depths': ...}; we return them
    bare (the form of the first release) and leave the dict to the trainer.
    """

    def __init__(self, version="1A", dropout=None, init_depth=None):
        super().__init__("PackNet01", 64, (64, 64, 128, 256, 512), 8, version, dropout,
                         init_depth)


class PackNetSlim01(_PackNet):
    """The slimmer PackNet01: widths 32/64/128/256/512, four 3D features.

    Only version "1A": the release also accepts "1B", but its addition skip at
    scale 1/2 adds the 64-channel unpack2 output to the 32-channel pack1
    output and fails at the first forward; we raise at construction instead.
    Returns what PackNet01 returns.
    """

    def __init__(self, version="1A", dropout=None, init_depth=None):
        if version == "1B":
            raise ValueError("PackNetSlim01: version '1B' is not supported (the release's "
                             "1B adds a 64-channel unpack2 output to a 32-channel skip and "
                             "cannot run); use '1A'")
        super().__init__("PackNetSlim01", 32, (32, 64, 128, 256, 512), 4, version, dropout,
                         init_depth)


class PackNetTiny(_PackNet):
    """Not a release architecture: PackNet01's layout at widths 16/16/32/64/128
    with four 3D features (about 1/60 of PackNet01's parameters), for CPU runs
    such as `packnet train`'s default preset and the tests. Returns what
    PackNet01 returns."""

    def __init__(self, version="1A", dropout=None, init_depth=None):
        super().__init__("PackNetTiny", 16, (16, 16, 32, 64, 128), 4, version, dropout,
                         init_depth)
