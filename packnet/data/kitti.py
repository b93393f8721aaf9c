"""KITTIRaw: the KITTI raw layout with Eigen / Zhou split files.

Split line formats (one target frame per line, blank lines and # ignored):
  "<date>/<drive> <frame> l|r"                        monodepth2 / Eigen
  "<date>/<drive>/image_02/data/<frame>.png [...]"    PackNet (first path is the target)
  "<drive>_02|_03 <frame>"                            SfMLearner / Zhou
Context frames are target + offset (default -1, +1); targets without all of
them on disk are dropped (`dataset.no_context` counts them).

Item dict (H, W = the loaded/resized image size):
  rgb [3,H,W], rgb_context list of [3,H,W], intrinsics [3,3] = P_rect_0X[:, :3]
  (scaled with the image), depth [1,H,W] sparse velodyne depth (0 = none;
  nearest point per pixel, pixel = round(projection), no MATLAB -1 shift),
  speed = |(vf, vl, vu)| from oxts (m/s), timestamp / timestamps_context
  (seconds since the drive's first image_0X/timestamps.txt line, else 0.1 s
  per frame), idx, filename (target image path).
"""
import datetime
import os
from functools import lru_cache

import numpy as np
import torch

import packops

from .io import DataError, SkipBadMixin, parse_floats, read_rgb, read_text, resize_image

__all__ = ["KITTIRaw", "read_calib", "parse_split_line", "velodyne_depth"]


def read_calib(path):
    """KITTI calibration file -> {key: float64 array} (non-numeric values skipped)."""
    out = {}
    for line in read_text(path).splitlines():
        if ":" not in line:
            continue
        key, val = line.split(":", 1)
        try:
            out[key.strip()] = np.array([float(x) for x in val.split()], dtype=np.float64)
        except ValueError:
            continue
    return out


def parse_split_line(line):
    """-> (date, drive, camera "image_02"/"image_03", frame int)."""
    parts = line.split()
    first = parts[0]
    if first.endswith((".png", ".jpg")):                       # PackNet: path to the image
        segs = first.replace("\\", "/").split("/")
        date, drive, cam, frame = segs[-5], segs[-4], segs[-3], os.path.splitext(segs[-1])[0]
    elif "/" in first:                                           # Eigen: date/drive frame side
        date, drive = first.rstrip("/").split("/")[-2:]
        side = parts[2] if len(parts) > 2 else "l"
        cam = {"l": "image_02", "r": "image_03"}.get(side)
        if cam is None:
            raise ValueError(f"side must be l or r, got {side!r}")
        frame = parts[1]
    else:                                                        # Zhou: drive_02 frame
        drive, cam_id = first.rsplit("_", 1)
        date, cam, frame = drive[:10], f"image_{cam_id}", parts[1]
    return date, drive, cam, int(frame)


def velodyne_depth(points, P, R_rect, R_vc, T_vc, H, W):
    """Sparse depth [H,W] float32: velodyne points [N,>=3] -> rectified camera
    (x = R_rect (R_vc X + T_vc)) -> pixels via P [3,4]; nearest point per pixel."""
    X = points[:, :3].astype(np.float64) @ R_vc.T + T_vc
    X = X @ R_rect.T
    p = X @ P[:, :3].T + P[:, 3]
    z = p[:, 2]
    front = z > 1e-3
    p, z = p[front], z[front]
    u, v = np.round(p[:, 0] / z).astype(np.int64), np.round(p[:, 1] / z).astype(np.int64)
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    depth = np.full(H * W, np.inf)
    np.minimum.at(depth, v[inside] * W + u[inside], z[inside])
    depth[np.isinf(depth)] = 0.0
    return depth.reshape(H, W).astype(np.float32)


def _parse_stamp(line):
    date, clock = line.strip().split(" ")
    h, m, s = clock.split(":")
    day = datetime.date.fromisoformat(date).toordinal()
    return day, int(h) * 3600 + int(m) * 60 + float(s)  # apart: day * 86400 + s loses 1e-5 s


class KITTIRaw(SkipBadMixin, torch.utils.data.Dataset):
    """KITTI raw frames listed by a split file (see module docstring).

    root: the KITTI raw root (holding <date>/ folders); split_file: a path
    (relative paths are tried against root too); size: (H, W) to resize to,
    None keeps the file size; depth_gt: project velodyne to sparse depth;
    skip_bad: skip and count samples whose files are missing or corrupt
    instead of raising DataError naming the file; transform: callable on items.
    """

    def __init__(self, root, split_file, size=None, context=(-1, 1), depth_gt=True,
                 skip_bad=False, transform=None):
        self.root, self.size, self.depth_gt = str(root), size, bool(depth_gt)
        self.context = tuple(int(c) for c in context)
        if not self.context or 0 in self.context:
            raise ValueError(f"KITTIRaw: context must be non-zero frame offsets (0 is the target "
                             f"itself), got {self.context}")
        self.transform = transform
        self._init_skip(skip_bad)
        if not os.path.isfile(split_file) and os.path.isfile(os.path.join(self.root, split_file)):
            split_file = os.path.join(self.root, split_file)
        self.split_file = split_file
        self.samples, self.no_context = [], 0
        for n, line in enumerate(read_text(split_file).splitlines()):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                date, drive, cam, frame = parse_split_line(line)
            except (ValueError, IndexError) as e:
                raise DataError(split_file, f"line {n + 1} {line!r}: cannot parse ({e})") from e
            target = self.image_path(date, drive, cam, frame)
            if not os.path.isfile(target):
                if not self.skip_bad:
                    raise DataError(target, f"image file not found (split file {split_file}, "
                                            f"line {n + 1})")
                self.skipped += 1
                self.bad_files.append(target)
                continue
            if not all(os.path.isfile(self.image_path(date, drive, cam, frame + c))
                       for c in self.context):
                self.no_context += 1
                continue
            self.samples.append((date, drive, cam, frame))

    def image_path(self, date, drive, cam, frame):
        return os.path.join(self.root, date, drive, cam, "data", f"{frame:010d}.png")

    def __len__(self):
        return len(self.samples)

    @property
    def has_depth(self):
        return self.depth_gt

    @lru_cache(maxsize=None)
    def _calib(self, date, cam):
        d = os.path.join(self.root, date)
        cc = read_calib(os.path.join(d, "calib_cam_to_cam.txt"))
        key = f"P_rect_{cam[-2:]}"
        try:
            P = cc[key].reshape(3, 4)
            R_rect = cc["R_rect_00"].reshape(3, 3)
        except (KeyError, ValueError) as e:
            raise DataError(os.path.join(d, "calib_cam_to_cam.txt"),
                            f"needs {key} (12 numbers) and R_rect_00 (9): {e}") from e
        if not (np.isfinite(P).all() and np.isfinite(R_rect).all() and P[0, 0] > 0
                and P[1, 1] > 0):
            raise DataError(os.path.join(d, "calib_cam_to_cam.txt"),
                            f"{key} must be finite with positive fx, fy; got {P.ravel().tolist()}")
        vpath = os.path.join(d, "calib_velo_to_cam.txt")
        vc = read_calib(vpath) if self.depth_gt else {"R": np.eye(3).ravel(), "T": np.zeros(3)}
        try:
            R_vc, T_vc = vc["R"].reshape(3, 3), vc["T"].reshape(3)
        except (KeyError, ValueError) as e:
            raise DataError(vpath, f"needs R (9 numbers) and T (3): {e}") from e
        return P, R_rect, R_vc, T_vc

    @lru_cache(maxsize=None)
    def _stamps(self, date, drive, cam):
        path = os.path.join(self.root, date, drive, cam, "timestamps.txt")
        if not os.path.isfile(path):
            return None
        lines = [ln for ln in read_text(path).splitlines() if ln.strip()]
        try:
            secs = [_parse_stamp(ln) for ln in lines]
        except ValueError as e:
            raise DataError(path, f"bad timestamp line ({e})") from e
        return [(d - secs[0][0]) * 86400.0 + (s - secs[0][1]) for d, s in secs]

    def _timestamp(self, date, drive, cam, frame):
        stamps = self._stamps(date, drive, cam)
        if stamps is None:
            return 0.1 * frame
        if frame >= len(stamps):
            raise DataError(os.path.join(self.root, date, drive, cam, "timestamps.txt"),
                            f"no line for frame {frame}")
        return stamps[frame]

    def _speed(self, date, drive, frame):
        path = os.path.join(self.root, date, drive, "oxts", "data", f"{frame:010d}.txt")
        vals = parse_floats(path)
        if len(vals) < 11:
            raise DataError(path, f"expected 30 oxts fields, got {len(vals)}")
        if not np.isfinite(vals[8:11]).all():
            raise DataError(path, f"velocities vf, vl, vu must be finite, got "
                                  f"{vals[8:11].tolist()}")
        return float(np.linalg.norm(vals[8:11]))   # vf, vl, vu

    def _load(self, idx):
        date, drive, cam, frame = self.samples[idx]
        P, R_rect, R_vc, T_vc = self._calib(date, cam)
        rgb = read_rgb(self.image_path(date, drive, cam, frame))            # [3,h,w]
        ctx = [read_rgb(self.image_path(date, drive, cam, frame + c)) for c in self.context]
        h, w = rgb.shape[-2:]
        for c, im in zip(self.context, ctx):
            if im.shape != rgb.shape:
                raise DataError(self.image_path(date, drive, cam, frame + c),
                                f"size {tuple(im.shape[-2:])} differs from the target's {(h, w)}")
        H, W = (h, w) if self.size is None else tuple(int(s) for s in self.size)
        if (H, W) != (h, w):
            rgb = resize_image(rgb, H, W)
            ctx = [resize_image(im, H, W) for im in ctx]
            # packops.scale_intrinsics of the identity is the pixel-scaling matrix A;
            # A @ P_rect scales the whole 3x4 projection (its b column too)
            A = packops.scale_intrinsics(torch.eye(3, dtype=torch.float64), W / w, H / h).numpy()
            P = A @ P
        sample = {
            "idx": idx, "filename": self.image_path(date, drive, cam, frame),
            "rgb": rgb, "rgb_context": ctx,
            "intrinsics": torch.tensor(P[:, :3], dtype=torch.float32),
            "speed": self._speed(date, drive, frame),
            "timestamp": self._timestamp(date, drive, cam, frame),
            "timestamps_context": [self._timestamp(date, drive, cam, frame + c)
                                   for c in self.context],
        }
        if self.depth_gt:
            path = os.path.join(self.root, date, drive, "velodyne_points", "data",
                                f"{frame:010d}.bin")
            if not os.path.isfile(path):
                raise DataError(path, "velodyne file not found")
            pts = np.fromfile(path, dtype=np.float32)
            if pts.size % 4:
                raise DataError(path, f"{pts.size} floats is not a multiple of 4 (x y z r)")
            depth = velodyne_depth(pts.reshape(-1, 4), P, R_rect, R_vc, T_vc, H, W)
            sample["depth"] = torch.from_numpy(depth)[None]                 # [1,H,W]
        return sample

