"""Minimal PNG codec (zlib + numpy), used only when Pillow is not installed.

Reads non-interlaced 8-bit gray / gray+alpha / RGB / RGBA and 16-bit gray;
writes 8-bit RGB and 16-bit gray. Errors are ValueError with a reason.
"""
import struct
import zlib

import numpy as np

_SIG = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode(arr):
    """arr: [H,W,3] uint8 or [H,W] uint16 -> PNG bytes (filter 0 on every row)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        depth, colour, raw = 8, 2, arr
    elif arr.dtype == np.uint16 and arr.ndim == 2:
        depth, colour, raw = 16, 0, arr.astype(">u2")
    else:
        raise ValueError(f"encode: need [H,W,3] uint8 or [H,W] uint16, got {arr.dtype} {arr.shape}")
    H, W = arr.shape[:2]
    rows = raw.reshape(H, -1).view(np.uint8)
    data = np.concatenate([np.zeros((H, 1), np.uint8), rows], 1).tobytes()
    ihdr = struct.pack(">IIBBBBB", W, H, depth, colour, 0, 0, 0)
    return _SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(data, 6)) + _chunk(b"IEND", b"")


def _unfilter(data, H, stride, bpp):
    rows = np.frombuffer(data, np.uint8)
    if rows.size != H * (stride + 1):
        raise ValueError(f"image data has {rows.size} bytes, expected {H * (stride + 1)}")
    rows = rows.reshape(H, stride + 1)
    out = np.zeros((H, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(H):
        f, cur = rows[y, 0], rows[y, 1:].astype(np.int32)
        if f == 0:
            line = cur
        elif f == 2:                                            # Up
            line = (cur + prev) & 255
        elif f == 1:                                            # Sub: running sum per channel
            line = (np.cumsum(cur.reshape(-1, bpp), 0) & 255).reshape(-1)
        elif f in (3, 4):                                       # Average, Paeth: sequential
            line = cur.copy()
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b = prev[x]
                if f == 3:
                    line[x] = (line[x] + (a + b) // 2) & 255
                else:
                    c = prev[x - bpp] if x >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    line[x] = (line[x] + pred) & 255
        else:
            raise ValueError(f"unknown PNG filter {f} in row {y}")
        out[y] = line
        prev = line.astype(np.int32)
    return out


def decode(buf):
    """PNG bytes -> [H,W,C] uint8 (C = 1..4) or [H,W] uint16 for 16-bit gray."""
    if buf[:8] != _SIG:
        raise ValueError("not a PNG file (bad signature)")
    pos, idat, hdr = 8, [], None
    while pos + 8 <= len(buf):
        n, kind = struct.unpack(">I", buf[pos:pos + 4])[0], buf[pos + 4:pos + 8]
        data = buf[pos + 8:pos + 8 + n]
        if len(data) != n:
            raise ValueError(f"truncated {kind!r} chunk")
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat.append(data)
        elif kind == b"IEND":
            break
        pos += 12 + n
    else:
        raise ValueError("truncated file (no IEND chunk)")
    if hdr is None or not idat:
        raise ValueError("missing IHDR or IDAT chunk")
    W, H, depth, colour, _, _, interlace = hdr
    if interlace or colour not in _CHANNELS or (depth, colour) not in (
            (8, 0), (8, 2), (8, 4), (8, 6), (16, 0)):
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {colour}, "
                         f"interlace {interlace})")
    C, nbytes = _CHANNELS[colour], depth // 8
    try:
        data = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise ValueError(f"corrupt image data ({e})") from e
    px = _unfilter(data, H, W * C * nbytes, C * nbytes)
    if depth == 16:
        return px.view(">u2").reshape(H, W).astype(np.uint16)
    return px.reshape(H, W, C)
