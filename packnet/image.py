"""Image files and text on pictures, all through Pillow (a required dependency).

read_rgb8(path) -> uint8 [H,W,3]: any IMAGE_EXTS file as 8-bit RGB;
read_image(path) -> the pixels as stored (uint16 [H,W] for 16-bit grey);
write_image(path, img): uint8 grey / RGB / RGBA or uint16 grey, the format
from the extension; image_size(path) -> (H, W) from the header;
draw_text(img, text, x, y, size) into a uint8 [H,W,3] array and
text_size(text, size), in Pillow's default font (ImageFont.load_default).

Pixels are taken as stored: EXIF orientation is not applied (a folder's
intrinsics describe the stored frames). Every error is Pillow's own
(OSError, ValueError, ...); the callers name the file (data.io.read_rgb,
infer.load_image).
"""
import functools
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["IMAGE_EXTS", "read_rgb8", "read_image", "write_image", "image_size", "draw_text",
           "text_size"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


def _is_16bit_grey(im):
    return im.mode.startswith("I;16") or im.mode == "I"   # I: 32-bit int, how some open it


def read_rgb8(path):
    """uint8 [H,W,3] from an image file: grey is repeated, alpha dropped,
    palettes expanded (Pillow's convert("RGB")); 16-bit grey becomes
    value >> 8 (convert("RGB") alone would clip it to white)."""
    with Image.open(path) as im:
        im.load()  # decode now: a truncated or corrupt file fails here, not later
        if _is_16bit_grey(im):
            grey = np.asarray(im).astype(np.int64).clip(0, 65535) >> 8
            return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_image(path):
    """The pixels as stored: uint8 [H,W] (grey), [H,W,C] (C = 2, 3, 4), or
    uint16 [H,W] for 16-bit grey (a depth map in 1/256 m)."""
    with Image.open(path) as im:
        im.load()
        if _is_16bit_grey(im):
            return np.asarray(im).astype(np.int64).clip(0, 65535).astype(np.uint16)
        return np.asarray(im)


def write_image(path, img):
    """Write uint8 [H,W] / [H,W,1] / [H,W,3] / [H,W,4] (8-bit grey, RGB,
    RGBA) or uint16 [H,W] (16-bit grey PNG); the format follows the
    extension. Creates the directory; returns path."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    ok = (img.dtype == np.uint8 and (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4)))
          or img.dtype == np.uint16 and img.ndim == 2)
    if not ok:
        raise ValueError(f"write_image: need uint8 [H,W], [H,W,3], [H,W,4] or uint16 [H,W], "
                         f"got {img.dtype} {img.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"write_image: image must be non-empty, got shape {img.shape}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img)).save(path)
    return path


def image_size(path):
    """(H, W) of an image file from its header, without decoding the pixels;
    None when the header cannot be read (reading the frame then fails, or
    skips it, as the loader's policy says)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # noqa: BLE001 - Pillow raises several types for a bad header
        return None


# ------------------------------------------------------------------ text
@functools.lru_cache(maxsize=None)
def _font(size):
    """Pillow's default font, Aileron, scaled to `size` pixels (Pillow >= 10.1
    with FreeType, as every Pillow wheel has)."""
    return ImageFont.load_default(size=size)


def text_size(text, size):
    """(height, width) in pixels of `text` in the default font at `size`
    (height: the font's ascent + descent, the same for every text)."""
    font = _font(size)
    return sum(font.getmetrics()), int(np.ceil(font.getlength(str(text))))


def draw_text(img, text, x, y, size, color=(255, 255, 255), anchor="la"):
    """Draw `text` into img (uint8 [H,W,3], modified in place) at (x, y):
    anchor "la" puts the text's left edge and ascender top there, "lm" its
    left edge and vertical middle (Pillow's text anchors). Text outside the
    picture is clipped."""
    picture = Image.fromarray(img)
    ImageDraw.Draw(picture).text((x, y), str(text), fill=tuple(color), font=_font(size),
                                 anchor=anchor)
    img[...] = np.asarray(picture)
    return img
