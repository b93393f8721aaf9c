"""The one place that picks a backend per op, device and dtype.

Requested backend: `PACKOPS_BACKEND=auto|reference|cpu|triton|cuda` (read at
import) or `packops.set_backend(name)` set the process's default;
`with packops.use_backend(name):` requests one inside the block, for the
current thread only (like torch's grad and autocast modes: blocks in two
threads never see each other's request, and each restores its own on exit).

auto: CUDA tensors -> the cuda extension if built, else triton, else the
reference; CPU tensors -> the cpu extension, else the reference (and triton
never, it is for GPUs; under TRITON_INTERPRET=1 ask for it explicitly). A
fallback warns once per (op, device, dtype), from eager calls (a warning would
break a torch.compile graph). An explicitly requested backend that cannot
serve the call raises, saying why.

resolve() runs on every op call: its answer is cached per (op, device type,
dtype, requested backend), the warning and the error paths excepted.
"""
import contextlib
import dataclasses
import functools
import importlib.util
import os
import sys
import threading
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

# The process's default request (PACKOPS_BACKEND, set_backend), and the
# current thread's request inside use_backend blocks (None outside). Both
# are read through _requested(), on which torch.compile guards.
_default = [os.environ.get(_ENV, "auto").strip().lower() or "auto"]
_local = threading.local()


def _requested():
    return getattr(_local, "requested", None) or _default[0]


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
    """The backend requested in this thread: the innermost use_backend
    block's, else the process default (set_backend, PACKOPS_BACKEND, "auto")."""
    return _requested()


def _check_name(name, source):
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown packops backend {name!r} from {source}; "
                         f"choose one of auto, {', '.join(BACKENDS)}")
    return name


def set_backend(name):
    """Request a backend for every op from now on, in every thread, outside
    use_backend blocks ("auto" restores the default)."""
    _default[0] = _check_name(str(name).lower(), "set_backend()")


@contextlib.contextmanager
def use_backend(name):
    """`with packops.use_backend("triton"): ...` requests a backend inside the
    block, in the current thread; blocks nest, and each restores on exit what
    was requested before it."""
    name = _check_name(str(name).lower(), "use_backend()")
    old = getattr(_local, "requested", None)
    _local.requested = name
    try:
        yield
    finally:
        _local.requested = old


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


_resolved = {}  # (op, device type, dtype, requested) -> backend; no errors, no fallbacks


def resolve(op, tensor, dtypes=DTYPES):
    """Backend name for `op` on `tensor`'s device and dtype.

    dtypes: {backend: tuple of torch dtypes it serves for this op}; one
    table per op name (the cache is keyed by the name).
    """
    requested = _requested()
    dev = device_type(tensor)
    key = (op, dev, tensor.dtype, requested)
    compiling = torch.compiler.is_compiling()
    if not compiling:
        hit = _resolved.get(key)
        if hit is not None:
            return hit
    backend = _resolve(op, dev, tensor.dtype, requested, dtypes, warn=not compiling)
    if not compiling and (backend != "reference" or requested == "reference"):
        _resolved[key] = backend  # a fallback is not cached: it warns once per (op, device, dtype)
    return backend


def device_type(t):
    """t.device.type, cheaply for CPU and CUDA tensors (t.is_cuda is a flag;
    t.device builds an object, a measurable part of a small op's call)."""
    return "cuda" if t.is_cuda else ("cpu" if t.is_cpu else t.device.type)


def backend_for(op, tensor):
    """The backend `packops.<op>` runs on, in this thread, for inputs on
    `tensor`'s device and of its dtype (for reproject: the image's): one of
    BACKENDS. Raises as the op would when the requested backend cannot serve
    them; never warns."""
    if op not in OPS:
        raise ValueError(f"packops.backend_for: unknown op {op!r}; ops: {', '.join(OPS)}")
    return _resolve(op, device_type(tensor), tensor.dtype, _requested(), DTYPES, warn=False)


# every public op with a backend choice (backend_for)
OPS = ("ssim", "photometric_loss", "reproject", "pack3d", "unpack3d", "pack_conv",
       "group_norm_elu")


def _resolve(op, device_type, dtype, requested, dtypes, warn):
    requested = _check_name(requested, f"{_ENV}/use_backend")
    if requested != "auto":
        why = _why_not(requested, device_type, dtype, dtypes)
        if why is not None:
            raise RuntimeError(f"packops.{op}: backend {requested!r} cannot run on a "
                               f"{device_type} {str(dtype).replace('torch.', '')} "
                               f"tensor: {why}")
        return requested
    preferred = ("cuda", "triton") if device_type == "cuda" else ("cpu",)
    reasons = []
    for name in preferred:
        why = _why_not(name, device_type, dtype, dtypes)
        if why is None:
            return name
        reasons.append(f"{name}: {why}")
    key = (op, device_type, dtype)
    # warnings.warn is a graph break under torch.compile: warn from eager calls only
    if key not in _warned and warn:
        _warned.add(key)
        warnings.warn(f"packops.{op}: falling back to the reference backend for {device_type} "
                      f"{str(dtype).replace('torch.', '')} tensors ({'; '.join(reasons)})",
                      RuntimeWarning, stacklevel=_caller_stacklevel())
    return "reference"


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _caller_stacklevel():
    """warnings.warn's stacklevel, seen from resolve(), of the first frame
    outside packops: the user's call, however many packops frames (a public
    op, the autocast wrapper) stand between."""
    frame, level = sys._getframe(3), 3  # resolve's caller (_resolve <- resolve <- caller)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


# Autocast: float32, float16 and bfloat16 tensors are what torch.autocast
# casts (float64 never is); the layer ops run in the autocast dtype, like
# the convolutions they stand for, and the loss ops in their inputs' dtype.
# Every op declares which (tests/contract.py, AUTOCAST).
_AUTOCAST_ELIGIBLE = (torch.float32, torch.float16, torch.bfloat16)


def _autocast_device(args, kwargs):
    """The device type of the first tensor argument (positional or keyword)
    when autocast is on for it, else None."""
    first = args[0] if args else None
    if not isinstance(first, torch.Tensor):  # the first tensor is further on
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is None:
            return None
    dev = "cuda" if first.is_cuda else ("cpu" if first.is_cpu else first.device.type)
    return dev if torch.is_autocast_enabled(dev) else None


def autocast_to_lower_precision(fn):
    """Under torch.autocast for the device of fn's first tensor argument, call
    fn with every float32/float16/bfloat16 tensor argument cast to the
    autocast dtype, and autocast off inside (so the reference computes in
    that dtype too, and the fused routes keep their float32 parts float32).
    Outside autocast, fn as it is. For the network-layer ops (pack3d,
    unpack3d, pack_conv, group_norm_elu), which autocast would otherwise hand
    a bf16 activation beside float32 parameters."""
    def cast(t, dtype):
        return t.to(dtype) if isinstance(t, torch.Tensor) and t.dtype in _AUTOCAST_ELIGIBLE else t

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        dev = _autocast_device(args, kwargs)
        if dev is None:
            return fn(*args, **kwargs)
        dtype = torch.get_autocast_dtype(dev)
        with torch.autocast(dev, enabled=False):
            return fn(*(cast(a, dtype) for a in args),
                      **{k: cast(v, dtype) for k, v in kwargs.items()})
    return wrapper


def autocast_off(fn):
    """fn with autocast off inside when it is on for the device of fn's first
    tensor argument: the loss ops (ssim, photometric_loss, reproject) run in
    their inputs' dtype on every backend. Without it the reference's and the
    Triton route's matrix products (reproject's geometry) would run in the
    autocast dtype, and the other backends' would not."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        dev = _autocast_device(args, kwargs)
        if dev is None:
            return fn(*args, **kwargs)
        with torch.autocast(dev, enabled=False):
            return fn(*args, **kwargs)
    return wrapper
