"""Launch helpers shared by every Triton op (packops/_triton/<op>.py).

Every launch goes through launch(): it makes the tensors' CUDA device the
current one (Triton launches on the current device, which on a multi-GPU
machine need not be the tensors'), and is a plain call for CPU tensors, which
only the interpreter (TRITON_INTERPRET=1) runs.
"""
import contextlib

import numpy as np
import torch
import triton.language as tl


def interpreted(t):
    """True when t's kernels run in the interpreter (a CPU tensor): there a
    program costs per operation, not per element, so the ops pick big blocks."""
    return not t.is_cuda


def launch(kernel, grid, like, *args, **meta):
    """kernel[grid](*args, **meta) on `like`'s device."""
    guard = torch.cuda.device(like.device) if like.is_cuda else contextlib.nullcontext()
    with guard:
        kernel[grid](*args, **meta)


def acc_type(dtype):
    """The kernels' accumulation type: float64 for float64 tensors, else float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def split_doubles(*values):
    """Each double as an fp32 (hi, lo) pair: Triton passes Python floats as fp32,
    so a float64 kernel rebuilds the value as hi + lo (~48 bits)."""
    out = []
    for v in values:
        hi = float(np.float32(v))
        out += [hi, float(np.float32(v - hi))]
    return out


def grad_buffer(need, like, zero=False):
    """The gradient of `like` (same shape, dtype, device), or an empty tensor
    when it is not needed (the autograd formula maps that to None)."""
    if not need:
        return like.new_empty(0)
    return like.new_zeros(like.shape) if zero else like.new_empty(like.shape)


def contiguous(*tensors):
    return tuple(t.contiguous() for t in tensors)
