"""The built-in PNG codec (zlib + numpy), used when Pillow is not installed
(and by `visualize.save_png(..., backend="own")`).

encode: uint8 [H,W] / [H,W,3] / [H,W,4] (8-bit grey / RGB / RGBA) or uint16
[H,W] (16-bit grey), filter 0 on every row.
decode: non-interlaced 8-bit grey / grey+alpha / RGB / RGBA and 16-bit grey,
all five row filters -> uint8 [H,W] (grey), uint8 [H,W,C] (C = 2, 3, 4) or
uint16 [H,W]. Errors are ValueError starting with the name given.
"""
import struct
import zlib

import numpy as np

__all__ = ["encode", "decode", "SIGNATURE"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}          # colour type -> channels
_COLOUR_TYPE = {1: 0, 3: 2, 4: 6}             # channels written -> colour type
_SUPPORTED = ((8, 0), (8, 2), (8, 4), (8, 6), (16, 0))


def chunk(kind, data):
    """One PNG chunk: length, type, data, CRC."""
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode(arr):
    """arr: uint8 [H,W] / [H,W,1] / [H,W,3] / [H,W,4] or uint16 [H,W] -> PNG bytes."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        depth, channels, raw = 8, 1 if arr.ndim == 2 else arr.shape[2], arr
    elif arr.dtype == np.uint16 and arr.ndim == 2:
        depth, channels, raw = 16, 1, arr.astype(">u2")
    else:
        raise ValueError(f"png.encode: need uint8 [H,W], [H,W,3], [H,W,4] or uint16 [H,W], "
                         f"got {arr.dtype} {arr.shape}")
    H, W = arr.shape[:2]
    if H < 1 or W < 1:
        raise ValueError(f"png.encode: image must be non-empty, got shape {arr.shape}")
    rows = np.ascontiguousarray(raw).reshape(H, -1).view(np.uint8)
    data = np.concatenate([np.zeros((H, 1), np.uint8), rows], 1).tobytes()
    header = struct.pack(">IIBBBBB", W, H, depth, _COLOUR_TYPE[channels], 0, 0, 0)
    return (SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data, 6))
            + chunk(b"IEND", b""))


def _paeth(a, b, c):
    """Paeth predictor on int arrays (one pixel's bytes)."""
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _unfilter(raw, H, stride, bpp, name):
    out = np.zeros((H, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(H):
        pos = y * (stride + 1)
        ftype, line = raw[pos], np.frombuffer(raw, np.uint8, stride, pos + 1).astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:                                      # Up
            cur = (line + prev) & 0xFF
        elif ftype == 1:                                      # Sub: running sum per byte lane
            cur = (np.cumsum(line.reshape(-1, bpp), 0) & 0xFF).reshape(-1)
        elif ftype in (3, 4):                                 # Average / Paeth: pixel by pixel
            cur = line.reshape(-1, bpp).copy()
            up = prev.reshape(-1, bpp)
            zero = np.zeros(bpp, np.int32)
            for x in range(cur.shape[0]):
                left = cur[x - 1] if x else zero
                pred = ((left + up[x]) // 2 if ftype == 3
                        else _paeth(left, up[x], up[x - 1] if x else zero))
                cur[x] = (cur[x] + pred) & 0xFF
            cur = cur.reshape(-1)
        else:
            raise ValueError(f"{name}: bad PNG filter type {ftype} in row {y}")
        out[y] = cur
        prev = cur
    return out


def decode(buf, name="<bytes>"):
    """PNG bytes -> uint8 [H,W] / [H,W,C] (C = 2, 3, 4) or uint16 [H,W] (16-bit grey)."""
    if buf[:8] != SIGNATURE:
        raise ValueError(f"{name}: not a PNG file (bad signature)")
    pos, header, idat = 8, None, []
    while pos + 8 <= len(buf):
        n, kind = struct.unpack(">I4s", buf[pos:pos + 8])
        body = buf[pos + 8:pos + 8 + n]
        if len(body) != n:
            raise ValueError(f"{name}: truncated PNG ({kind!r} chunk cut short)")
        pos += 12 + n
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    else:
        raise ValueError(f"{name}: truncated PNG (no IEND chunk)")
    if header is None or not idat:
        raise ValueError(f"{name}: truncated PNG (no IHDR or IDAT chunk)")
    W, H, depth, colour, _, _, interlace = header
    if interlace or (depth, colour) not in _SUPPORTED:
        raise ValueError(f"{name}: unsupported PNG (bit depth {depth}, colour type {colour}, "
                         f"interlace {interlace}); the built-in reader handles 8-bit "
                         f"grey/RGB/RGBA and 16-bit grey without interlacing; install Pillow "
                         f"for the rest")
    channels, nbytes = _CHANNELS[colour], depth // 8
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise ValueError(f"{name}: corrupt PNG data ({e})") from None
    stride = W * channels * nbytes
    if len(raw) != H * (stride + 1):
        raise ValueError(f"{name}: PNG data has {len(raw)} bytes, expected {H * (stride + 1)}")
    px = _unfilter(raw, H, stride, channels * nbytes, name)
    if depth == 16:
        return px.view(">u2").reshape(H, W).astype(np.uint16)
    img = px.reshape(H, W, channels)
    return img[:, :, 0] if channels == 1 else img
