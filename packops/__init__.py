"""packops: fused kernels for self-supervised monocular depth (PackNet-SfM).

Every op has a reference (plain PyTorch), cpu (C++/OpenMP), triton and cuda
backend behind one dispatch point; see `backends()` and `use_backend()`.
"""
from . import nn
from ._dispatch import BACKENDS, backend_for, backends, get_backend, set_backend, use_backend
from ._ext import has_cpu_ext, has_cuda_ext
from .photometric import photometric_loss, photometric_loss_reference, ssim, ssim_reference
from .pack import (pack3d, pack3d_reference, pack_conv, pack_conv_reference, unpack3d,
                   unpack3d_reference)
from .norm import group_norm_elu, group_norm_elu_reference
from .reproject import reproject, reproject_reference, scale_intrinsics

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "backend_for", "backends", "get_backend", "set_backend", "use_backend",
    "has_cpu_ext", "has_cuda_ext",
    "ssim", "ssim_reference", "photometric_loss", "photometric_loss_reference",
    "reproject", "reproject_reference", "scale_intrinsics",
    "nn",
    "pack3d", "pack3d_reference", "unpack3d", "unpack3d_reference",
    "pack_conv", "pack_conv_reference",
    "group_norm_elu", "group_norm_elu_reference",
]
