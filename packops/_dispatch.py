"""The one place that picks a backend per op, device and dtype.

Requested backend: `PACKOPS_BACKEND=auto|reference|cpu|triton|cuda` (read at
import), `packops.set_backend(name)`, or `with packops.use_backend(name):`.

auto: CUDA tensors -> the cuda extension if built, else triton, else the
reference; CPU tensors -> the cpu extension, else the reference (and triton
never, it is for GPUs; under TRITON_INTERPRET=1 ask for it explicitly). A
fallback warns once per (op, device, dtype), from eager calls (a warning would
break a torch.compile graph). An explicitly requested backend that cannot
serve the call raises, saying why.
"""
import contextlib
import dataclasses
import functools
import importlib.util
import os
import sys
import warnings

import torch

from . import _ext

BACKENDS = ("reference", "cpu", "triton", "cuda")
_ALL = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# The dtypes each backend serves, for every op (keyed by the dtype of the
# tensor passed to resolve(): the image for reproject, whose geometry runs in
# float32, or float64 for float64 images).
DTYPES = {"reference": _ALL, "cpu": (torch.float32, torch.float64), "triton": _ALL, "cuda": _ALL}
_ENV = "PACKOPS_BACKEND"

# Requested backend; a one-element list so use_backend can swap it in place
# and torch.compile guards on its value.
_requested = [os.environ.get(_ENV, "auto").strip().lower() or "auto"]


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """What `packops.backends()` reports for one backend."""
    available: bool
    devices: tuple  # device types it runs on here ("cpu", "cuda")
    reason: str     # why it is unavailable, or what it runs on


def _triton_info():
    if importlib.util.find_spec("triton") is None:
        return BackendInfo(False, (), "triton is not installed (`pip install triton`)")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return BackendInfo(True, ("cpu",), "TRITON_INTERPRET=1: kernels run on CPU tensors "
                                          "in the interpreter (slow, for testing)")
    if torch.cuda.is_available():
        return BackendInfo(True, ("cuda",), "compiled for the GPU")
    return BackendInfo(False, (), "no CUDA device; set TRITON_INTERPRET=1 before importing "
                                  "packops to run the kernels in the interpreter on CPU")


def _probe():
    err = _ext.load_error()
    cpu = (BackendInfo(True, ("cpu",), "packops._C (C++/OpenMP)") if err is None else
           BackendInfo(False, (), f"packops._C is not loaded ({err}); {_ext.BUILD_HINT}"))
    if err is not None:
        cuda = BackendInfo(False, (), f"packops._C is not loaded ({err}); {_ext.BUILD_HINT}")
    elif not _ext.has_cuda_ext():
        cuda = BackendInfo(False, (), "packops._C was built without CUDA (torch is a CPU build, "
                                      f"nvcc was not found, or PACKOPS_CUDA=0); {_ext.BUILD_HINT}")
    elif not torch.cuda.is_available():
        cuda = BackendInfo(False, (), "packops._C has CUDA kernels but no CUDA device is visible")
    else:
        cuda = BackendInfo(True, ("cuda",), "packops._C (CUDA kernels)")
    return {
        "reference": BackendInfo(True, ("cpu", "cuda"), "plain PyTorch ops"),
        "cpu": cpu,
        "triton": _triton_info(),
        "cuda": cuda,
    }


_INFO = _probe()
_warned = set()


def backends():
    """{name: BackendInfo(available, devices, reason)} for this process."""
    return dict(_INFO)


def get_backend():
    """The requested backend name ("auto" unless set)."""
    return _requested[0]


def _check_name(name, source):
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown packops backend {name!r} from {source}; "
                         f"choose one of auto, {', '.join(BACKENDS)}")
    return name


def set_backend(name):
    """Request a backend for every op from now on ("auto" restores the default)."""
    _requested[0] = _check_name(str(name).lower(), "set_backend()")


@contextlib.contextmanager
def use_backend(name):
    """`with packops.use_backend("triton"): ...` requests a backend inside the block."""
    name = _check_name(str(name).lower(), "use_backend()")
    old = _requested[0]
    _requested[0] = name
    try:
        yield
    finally:
        _requested[0] = old


def _why_not(backend, device_type, dtype, dtypes):
    """None if `backend` can run on this device and dtype, else the reason."""
    info = _INFO[backend]
    if not info.available:
        return info.reason
    if device_type not in info.devices:
        return f"it runs on {' and '.join(info.devices)} tensors here, not {device_type}"
    if dtype not in dtypes.get(backend, ()):
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes.get(backend, ()))
        return f"it supports {names}, not {str(dtype).replace('torch.', '')}"
    return None


def resolve(op, tensor, dtypes=DTYPES):
    """Backend name for `op` on `tensor`'s device and dtype.

    dtypes: {backend: tuple of torch dtypes it serves for this op}.
    """
    requested = _check_name(_requested[0], f"{_ENV}/use_backend")
    device_type = tensor.device.type
    if requested != "auto":
        why = _why_not(requested, device_type, tensor.dtype, dtypes)
        if why is not None:
            raise RuntimeError(f"packops.{op}: backend {requested!r} cannot run on a "
                               f"{device_type} {str(tensor.dtype).replace('torch.', '')} "
                               f"tensor: {why}")
        return requested
    preferred = ("cuda", "triton") if device_type == "cuda" else ("cpu",)
    reasons = []
    for name in preferred:
        why = _why_not(name, device_type, tensor.dtype, dtypes)
        if why is None:
            return name
        reasons.append(f"{name}: {why}")
    key = (op, device_type, tensor.dtype)
    # warnings.warn is a graph break under torch.compile: warn from eager calls only
    if key not in _warned and not torch.compiler.is_compiling():
        _warned.add(key)
        warnings.warn(f"packops.{op}: falling back to the reference backend for {device_type} "
                      f"{str(tensor.dtype).replace('torch.', '')} tensors ({'; '.join(reasons)})",
                      RuntimeWarning, stacklevel=_caller_stacklevel())
    return "reference"


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller_stacklevel():
    """warnings.warn's stacklevel, seen from resolve(), of the first frame
    outside packops: the user's call, however many packops frames (a public
    op, the autocast wrapper) stand between."""
    frame, level = sys._getframe(2), 2  # resolve's caller
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


# Autocast: float32, float16 and bfloat16 tensors are what torch.autocast
# casts (float64 never is); the layer ops run in the autocast dtype, like
# the convolutions they stand for.
_AUTOCAST_ELIGIBLE = (torch.float32, torch.float16, torch.bfloat16)


def autocast_to_lower_precision(fn):
    """Under torch.autocast for x's device type (x: fn's first argument),
    call fn with every float32/float16/bfloat16 tensor argument cast to the
    autocast dtype, and autocast off inside (so the reference computes in
    that dtype too, and the fused routes keep their float32 parts float32).
    Outside autocast, fn as it is. For the network-layer ops (pack3d,
    unpack3d, pack_conv, group_norm_elu), which autocast would otherwise hand
    a bf16 activation beside float32 parameters."""
    def cast(t, dtype):
        return t.to(dtype) if isinstance(t, torch.Tensor) and t.dtype in _AUTOCAST_ELIGIBLE else t

    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        if not isinstance(x, torch.Tensor) or not torch.is_autocast_enabled(x.device.type):
            return fn(x, *args, **kwargs)
        dev = x.device.type
        dtype = torch.get_autocast_dtype(dev)
        with torch.autocast(dev, enabled=False):
            return fn(cast(x, dtype), *(cast(a, dtype) for a in args),
                      **{k: cast(v, dtype) for k, v in kwargs.items()})
    return wrapper
