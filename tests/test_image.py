"""packnet.image: reading every format the loaders take (files written here
with Pillow), 16-bit grey PNGs exactly, the conversions to RGB, the errors
for a damaged file, and text drawn in Pillow's default font."""
import numpy as np
import pytest
import torch
from PIL import Image

from packnet.data.folder import read_depth
from packnet.data.io import DataError, read_rgb
from packnet.image import (IMAGE_EXTS, draw_text, image_size, read_image, read_rgb8, text_size,
                           write_image)
from packnet.infer import load_image


def _rgb(h=24, w=40, seed=0, noise=True):
    """A smooth picture, with a few noisy rows unless noise=False."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 6, y * 10, (x + y) * 4], -1).astype(np.uint8)
    if noise:
        arr[::5] = np.random.default_rng(seed).integers(0, 256, arr[::5].shape, dtype=np.uint8)
    return arr


def test_16bit_grey_png_round_trip_is_exact(tmp_path):
    """Depth ground truth in 1/256 m: every uint16 value comes back; as a
    picture it reads as value >> 8 (Pillow's convert("RGB") alone would clip
    every value above 255 to white)."""
    ramp = np.arange(48 * 64, dtype=np.int64).reshape(48, 64) * 65535 // (48 * 64 - 1)
    ramp = ramp.astype(np.uint16)
    assert ramp.min() == 0 and ramp.max() == 65535
    p = write_image(str(tmp_path / "sub" / "grey16.png"), ramp)   # the folder is made
    back = read_image(p)
    assert back.dtype == np.uint16 and np.array_equal(back, ramp)
    assert torch.equal(read_depth(p), torch.from_numpy(ramp.astype(np.float32) / 256.0)[None])
    want = np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, axis=2)
    assert np.array_equal(read_rgb8(p), want)
    assert torch.equal(read_rgb(p), torch.from_numpy(want).permute(2, 0, 1).float() / 255)
    assert torch.equal(load_image(p), read_rgb(p))      # infer decodes as the loaders do


@pytest.mark.parametrize("ext", IMAGE_EXTS)
def test_every_format_reads_as_8bit_rgb(tmp_path, ext):
    arr = _rgb(noise=ext not in (".jpg", ".jpeg"))   # JPEG: smooth, so it stays close
    p = str(tmp_path / f"x{ext}")
    Image.fromarray(arr).save(p)
    got = read_rgb8(p)
    assert got.shape == (24, 40, 3) and got.dtype == np.uint8 and image_size(p) == (24, 40)
    if ext in (".jpg", ".jpeg"):   # lossy: Pillow's decoding, close to what was written
        with Image.open(p) as im:
            assert np.array_equal(got, np.asarray(im.convert("RGB")))
        assert np.abs(got.astype(int) - arr).mean() < 3
    else:
        assert np.array_equal(got, arr)
    assert torch.equal(read_rgb(p), torch.tensor(got).permute(2, 0, 1).float() / 255)


def test_other_modes_convert_to_rgb(tmp_path):
    """Alpha dropped, grey repeated, a palette looked up, 1-bit to 0 / 255."""
    rgba = np.concatenate([_rgb(), _rgb(seed=1)[..., :1]], -1)
    grey = rgba[..., 0]
    palette = np.random.default_rng(2).integers(0, 256, (256, 3), dtype=np.uint8)
    pal = Image.fromarray(grey, "L").convert("P")         # indices = the grey values
    pal.putpalette(palette.reshape(-1).tolist())
    cases = {"rgba": (Image.fromarray(rgba, "RGBA"), rgba[..., :3]),
             "l": (Image.fromarray(grey, "L"), np.repeat(grey[..., None], 3, 2)),
             "la": (Image.fromarray(rgba[..., :2], "LA"), np.repeat(grey[..., None], 3, 2)),
             "p": (pal, palette[np.asarray(pal)]),
             "one": (Image.fromarray(grey > 128), np.repeat((grey > 128)[..., None] * 255,
                                                           3, 2).astype(np.uint8))}
    for name, (im, want) in cases.items():
        p = str(tmp_path / f"{name}.png")
        im.save(p)
        assert np.array_equal(read_rgb8(p), want), name


def test_a_damaged_file_is_a_clear_error_naming_it(tmp_path):
    for ext in (".png", ".jpg"):
        good = tmp_path / f"good{ext}"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3),
                                                         dtype=np.uint8)).save(good)
        bad = tmp_path / f"bad{ext}"
        bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
        assert image_size(str(bad)) == (64, 64)      # the header is intact: only decoding fails
        with pytest.raises(DataError, match=rf"bad\{ext}: cannot decode image \(OSError: "):
            read_rgb(str(bad))
        with pytest.raises(ValueError, match=rf"infer: cannot read image .*bad\{ext}: "):
            load_image(str(bad))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert image_size(str(text)) is None
    with pytest.raises(DataError, match=r"notes.png: cannot decode image \(Unidentified"):
        read_rgb(str(text))
    with pytest.raises(DataError, match=r"bad.png: cannot read depth \(OSError"):
        read_depth(str(tmp_path / "bad.png"))
    with pytest.raises(DataError, match=r"good.png: cannot read depth .*must be 16-bit grey"):
        read_depth(str(tmp_path / "good.png"))                      # 8-bit RGB
    with pytest.raises(DataError, match="image file not found"):
        read_rgb(str(tmp_path / "missing.png"))


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_write_image_round_trip(tmp_path, channels):
    shape = (7, 5) if channels is None else (7, 5, channels)
    img = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    back = read_image(write_image(str(tmp_path / "x.png"), img))
    assert np.array_equal(back, img[..., 0] if channels == 1 else img)


def test_write_image_refuses_what_is_not_a_picture(tmp_path):
    for bad in (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8),
                np.zeros((4, 4, 3), np.uint16), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(ValueError, match="write_image"):
            write_image(str(tmp_path / "x.png"), bad)


def test_text_draws_in_its_box_and_clips_at_the_edges():
    img = np.zeros((40, 200, 3), dtype=np.uint8)
    h, w = text_size("depth (m) 12.5", 16)
    assert 14 <= h <= 24 and 60 <= w <= 140 and text_size("depth (m) 12.5", 10)[1] < w
    draw_text(img, "depth (m) 12.5", 5, 3, 16)
    ys, xs = np.nonzero(img.max(-1))
    assert (img == 255).any()                                # white, solid in the glyphs
    assert xs.min() >= 5 and xs.max() < 5 + w + 1 and ys.min() >= 3 and ys.max() < 3 + h
    mid = np.zeros((22, 100, 3), dtype=np.uint8)
    draw_text(mid, "Hx", 2, 11, 16, anchor="lm")             # vertically centred on row 11
    ys = np.nonzero(mid.max(-1).max(-1))[0]
    assert abs((ys.min() + ys.max()) / 2 - 11) <= 3
    draw_text(img, "far near é?", 180, 30, 16, color=(0, 255, 0))   # clipped; no error
    assert img[:, 180:, 1].any()
