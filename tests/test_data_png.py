"""The fallback PNG codec (used when Pillow is missing) against Pillow."""
import numpy as np
import pytest

from packnet import png
from packnet.data.io import DataError, _decode_rgb, read_rgb


def test_roundtrip_own_codec():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    assert np.array_equal(png.decode(png.encode(rgb)), rgb)
    gray16 = rng.integers(0, 65536, (5, 9), dtype=np.uint16)
    assert np.array_equal(png.decode(png.encode(gray16)), gray16)
    with pytest.raises(ValueError):
        png.decode(png.encode(rgb)[:40])


def test_reads_pillow_files_with_all_filters(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    # a smooth image makes Pillow's adaptive filtering pick Sub/Up/Average/Paeth rows
    y, x = np.mgrid[0:24, 0:40]
    arr = np.stack([x * 6, y * 10, (x + y) * 4], -1).astype(np.uint8)
    arr[::5] = rng.integers(0, 256, arr[::5].shape, dtype=np.uint8)
    for mode, a in (("RGB", arr), ("RGBA", np.concatenate([arr, arr[..., :1]], -1)),
                    ("L", arr[..., 0])):
        p = str(tmp_path / f"{mode}.png")
        Image.fromarray(a, mode).save(p, optimize=True)
        assert np.array_equal(_decode_rgb(p, use_pil=False), _decode_rgb(p)), mode
    bad = tmp_path / "bad.png"
    bad.write_bytes(open(str(tmp_path / "RGB.png"), "rb").read()[:100])
    with pytest.raises(DataError, match="bad.png"):
        read_rgb(str(bad))


def test_16bit_grey_png_reads_the_same_with_and_without_pillow(tmp_path, monkeypatch):
    """A 0..65535 ramp: both decoders give value >> 8 (Pillow's convert('RGB')
    alone clips every 16-bit value above 255 to white)."""
    import torch

    from packnet.data import io
    from packnet.infer import load_image
    ramp = (np.arange(48 * 64, dtype=np.int64).reshape(48, 64) * 65535 // (48 * 64 - 1))
    ramp = ramp.astype(np.uint16)
    p = tmp_path / "grey16.png"
    p.write_bytes(png.encode(ramp))
    want = np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, axis=2)
    own = _decode_rgb(str(p), use_pil=False)
    assert np.array_equal(own, want)
    if io.Image is not None:
        assert np.array_equal(_decode_rgb(str(p), use_pil=True), want)
    with_default = read_rgb(str(p))
    assert abs(float(with_default.mean()) - want.mean() / 255) < 1e-6
    assert torch.equal(load_image(str(p)), with_default)
    monkeypatch.setattr(io, "Image", None)                      # Pillow absent
    assert torch.equal(read_rgb(str(p)), with_default)
