"""PoseNet: PackNet-SfM's pose network (after SfMLearner's PoseExpNet), with
the release's module names, shapes and initialisation."""
import torch
from torch import nn

from .layers import check_image, release_init

__all__ = ["PoseNet"]

CONV_CHANNELS = (16, 32, 64, 128, 256, 256, 256)
CONV_KERNELS = (7, 5, 3, 3, 3, 3, 3)


def conv_gn(in_planes, out_planes, kernel_size=3):
    """Stride-2 conv ('same' padding) + GroupNorm(16) + ReLU as a Sequential,
    so the keys are convN.0.weight/bias (conv) and convN.1.weight/bias (norm)."""
    return nn.Sequential(
        release_init(nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size,
                               padding=(kernel_size - 1) // 2, stride=2)),
        nn.GroupNorm(16, out_planes),
        nn.ReLU(inplace=True),
    )


class PoseNet(nn.Module):
    """Pose network: target + nb_ref_imgs context images -> [B, nb_ref_imgs, 6].

    forward(image [B,3,H,W], context: list of nb_ref_imgs [B,3,H,W]) stacks the
    images on channels (target first, then the context in list order), runs
    seven stride-2 conv_gn layers and a 1x1 conv, averages over space and
    returns [B, nb_ref_imgs, 6]: (tx, ty, tz, rx, ry, rz), the target ->
    context transform, the raw outputs times translation_scale (tx, ty, tz)
    and rotation_scale (rx, ry, rz); packnet.geometry.pose_vec2mat makes it a
    4x4 with R = Rx @ Ry @ Rz. The release's 0.01 for both keeps the initial
    poses near identity; it also means a translation of 1 m needs a raw output
    of 100, which Adam at 2e-4 takes thousands of steps to reach, so short
    metric-scale runs raise translation_scale (it changes no parameter).
    """

    def __init__(self, nb_ref_imgs=2, rotation_mode="euler", translation_scale=0.01,
                 rotation_scale=0.01):
        super().__init__()
        if not isinstance(nb_ref_imgs, int) or nb_ref_imgs < 1:
            raise ValueError(f"PoseNet: nb_ref_imgs must be a positive int, got {nb_ref_imgs!r}")
        if rotation_mode != "euler":
            raise ValueError(f"PoseNet: only rotation_mode='euler' is supported, got "
                             f"{rotation_mode!r}")
        for name, v in (("translation_scale", translation_scale),
                        ("rotation_scale", rotation_scale)):
            if not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise ValueError(f"PoseNet: {name} must be a positive number, got {v!r}")
        self.nb_ref_imgs = nb_ref_imgs
        self.translation_scale, self.rotation_scale = float(translation_scale), float(rotation_scale)
        self.rotation_mode = rotation_mode
        self.config = dict(nb_ref_imgs=nb_ref_imgs, translation_scale=self.translation_scale,
                           rotation_scale=self.rotation_scale)
        c_in = 3 * (1 + nb_ref_imgs)
        for i, (c_out, k) in enumerate(zip(CONV_CHANNELS, CONV_KERNELS), start=1):
            setattr(self, f"conv{i}", conv_gn(c_in, c_out, kernel_size=k))
            c_in = c_out
        self.pose_pred = release_init(nn.Conv2d(c_in, 6 * nb_ref_imgs, kernel_size=1, padding=0))

    def forward(self, image, context):
        """image: [B,3,H,W]; context: list/tuple of nb_ref_imgs [B,3,H,W] -> [B, nb_ref_imgs, 6]."""
        check_image("PoseNet", "image", image, channels=3)
        if not isinstance(context, (list, tuple)) or len(context) != self.nb_ref_imgs:
            got = f"{len(context)} tensors" if isinstance(context, (list, tuple)) else \
                type(context).__name__
            raise ValueError(f"PoseNet: context must be a list of nb_ref_imgs="
                             f"{self.nb_ref_imgs} tensors [B,3,H,W], got {got}")
        for i, c in enumerate(context):
            check_image("PoseNet", f"context[{i}]", c, channels=3)
            if c.shape != image.shape:
                raise ValueError(f"PoseNet: context[{i}] must have the image's shape "
                                 f"{tuple(image.shape)}, got {tuple(c.shape)}")
        x = torch.cat([image, *context], 1)
        for i in range(1, len(CONV_CHANNELS) + 1):
            x = getattr(self, f"conv{i}")(x)
        pose = self.pose_pred(x).mean(3).mean(2)  # [B, 6*nb_ref_imgs]
        pose = pose.view(pose.size(0), self.nb_ref_imgs, 2, 3)
        return (pose * self._scale(pose)).view(pose.size(0), self.nb_ref_imgs, 6)

    def _scale(self, like):
        """[2, 1]: (translation_scale, rotation_scale) in like's dtype and device,
        made once per dtype and device (a tensor from Python values is a copy
        from the host, which a training step on the GPU should not wait for)."""
        values = [[self.translation_scale], [self.rotation_scale]]
        if torch.compiler.is_compiling():  # a constant of the compiled graph
            return like.new_tensor(values)
        key = (like.dtype, like.device)
        cache = self.__dict__.setdefault("_scales", {})  # not a buffer: not in the state_dict
        if key not in cache:
            cache[key] = torch.tensor(values, dtype=like.dtype).to(like.device)
        return cache[key]

    def example_inputs(self, batch=1, height=192, width=640, device="cpu"):
        """Positional arguments of forward for [batch, 3, height, width] images."""
        def img():
            return torch.rand(batch, 3, height, width, device=device)
        return (img(), [img() for _ in range(self.nb_ref_imgs)])
