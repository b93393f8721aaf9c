"""Every csrc/cuda/*.cu compiles with plain nvcc (no torch headers), for the
architectures we ship (sm_80, sm_90), when nvcc is on PATH."""
import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", ["80", "90"])
@pytest.mark.parametrize("source", SOURCES, ids=os.path.basename)
def test_nvcc_compiles(source, arch, tmp_path):
    cmd = ["nvcc", "-std=c++17", "-c", source, "-o", str(tmp_path / "k.o"),
           f"-I{ROOT}/csrc/include", f"-I{ROOT}/csrc/cuda",
           "-gencode", f"arch=compute_{arch},code=sm_{arch}", "-Xcompiler", "-Wall",
           "-Werror", "all-warnings"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr.lower(), r.stderr


def test_sources_found():
    assert SOURCES, "no CUDA sources under csrc/cuda"
