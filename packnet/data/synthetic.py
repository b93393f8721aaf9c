"""SyntheticDriving: the embedded default data set (procedurally rendered).

Every sequence is a random street (scene.make_scene) driven along by a camera
(scene.Trajectory), rendered by render.render; all of it is a deterministic
function of (seed, split, sequence index), so splits are disjoint sequences
and two data sets built with the same arguments give identical tensors.

Item dict (H, W = size):
  rgb                [3,H,W] float32 in [0,1], the target frame
  rgb_context        list of [3,H,W], one per offset in `context`
  depth              [1,H,W] float32, exact metric depth (camera z), 0 = sky
  intrinsics         [3,3] float32
  pose_context       list of [4,4] float32: target camera -> context camera
  timestamp          float seconds since the sequence's first frame
  timestamps_context list of float
  speed              float m/s (norm of the camera velocity at the target)
  idx, sequence, frame  ints
"""
from collections import OrderedDict

import numpy as np
import torch

from .render import render
from .scene import FPS, make_sequence, target_to_context

__all__ = ["SyntheticDriving", "PRESETS", "SPLITS", "default_intrinsics", "resolve_size"]

PRESETS = {"192x640": (192, 640), "96x320": (96, 320), "64x192": (64, 192)}
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SEQUENCES = {"train": 20, "val": 4, "test": 4}
CACHE_BYTES = 1 << 30


def resolve_size(size):
    """"192x640" (a preset name) or (H, W) -> (H, W)."""
    if isinstance(size, str):
        if size not in PRESETS:
            raise ValueError(f"unknown size preset {size!r}; presets: {sorted(PRESETS)}")
        return PRESETS[size]
    H, W = (int(s) for s in size)
    if H < 2 or W < 2:
        raise ValueError(f"size must be at least 2x2, got {size}")
    return H, W


def default_intrinsics(H, W):
    """[3,3] float64: KITTI-like normalised intrinsics (monodepth2's
    fx = 0.58 W, fy = 1.92 H, principal point at the image centre)."""
    return np.array([[0.58 * W, 0.0, 0.5 * W], [0.0, 1.92 * H, 0.5 * H], [0.0, 0.0, 1.0]])


class SyntheticDriving(torch.utils.data.Dataset):
    """Procedurally rendered driving sequences with exact depth and poses.

    split: "train" | "val" | "test" (disjoint sequences); size: preset name or
    (H, W); num_sequences: default 20 / 4 / 4; context: frame offsets of the
    context frames (targets without all of them in the sequence are not
    items); cache_frames: how many rendered frames an LRU cache keeps
    (neighbouring items share frames); None (default) keeps every frame of
    the split when they fit in CACHE_BYTES (1 GiB: 64x192 and 96x320 at the
    default sequence counts), else 32;
    transform: optional callable on the item dict (e.g. augment.Augmentation).
    """

    def __init__(self, split="train", size="192x640", num_sequences=None, frames_per_sequence=30,
                 seed=0, context=(-1, 1), cache_frames=None, transform=None, fps=FPS):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        self.split, self.seed, self.fps = split, int(seed), float(fps)
        if not 0 < self.fps < float("inf"):
            raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
        self.H, self.W = resolve_size(size)
        self.num_sequences = DEFAULT_SEQUENCES[split] if num_sequences is None else int(num_sequences)
        self.frames_per_sequence = int(frames_per_sequence)
        self.context = tuple(int(c) for c in context)
        if 0 in self.context:
            raise ValueError("context offsets must be non-zero")
        lo, hi = min(self.context + (0,)), max(self.context + (0,))
        self.targets = list(range(-lo, self.frames_per_sequence - hi))
        if not self.targets:
            raise ValueError(f"frames_per_sequence={frames_per_sequence} is too short for "
                             f"context {self.context}")
        self.K = default_intrinsics(self.H, self.W)
        self.transform = transform
        if cache_frames is None:
            frame_bytes = 4 * 4 * self.H * self.W          # rgb + depth, float32
            total = self.num_sequences * self.frames_per_sequence
            cache_frames = total if total * frame_bytes <= CACHE_BYTES else 32
        self.cache_frames = int(cache_frames)
        self._frames = OrderedDict()
        self._sequences = {}

    def sequence_seed(self, s):
        return (self.seed, SPLITS[self.split], int(s))

    def sequence(self, s):
        """(Scene, Trajectory) of sequence s (cached: they are small)."""
        if s not in self._sequences:
            self._sequences[s] = make_sequence(self.sequence_seed(s), self.frames_per_sequence,
                                               self.fps)
        return self._sequences[s]

    def frame(self, s, i):
        """Rendered frame i of sequence s: (rgb [3,H,W], depth [1,H,W]), LRU-cached."""
        key = (s, i)
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        scene, traj = self.sequence(s)
        out = render(scene, traj.world_from_camera(i), self.K, self.H, self.W)
        if self.cache_frames > 0:
            self._frames[key] = out
            while len(self._frames) > self.cache_frames:
                self._frames.popitem(last=False)
        return out

    def __len__(self):
        return self.num_sequences * len(self.targets)

    def locate(self, idx):
        """Item index -> (sequence, target frame)."""
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} items")
        idx %= len(self)
        return idx // len(self.targets), self.targets[idx % len(self.targets)]

    def __getitem__(self, idx):
        s, t = self.locate(idx)
        _, traj = self.sequence(s)
        rgb, depth = self.frame(s, t)
        ctx = [t + c for c in self.context]
        sample = {
            "idx": int(idx) % len(self), "sequence": s, "frame": t,
            "rgb": rgb.clone(), "depth": depth.clone(),
            "rgb_context": [self.frame(s, c)[0].clone() for c in ctx],
            "intrinsics": torch.tensor(self.K, dtype=torch.float32),
            "pose_context": [torch.tensor(target_to_context(traj, t, c), dtype=torch.float32)
                             for c in ctx],
            "timestamp": traj.timestamp(t),
            "timestamps_context": [traj.timestamp(c) for c in ctx],
            "speed": traj.speed(t),
        }
        return self.transform(sample) if self.transform is not None else sample
