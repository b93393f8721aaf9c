"""Image I/O and the corrupt/missing-file policy shared by the loaders.

Every failure to read a file raises DataError naming the file. Loaders built
with skip_bad=True catch it instead, skip the sample (the next good one is
returned in its place), count it in `dataset.skipped` and list the file in
`dataset.bad_files`. With DataLoader workers each worker counts its own.
"""
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

from .. import png

try:  # Pillow is optional: without it PNG files go through our own codec (packnet.png)
    from PIL import Image
except ImportError:  # pragma: no cover - depends on the environment
    Image = None

__all__ = ["DataError", "read_rgb", "write_rgb", "read_text", "resize_image", "SkipBadMixin",
           "IMAGE_EXTS", "image_files", "image_size"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


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
        arr = _decode_rgb(path)
    except Exception as e:  # PIL raises several types (OSError, SyntaxError, ValueError ...)
        raise DataError(path, f"cannot decode image ({type(e).__name__}: {e})") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def _decode_rgb(path, use_pil=None):
    """[H,W,3] uint8 from an image file (Pillow, else packnet.png for PNG files).
    16-bit grey becomes value >> 8 on both paths (Pillow's convert("RGB")
    alone would clip it to white)."""
    if Image is not None and use_pil is not False:
        with Image.open(path) as im:
            im.load()  # decode now: truncated / corrupt data fails here, not later
            if im.mode.startswith("I;16") or im.mode == "I":   # 16-bit grey (I: 32-bit int)
                grey = np.asarray(im).astype(np.int64).clip(0, 65535) >> 8
                return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    if not str(path).lower().endswith(".png"):
        raise ValueError("only PNG can be read without Pillow (pip install pillow)")
    with open(path, "rb") as f:
        arr = png.decode(f.read(), name=str(path))
    if arr.ndim == 2:
        arr = (arr >> 8 if arr.dtype == np.uint16 else arr).astype(np.uint8)[..., None]
    return arr[..., :3] if arr.shape[2] >= 3 else np.repeat(arr[..., :1], 3, axis=2)


def image_size(path):
    """(H, W) of an image file from its header, without decoding the pixels
    (Pillow, else a PNG's IHDR chunk); None when the header cannot be read
    (reading the frame then fails, or skips it, as the loader's policy says)."""
    try:
        if Image is not None:
            with Image.open(path) as im:
                return im.height, im.width
        with open(path, "rb") as f:
            head = f.read(24)
    except Exception:  # noqa: BLE001 - PIL raises several types for a bad header
        return None
    if head[:8] == png.SIGNATURE and head[12:16] == b"IHDR":
        W, H = struct.unpack(">II", head[16:24])
        return H, W
    return None


def resize_image(img, H, W):
    """[3,h,w] in [0,1] -> [3,H,W] bilinear (antialiased when shrinking), pixel
    centres mapped as packops.scale_intrinsics assumes (align_corners=False)."""
    return F.interpolate(img[None], size=(H, W), mode="bilinear", align_corners=False,
                         antialias=True)[0].clamp(0, 1)


def write_rgb(path, rgb, use_pil=None):
    """rgb: [3,H,W] float in [0,1] -> 8-bit PNG (with Pillow: any format by extension)."""
    arr = (rgb.detach().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if Image is not None and use_pil is not False:
        Image.fromarray(arr).save(path)
        return
    with open(path, "wb") as f:
        f.write(png.encode(arr))


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
