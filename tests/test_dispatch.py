"""Backend selection: explicit requests, automatic fallback, environment."""
import os
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


@pytest.mark.skipif(not packops.has_cpu_ext(), reason="packops._C not built")
def test_auto_picks_cpu_and_reference_is_explicit(monkeypatch):
    calls = []
    real = torch.ops.packops.photometric_fwd
    monkeypatch.setattr(torch.ops.packops, "photometric_fwd",
                        lambda *a: calls.append(1) or real(*a))
    packops.photometric_loss(x, x)
    assert calls == [1]
    with packops.use_backend("reference"):
        packops.photometric_loss(x, x)
    assert calls == [1]


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
