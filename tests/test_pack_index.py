"""The CUDA pack kernels address a channel once (unpacked_base) and step
through rows and columns; the CPU kernels call unpacked_offset per element.
Both are in csrc/include/packops/pack.h: a host program checks, for many
sizes and packing factors, in int and int64, that the two agree everywhere
(the CUDA kernels themselves only run on a GPU)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = r"""
#include <cstdio>
#include "packops/pack.h"
using namespace packops;
template <typename I> int check(int64_t Q, int64_t h, int64_t w, int64_t r) {
  int bad = 0;
  for (int64_t q = 0; q < Q; ++q)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const I got = unpacked_base<I>(I(q), I(h), I(w), I(r)) + I(y) * I(r * r * w) + I(x) * I(r);
        if (int64_t(got) != unpacked_offset(q, y, x, h, w, r)) ++bad;
      }
  return bad;
}
int main() {
  int bad = 0, cases = 0;
  const int64_t rs[] = {1, 2, 3, 4};
  for (int64_t r : rs)
    for (int64_t c = 1; c <= 3; ++c)
      for (int64_t h = 1; h <= 5; h += 2)
        for (int64_t w = 1; w <= 7; w += 3) {
          bad += check<int>(c * r * r, h, w, r) + check<int64_t>(c * r * r, h, w, r);
          ++cases;
        }
  std::printf("%d cases, %d mismatches\n", cases, bad);
  return bad != 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not on PATH")
def test_unpacked_base_steps_match_unpacked_offset(tmp_path):
    src = tmp_path / "index.cpp"
    src.write_text(PROGRAM)
    exe = tmp_path / "index"
    subprocess.run(["g++", "-std=c++17", "-O1", "-I", os.path.join(ROOT, "csrc", "include"),
                    str(src), "-o", str(exe)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 mismatches" in out.stdout
