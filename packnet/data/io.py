"""Files for the loaders (images decoded by packnet.image, as tensors) and the
corrupt/missing-file policy they share.

Every failure to read a file raises DataError naming the file. Loaders built
with skip_bad=True catch it instead, skip the sample (the next good one is
returned in its place), count it in `dataset.skipped` and list the file in
`dataset.bad_files`. With DataLoader workers each worker counts its own.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from ..image import IMAGE_EXTS, read_rgb8, write_image

__all__ = ["DataError", "read_rgb", "write_rgb", "read_text", "resize_image", "SkipBadMixin",
           "image_files"]


class DataError(RuntimeError):
    """A data file is missing, corrupt or malformed; `.path` names it."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)


def read_rgb(path):
    """Image file -> [3,H,W] float32 in [0,1]. DataError naming the file on failure."""
    if not os.path.isfile(path):
        raise DataError(path, "image file not found")
    try:
        arr = read_rgb8(path)
    except Exception as e:  # PIL raises several types (OSError, SyntaxError, ValueError ...)
        raise DataError(path, f"cannot decode image ({type(e).__name__}: {e})") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resize_image(img, H, W):
    """[3,h,w] in [0,1] -> [3,H,W] bilinear (antialiased when shrinking), pixel
    centres mapped as packops.scale_intrinsics assumes (align_corners=False)."""
    return F.interpolate(img[None], size=(H, W), mode="bilinear", align_corners=False,
                         antialias=True)[0].clamp(0, 1)


def write_rgb(path, rgb):
    """rgb: [3,H,W] float in [0,1] -> an 8-bit image file (the format from the extension)."""
    arr = (rgb.detach().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    write_image(path, arr)


def read_text(path):
    if not os.path.isfile(path):
        raise DataError(path, "file not found")
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read ({e})") from e


def parse_floats(path, text=None):
    """All whitespace/comma separated numbers of a text file as a float64 array."""
    text = read_text(path) if text is None else text
    try:
        return np.array([float(x) for x in text.replace(",", " ").split()], dtype=np.float64)
    except ValueError as e:
        raise DataError(path, f"expected numbers ({e})") from e


def image_files(root):
    """The image files (IMAGE_EXTS, not directories) of a directory, sorted."""
    return sorted(os.path.join(root, f) for f in os.listdir(root)
                  if f.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(root, f)))


class SkipBadMixin:
    """__getitem__ with the skip_bad policy; subclasses implement _load(idx)."""

    skip_bad = False

    def _init_skip(self, skip_bad):
        self.skip_bad = bool(skip_bad)
        self.skipped = 0
        self.bad_files = []
        self._bad = set()

    def _record_bad(self, idx, path):
        self._bad.add(idx)
        self.skipped += 1
        self.bad_files.append(str(path))

    def __getitem__(self, idx):
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} out of range for {n} items")
        idx %= n
        if not self.skip_bad:
            sample = self._load(idx)
        else:
            for k in range(n):
                j = (idx + k) % n
                if j in self._bad:
                    continue
                try:
                    sample = self._load(j)
                    break
                except DataError as e:
                    self._record_bad(j, e.path)
            else:
                raise DataError(getattr(self, "root", "?"), f"all {n} samples are bad")
        transform = getattr(self, "transform", None)
        return transform(sample) if transform is not None else sample
