"""Input checks shared by the public ops: messages name the op, the argument
and the shapes, and run before any backend is chosen."""
import math

import torch


def _desc(t):
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')} on {t.device}"


def tensor(op, name, t, dim=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"packops.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"packops.{op}: {name} must be a floating-point tensor, got {_desc(t)}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"packops.{op}: {name} must have {dim} dimensions, got shape "
                         f"{tuple(t.shape)}")


def same(op, a_name, a, b_name, b):
    """Same shape, dtype and device."""
    if a.shape != b.shape:
        raise ValueError(f"packops.{op}: {a_name} and {b_name} must have the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    same_dtype_device(op, a_name, a, b_name, b)


def min_spatial(op, name, t, n):
    if t.shape[-2] < n or t.shape[-1] < n:
        raise ValueError(f"packops.{op}: {name} needs H >= {n} and W >= {n}, got shape "
                         f"{tuple(t.shape)}")


def finite_scalar(op, name, v):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise ValueError(f"packops.{op}: {name} must be a finite number, got {v!r}")
    return float(v)


# ------------------------------------------------- pack3d / unpack3d / pack_conv
def positive_int(op, name, v):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"packops.{op}: {name} must be a positive int, got {v!r}")
    return v


def same_dtype_device(op, a_name, a, b_name, b):
    """Same dtype and device (shapes differ: weights vs activations)."""
    if a.dtype != b.dtype:
        raise ValueError(f"packops.{op}: {a_name} and {b_name} must have the same dtype, got "
                         f"{_desc(a)} and {_desc(b)}")
    if a.device != b.device:
        raise ValueError(f"packops.{op}: {a_name} and {b_name} must be on the same device, got "
                         f"{_desc(a)} and {_desc(b)}")


def shape3d_weight(op, name, w):
    """A Conv3d(1 -> d, 3x3x3) weight: [d,1,3,3,3], d >= 1."""
    if w.dim() != 5 or tuple(w.shape[1:]) != (1, 3, 3, 3) or w.shape[0] < 1:
        raise ValueError(f"packops.{op}: {name} must be [d,1,3,3,3] (Conv3d(1 -> d, 3x3x3)), "
                         f"got shape {tuple(w.shape)}")


def bias_shape(op, name, b, n, w_name, w):
    if tuple(b.shape) != (n,):
        raise ValueError(f"packops.{op}: {name} must be [{n}] for {w_name} {tuple(w.shape)}, "
                         f"got shape {tuple(b.shape)}")


def divisible_by_r(op, name, t, r):
    if t.shape[-2] % r or t.shape[-1] % r:
        raise ValueError(f"packops.{op}: H and W of {name} must be divisible by r = {r}, got "
                         f"shape {tuple(t.shape)}")
