"""Loading the compiled library packops._C (CPU kernels, and CUDA kernels when
it was built with CUDA). `import packops` works without it; the cpu and cuda
backends then raise an error that says how to build it."""
import torch

BUILD_HINT = (
    "build it from the repository root with `pip install --no-build-isolation -e .` "
    "(CUDA kernels are compiled when torch is a CUDA build and nvcc is on PATH)"
)

try:
    from packops import _C  # noqa: F401  (importing registers the ops)

    _load_error = None
except ImportError as exc:  # not built, or built against another torch
    _load_error = f"{type(exc).__name__}: {exc}"


def load_error():
    """Why packops._C could not be imported, or None if it is loaded."""
    return _load_error


def has_cpu_ext():
    return _load_error is None


def has_cuda_ext():
    """True when packops._C holds the CUDA kernels (built with nvcc)."""
    return _load_error is None and bool(torch.ops.packops._built_with_cuda())
