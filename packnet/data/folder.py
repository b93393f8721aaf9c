"""FolderDataset: a directory of ordered video frames + an intrinsics file.

Frames: the image files of `root` (.png .jpg .jpeg .bmp .ppm), in sorted
name order, all of one size (checked from their headers at construction).
Intrinsics file (for the frames' own size): either 9 numbers
(a 3x3 matrix, row-major, any whitespace/commas) or 4 numbers "fx fy cx cy".
fx and fy must be positive and every number finite. Optional speed file: one
number (m/s, finite, >= 0) per frame, in frame order. Timestamps are frame /
fps. Optional depth folder (ground truth for evaluation): one file per frame
named after it, <stem>.npy (float depth in metres, [H,W]) or <stem>.png
(16-bit, depth = value / 256 m as KITTI's depth maps); 0 = no depth.

Item dict: rgb [3,H,W], rgb_context list of [3,H,W], intrinsics [3,3]
(scaled with the image when `size` is given), timestamp, timestamps_context,
speed (when a speed file is given), depth [1,H,W] (when a depth folder is
given), idx, filename.
"""
import os

import numpy as np
import torch

from ..image import IMAGE_EXTS, image_size, read_image
from .augment import resize_sample
from .io import DataError, SkipBadMixin, image_files, parse_floats, read_rgb

__all__ = ["FolderDataset", "read_intrinsics", "read_speeds", "read_depth"]


def read_intrinsics(path):
    """[3,3] float64 from a file of 9 numbers (3x3) or 4 numbers (fx fy cx cy)."""
    v = parse_floats(path)
    if v.size == 9:
        K = v.reshape(3, 3)
        if np.isfinite(K).all() and not np.allclose(K[2], [0, 0, 1]):
            raise DataError(path, f"the last row of a 3x3 intrinsics matrix must be 0 0 1, got {K[2]}")
    elif v.size == 4:
        fx, fy, cx, cy = v
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    else:
        raise DataError(path, f"expected 9 numbers (3x3 matrix) or 4 (fx fy cx cy), got {v.size}")
    got = f"fx={K[0, 0]:g} fy={K[1, 1]:g} cx={K[0, 2]:g} cy={K[1, 2]:g}"
    if not np.isfinite(K).all():
        raise DataError(path, f"intrinsics must be finite numbers, got {got}"
                              + ("" if v.size == 4 else f" (matrix {v.tolist()})"))
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise DataError(path, f"focal lengths fx and fy must be positive, got {got}")
    return K


def read_speeds(path, n):
    """n speeds (m/s, finite, >= 0) from a file of one number per frame."""
    v = parse_floats(path)
    if v.size != n:
        raise DataError(path, f"{v.size} speeds for {n} frames")
    bad = np.flatnonzero(~(np.isfinite(v) & (v >= 0)))
    if bad.size:
        raise DataError(path, f"speed on line {bad[0] + 1} is {v[bad[0]]:g}; speeds are finite "
                              f"numbers >= 0 (m/s)")
    return v


def read_depth(path):
    """[1,H,W] float32 metres from <stem>.npy (metres) or a 16-bit <stem>.png (1/256 m)."""
    try:
        if path.endswith(".npy"):
            d = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            raw = read_image(path)
            if raw.dtype != np.uint16:
                raise ValueError(f"a depth PNG must be 16-bit grey (depth * 256), got "
                                 f"{raw.dtype} {raw.shape}")
            d = raw.astype(np.float32) / 256.0
    except Exception as e:  # noqa: BLE001 - Pillow and numpy raise several types
        raise DataError(path, f"cannot read depth ({type(e).__name__}: {e})") from e
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise DataError(path, f"depth must be [H,W], got shape {d.shape}")
    d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
    return torch.from_numpy(d)[None]


class FolderDataset(SkipBadMixin, torch.utils.data.Dataset):
    """Ordered frames of one video in a folder; targets are the frames that
    have every context offset inside the sequence.

    skip_bad: a corrupt frame makes every item that reads it be skipped and
    counted (`skipped`, `bad_files`) instead of raising DataError naming it.
    depth_dir: ground-truth depth per frame (see the module docstring);
    `has_depth` says whether items carry it.
    """

    def __init__(self, root, intrinsics_file, speed_file=None, size=None, context=(-1, 1),
                 skip_bad=False, transform=None, fps=10.0, depth_dir=None):
        self.root, self.size, self.fps = str(root), size, float(fps)
        self.context = tuple(int(c) for c in context)
        self.transform = transform
        self._init_skip(skip_bad)
        if not os.path.isdir(self.root):
            raise DataError(self.root, "frame folder not found")
        self.files = image_files(self.root)
        if not self.files:
            raise DataError(self.root, f"no image files ({', '.join(IMAGE_EXTS)})")
        self._check_one_size()
        self.K = read_intrinsics(intrinsics_file)
        self.speeds = None
        if speed_file is not None:
            self.speeds = read_speeds(speed_file, len(self.files))
        self.depth_dir = None if depth_dir is None else str(depth_dir)
        if self.depth_dir is not None and not os.path.isdir(self.depth_dir):
            raise DataError(self.depth_dir, "depth folder not found")
        lo, hi = min(self.context + (0,)), max(self.context + (0,))
        self.targets = list(range(-lo, len(self.files) - hi))

    def _check_one_size(self):
        """Every frame has one size (the intrinsics are for it): frames of two
        sizes are refused now, naming one of each, not at the step that first
        pairs them. Headers only; a frame whose header cannot be read is left
        to the corrupt-file policy (skip_bad) when it is loaded."""
        first = None
        for f in self.files:
            hw = image_size(f)
            if hw is None:
                continue
            if first is None:
                first = (f, hw)
            elif hw != first[1]:
                raise DataError(f, f"frame size {hw[0]}x{hw[1]} differs from {first[0]}'s "
                                   f"{first[1][0]}x{first[1][1]}: the frames of a folder must "
                                   f"have one size (the intrinsics file describes it); resize "
                                   f"them or move the odd ones out")

    def __len__(self):
        return len(self.targets)

    @property
    def has_depth(self):
        return self.depth_dir is not None

    def depth_path(self, frame):
        stem = os.path.splitext(os.path.basename(self.files[frame]))[0]
        for ext in (".npy", ".png"):
            p = os.path.join(self.depth_dir, stem + ext)
            if os.path.isfile(p):
                return p
        raise DataError(os.path.join(self.depth_dir, stem + ".npy"),
                        f"no depth for frame {self.files[frame]} (<stem>.npy or .png)")

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
        if self.depth_dir is not None:
            path = self.depth_path(t)
            depth = read_depth(path)
            if depth.shape[-2:] != (h, w):
                raise DataError(path, f"depth size {tuple(depth.shape[-2:])} differs from the "
                                      f"frame's {(h, w)}")
            sample["depth"] = depth
        return sample if self.size is None else resize_sample(sample, self.size)
