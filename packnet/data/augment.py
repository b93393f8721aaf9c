"""Augmentation as in PackNet-SfM's recipe, on item dicts of any loader.

resize_sample   rgb/rgb_context bilinear (antialiased), depth nearest, intrinsics
                with packops.scale_intrinsics semantics (pixel centres at integers)
color_jitter    brightness, contrast, saturation, hue: ONE random draw applied to
                the target and every context frame (the photometric loss compares them)
hflip           images, depth mirrored; intrinsics cx -> W-1-cx (skew negated);
                poses conjugated by diag(-1,1,1,1) (the mirrored world is rigid again)
Augmentation    resize -> jitter -> random flip, deterministic given a torch.Generator.
Keys that are absent are left alone; the input dict is not modified.
"""
import math

import torch
import torch.nn.functional as F

import packops

from .io import resize_image

__all__ = ["resize_sample", "color_jitter", "hflip", "Augmentation"]

def _map_images(sample, fn, depth_fn=None):
    out = dict(sample)
    if "rgb" in out:
        out["rgb"] = fn(out["rgb"])
    if "rgb_context" in out:
        out["rgb_context"] = [fn(im) for im in out["rgb_context"]]
    if depth_fn is not None and "depth" in out:
        out["depth"] = depth_fn(out["depth"])
    return out


def resize_sample(sample, size):
    """Resize every image to size=(H, W); intrinsics scaled to match."""
    H, W = (int(s) for s in size)
    h, w = sample["rgb"].shape[-2:]
    if (h, w) == (H, W):
        return dict(sample)

    def img(x):   # [3,h,w] -> [3,H,W]
        return resize_image(x, H, W)

    def dep(x):   # [1,h,w] -> [1,H,W]; nearest keeps metric values (and sparse zeros)
        return F.interpolate(x[None], size=(H, W), mode="nearest-exact")[0]

    out = _map_images(sample, img, dep)
    if "intrinsics" in out:
        out["intrinsics"] = packops.scale_intrinsics(out["intrinsics"], W / w, H / h)
    return out


# ------------------------------------------------------------------ colour
def _gray(x):   # [3,H,W] -> [1,H,W] (ITU-R 601 luma, as torchvision)
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


def _hue_rotate(x, angle):
    """Rotate the hue of [3,H,W] by `angle` radians in YIQ space."""
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                           [0.211, -0.523, 0.312]])
    c, s = math.cos(angle), math.sin(angle)
    rot = x.new_tensor([[1, 0, 0], [0, c, -s], [0, s, c]])
    M = torch.linalg.inv(to_yiq) @ rot @ to_yiq
    return torch.einsum("ij,jhw->ihw", M, x)


def draw_jitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, generator=None):
    """Random factors: brightness/contrast/saturation in [1-a, 1+a], hue in
    [-hue, hue] turns (fraction of a full hue circle)."""
    u = torch.rand(4, generator=generator, dtype=torch.float64)
    f = lambda a, r: 1.0 + a * (2 * r - 1)  # noqa: E731
    return {"brightness": f(brightness, u[0].item()), "contrast": f(contrast, u[1].item()),
            "saturation": f(saturation, u[2].item()), "hue": hue * (2 * u[3].item() - 1)}


def apply_jitter(x, p):
    """[3,H,W] in [0,1] -> jittered [3,H,W] with factors p (draw_jitter)."""
    x = (x * p["brightness"]).clamp(0, 1)
    x = ((x - _gray(x).mean()) * p["contrast"] + _gray(x).mean()).clamp(0, 1)
    g = _gray(x)
    x = ((x - g) * p["saturation"] + g).clamp(0, 1)
    if p["hue"] != 0:
        x = _hue_rotate(x, 2 * math.pi * p["hue"]).clamp(0, 1)
    return x


def color_jitter(sample, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, generator=None):
    """Same random colour change on the target and all context frames."""
    p = draw_jitter(brightness, contrast, saturation, hue, generator)
    out = _map_images(sample, lambda x: apply_jitter(x, p))
    out["jitter"] = p
    return out


# -------------------------------------------------------------------- flip
_MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


def hflip(sample):
    """Mirror left-right: images and depth, intrinsics and poses to match."""
    out = _map_images(sample, lambda x: x.flip(-1), lambda d: d.flip(-1))
    W = sample["rgb"].shape[-1]
    if "intrinsics" in out:
        K = out["intrinsics"].clone()               # [...,3,3]
        K[..., 0, 2] = (W - 1) - K[..., 0, 2]
        K[..., 0, 1] = -K[..., 0, 1]
        out["intrinsics"] = K
    if "pose_context" in out:
        out["pose_context"] = [_MIRROR.to(T) @ T @ _MIRROR.to(T) for T in out["pose_context"]]
    out["flipped"] = not sample.get("flipped", False)
    return out


class Augmentation:
    """Training augmentation: resize to `size` (None: keep), colour jitter
    (None: off) and horizontal flip with probability `flip_prob`.

    generator: torch.Generator for the random draws (default: a fresh one
    seeded with `seed`), so a run is reproducible. Use as a dataset transform.
    """

    def __init__(self, size=(192, 640), jitter=(0.2, 0.2, 0.2, 0.05), flip_prob=0.5, seed=0,
                 generator=None):
        self.size, self.jitter, self.flip_prob = size, jitter, float(flip_prob)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    def __call__(self, sample):
        if self.size is not None:
            sample = resize_sample(sample, self.size)
        if self.jitter is not None:
            sample = color_jitter(sample, *self.jitter, generator=self.generator)
        flip = torch.rand(1, generator=self.generator).item() < self.flip_prob
        return hflip(sample) if flip else dict(sample, flipped=sample.get("flipped", False))
