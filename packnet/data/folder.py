"""FolderDataset: a directory of ordered video frames + an intrinsics file.

Frames: the image files of `root` (.png .jpg .jpeg .bmp .ppm), in sorted
name order. Intrinsics file (for the frames' own size): either 9 numbers
(a 3x3 matrix, row-major, any whitespace/commas) or 4 numbers "fx fy cx cy".
Optional speed file: one number (m/s) per frame, in frame order. Timestamps
are frame / fps.

Item dict: rgb [3,H,W], rgb_context list of [3,H,W], intrinsics [3,3]
(scaled with the image when `size` is given), timestamp, timestamps_context,
speed (when a speed file is given), idx, filename.
"""
import os

import numpy as np
import torch

from .augment import resize_sample
from .io import IMAGE_EXTS, DataError, SkipBadMixin, parse_floats, read_rgb

__all__ = ["FolderDataset", "read_intrinsics"]


def read_intrinsics(path):
    """[3,3] float64 from a file of 9 numbers (3x3) or 4 numbers (fx fy cx cy)."""
    v = parse_floats(path)
    if v.size == 9:
        K = v.reshape(3, 3)
        if not np.allclose(K[2], [0, 0, 1]):
            raise DataError(path, f"the last row of a 3x3 intrinsics matrix must be 0 0 1, got {K[2]}")
        return K
    if v.size == 4:
        fx, fy, cx, cy = v
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    raise DataError(path, f"expected 9 numbers (3x3 matrix) or 4 (fx fy cx cy), got {v.size}")


class FolderDataset(SkipBadMixin, torch.utils.data.Dataset):
    """Ordered frames of one video in a folder; targets are the frames that
    have every context offset inside the sequence.

    skip_bad: a corrupt frame makes every item that reads it be skipped and
    counted (`skipped`, `bad_files`) instead of raising DataError naming it.
    """

    def __init__(self, root, intrinsics_file, speed_file=None, size=None, context=(-1, 1),
                 skip_bad=False, transform=None, fps=10.0):
        self.root, self.size, self.fps = str(root), size, float(fps)
        self.context = tuple(int(c) for c in context)
        self.transform = transform
        self._init_skip(skip_bad)
        if not os.path.isdir(self.root):
            raise DataError(self.root, "frame folder not found")
        self.files = sorted(os.path.join(self.root, f) for f in os.listdir(self.root)
                            if f.lower().endswith(IMAGE_EXTS))
        if not self.files:
            raise DataError(self.root, f"no image files ({', '.join(IMAGE_EXTS)})")
        self.K = read_intrinsics(intrinsics_file)
        self.speeds = None
        if speed_file is not None:
            self.speeds = parse_floats(speed_file)
            if self.speeds.size != len(self.files):
                raise DataError(speed_file, f"{self.speeds.size} speeds for {len(self.files)} frames")
        lo, hi = min(self.context + (0,)), max(self.context + (0,))
        self.targets = list(range(-lo, len(self.files) - hi))

    def __len__(self):
        return len(self.targets)

    def _load(self, idx):
        t = self.targets[idx]
        rgb = read_rgb(self.files[t])                                       # [3,h,w]
        ctx = [read_rgb(self.files[t + c]) for c in self.context]
        h, w = rgb.shape[-2:]
        for c, im in zip(self.context, ctx):
            if im.shape != rgb.shape:
                raise DataError(self.files[t + c],
                                f"size {tuple(im.shape[-2:])} differs from {self.files[t]}'s {(h, w)}")
        sample = {"idx": idx, "filename": self.files[t], "rgb": rgb, "rgb_context": ctx,
                  "intrinsics": torch.tensor(self.K, dtype=torch.float32),
                  "timestamp": t / self.fps,
                  "timestamps_context": [(t + c) / self.fps for c in self.context]}
        if self.speeds is not None:
            sample["speed"] = float(self.speeds[t])
        return sample if self.size is None else resize_sample(sample, self.size)
