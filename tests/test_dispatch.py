"""Backend selection: explicit requests, automatic fallback, environment."""
import os
import re
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import packops
from packops import _dispatch

x = torch.rand(1, 3, 4, 5)


def test_backends_report():
    info = packops.backends()
    assert set(info) == set(packops.BACKENDS)
    assert info["reference"].available
    for name, b in info.items():
        assert isinstance(b.reason, str) and b.reason, name
    assert info["cpu"].available == packops.has_cpu_ext()
    if not torch.cuda.is_available():
        assert not info["cuda"].available


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown packops backend 'fast'"):
        packops.set_backend("fast")
    with pytest.raises(ValueError, match="choose one of auto, reference"):
        with packops.use_backend("gpu"):
            pass


def test_use_backend_restores_on_exit_and_error():
    packops.set_backend("reference")
    with pytest.raises(KeyError):
        with packops.use_backend("auto"):
            assert packops.get_backend() == "auto"
            raise KeyError
    assert packops.get_backend() == "reference"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_explicit_unavailable_backend_raises():
    with packops.use_backend("cuda"), pytest.raises(RuntimeError, match="backend 'cuda' cannot"):
        packops.photometric_loss(x, x)


class _OpLog(torch.utils._python_dispatch.TorchDispatchMode):
    """The aten and packops ops that run, by name."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.skipif(not packops.has_cpu_ext(), reason="packops._C not built")
def test_auto_picks_cpu_and_reference_is_explicit():
    with _OpLog() as log:
        packops.photometric_loss(x, x)
    assert log.names == ["packops.photometric_fwd.default"]
    with packops.use_backend("reference"), _OpLog() as log:
        packops.photometric_loss(x, x)
    assert "packops.photometric_fwd.default" not in log.names and log.names


def test_use_backend_is_per_thread():
    """Nested blocks in two threads, entered and left interleaved: each thread
    sees its own request, and both leave the process default as it was."""
    import threading
    steps = [threading.Event() for _ in range(4)]
    seen = {}

    def a():
        with packops.use_backend("reference"):
            steps[0].set()
            steps[1].wait(10)
            seen["a inside"] = packops.get_backend()
            with packops.use_backend("auto"):
                seen["a nested"] = packops.get_backend()
        seen["a after"] = packops.get_backend()
        steps[2].set()

    def b():
        steps[0].wait(10)
        seen["b before"] = packops.get_backend()  # a's block does not reach b
        with packops.use_backend("cpu"):
            steps[1].set()
            steps[2].wait(10)  # a leaves its blocks while b is inside its own
            seen["b inside"] = packops.get_backend()
        seen["b after"] = packops.get_backend()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen == {"b before": "auto", "a inside": "reference", "a nested": "auto",
                    "a after": "auto", "b inside": "cpu", "b after": "auto"}
    assert packops.get_backend() == "auto"


def test_set_backend_is_the_default_of_every_thread():
    import threading
    packops.set_backend("reference")
    got = []
    t = threading.Thread(target=lambda: got.append(packops.get_backend()))
    t.start()
    t.join(30)
    assert got == ["reference"]
    with packops.use_backend("auto"):
        assert packops.get_backend() == "auto"
    assert packops.get_backend() == "reference"


def test_compiled_function_follows_the_backend():
    """torch.compile guards on the requested backend: a change recompiles
    instead of running the backend the graph was traced with."""
    torch._dynamo.reset()
    graphs = []

    def record(gm, inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    f = torch.compile(lambda a: packops.photometric_loss(a, a), fullgraph=True, backend=record)
    backends = ["reference"] + (["cpu"] if packops.has_cpu_ext() else [])
    for backend in backends:
        with packops.use_backend(backend):
            f(x)
    assert len(graphs) == len(backends)
    assert ["photometric_fwd" in g for g in graphs] == [b == "cpu" for b in backends]


def test_auto_fallback_warns_once():
    _dispatch._warned.discard(("ssim", "cpu", torch.bfloat16))
    b = x.bfloat16()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        packops.ssim(b, b)
        packops.ssim(b, b)
    msgs = [str(w.message) for w in caught if "falling back" in str(w.message)]
    assert len(msgs) == 1 and "bfloat16" in msgs[0]


@pytest.mark.parametrize("op", ["ssim", "pack3d"])
def test_fallback_warning_points_at_the_callers_line(op):
    """The warning names the user's file, also through the autocast wrapper
    of the layer ops (pack3d)."""
    _dispatch._warned.discard((op, "cpu", torch.bfloat16))
    b = torch.rand(1, 2, 4, 4, dtype=torch.bfloat16)
    w3 = torch.rand(2, 1, 3, 3, 3, dtype=torch.bfloat16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        packops.ssim(b, b) if op == "ssim" else packops.pack3d(b, w3, None)
    found = [w for w in caught if "falling back" in str(w.message)]
    assert len(found) == 1 and found[0].filename == __file__, [w.filename for w in found]


def _run_python(code, **env):
    # a clean packops environment: only what the test sets
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PACKOPS_")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=300)


def test_environment_variable():
    r = _run_python("""
        import packops, torch
        print(packops.get_backend())
        x = torch.rand(1, 3, 4, 4)
        packops.photometric_loss(x, x)
    """, PACKOPS_BACKEND="reference")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "reference"
    r = _run_python("""
        import packops, torch
        x = torch.rand(1, 3, 4, 4)
        packops.photometric_loss(x, x)
    """, PACKOPS_BACKEND="nope")
    assert r.returncode != 0 and "unknown packops backend 'nope'" in r.stderr


def test_import_without_compiled_library():
    """import packops works without packops._C; cpu then says how to build it."""
    r = _run_python("""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "packops._C":
                    raise ImportError("blocked for the test")
        sys.meta_path.insert(0, Block())
        import torch, packops
        assert not packops.has_cpu_ext() and not packops.has_cuda_ext()
        x = torch.rand(1, 3, 4, 4, requires_grad=True)
        packops.photometric_loss(x, x.detach()).sum().backward()  # reference fallback
        try:
            with packops.use_backend("cpu"):
                packops.photometric_loss(x, x)
        except RuntimeError as e:
            print(e)
    """, TRITON_INTERPRET="0")
    assert r.returncode == 0, r.stderr
    assert "pip install --no-build-isolation -e ." in r.stdout
    assert "falling back to the reference backend" in r.stderr


# ----------------------------------------- the dtype table and csrc's policies
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DTYPE_NAMES = {"Float32": torch.float32, "Float64": torch.float64, "Float16": torch.float16,
                "BFloat16": torch.bfloat16}
_WORDS = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


def _source(path):
    with open(os.path.join(_ROOT, "csrc", path)) as f:
        return f.read()


def _policy(path, struct):
    """(dtypes the struct's dtype() accepts, dtypes its message names), read
    from the C++ source: the TORCH_CHECK's condition is `ok` (every DType
    to_dtype maps, csrc/glue.h) or `ok && (dt == DType::A || ...)`."""
    body = _source(path).split(f"struct {struct} {{", 1)[1]
    body = body.split("static DType dtype(", 1)[1].split("return dt;", 1)[0]
    check = body.split("TORCH_CHECK(", 1)[1]
    depth, end = 0, None
    for i, ch in enumerate(check):  # the condition ends at the first top-level comma
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            end = i
            break
    condition = " ".join(check[:end].split())
    mapped = re.findall(r"case at::k\w+: return DType::(\w+);", _source("glue.h"))
    if condition == "ok":
        accepted = mapped
    else:
        m = re.fullmatch(r"ok && \((dt == DType::\w+(?: \|\| dt == DType::\w+)*)\)", condition)
        assert m, f"{struct}::dtype: cannot read the condition {condition!r}; update this test"
        accepted = re.findall(r"DType::(\w+)", m.group(1))
    words = re.search(r"backend supports ([\w ,]+?), got", check).group(1)
    named = re.split(r", | and ", words)
    return {_DTYPE_NAMES[n] for n in accepted}, {_WORDS[w] for w in named}


@pytest.mark.parametrize("backend,path,struct", [("cpu", "glue.h", "CpuDevice"),
                                                 ("cuda", "cuda/device.h", "CudaDevice")])
def test_csrc_device_policies_are_the_dtype_table(backend, path, struct):
    """The dtypes the C++ wrappers accept (Dev::dtype, read from the source:
    CUDA's is checked here without a GPU) and name in their message are
    _dispatch.DTYPES[backend]. The contract's test_kernels_serve_the_dispatch_dtypes
    runs the kernels themselves with every dtype where they are built."""
    accepted, named = _policy(path, struct)
    assert accepted == set(_dispatch.DTYPES[backend]), (struct, accepted)
    assert named == accepted, (struct, "its message names", named)
