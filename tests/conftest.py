"""Test configuration: which backends run on which device here.

Without a GPU, Triton kernels run on CPU tensors in the interpreter; that has
to be switched on before triton (or packops) is imported.
"""
import os

import pytest

try:  # only decide on the interpreter when no CUDA device exists
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass

import packops  # noqa: E402

# Accuracy tests compare float32 results with float64 references; cuDNN and
# cuBLAS default to TF32 for float32 convolutions / matmuls (about 1e-3
# relative), which pack_conv's folded conv showed on the GPU. Tests run them in
# full float32; users keep whatever their torch.backends settings say.
if torch.cuda.is_available():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def backend_device_pairs():
    """(backend, device) pairs that this machine can run, as pytest params;
    the ones it cannot are skipped with the reason backends() gives."""
    info = packops.backends()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    params = []
    for name in packops.BACKENDS:
        for dev in ("cpu", "cuda"):
            if name in ("cpu",) and dev != "cpu" or name == "cuda" and dev != "cuda":
                continue
            if name == "triton" and dev == "cpu" and "cpu" not in info["triton"].devices:
                continue  # triton on CPU tensors only exists in the interpreter
            marks = []
            if dev not in devices:
                marks.append(pytest.mark.skip(reason="no CUDA device"))
            elif not info[name].available or dev not in info[name].devices:
                marks.append(pytest.mark.skip(reason=f"{name}: {info[name].reason}"))
            params.append(pytest.param(name, dev, id=f"{name}-{dev}", marks=marks))
    return params


BACKEND_DEVICE = backend_device_pairs()
FUSED = [p for p in BACKEND_DEVICE if p.values[0] != "reference"]
# Triton kernels run in the interpreter here (slow: tests keep its shapes small)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def pytest_generate_tests(metafunc):
    """The op test classes (tests/contract.py) give their cases as class
    attributes: SHAPES {id: shape}, GRADS, LAYOUTS and BAD."""
    cls = metafunc.cls
    if cls is None or not hasattr(cls, "BAD"):
        return
    names = metafunc.fixturenames
    if "shape" in names:
        metafunc.parametrize("shape", list(cls.SHAPES.items()), ids=list(cls.SHAPES))
    if "which" in names:
        metafunc.parametrize("which", list(cls.GRADS))
    if "layout" in names:
        metafunc.parametrize("layout", list(cls.LAYOUTS))
    if "bad" in names:
        metafunc.parametrize("bad", cls.BAD, ids=[c[0] for c in cls.BAD])


@pytest.fixture(autouse=True)
def _restore_backend():
    """Every test starts and ends with backend 'auto'."""
    packops.set_backend("auto")
    yield
    packops.set_backend("auto")
