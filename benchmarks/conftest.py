"""pytest-benchmark over benchmarks/cases.py (the report's case list):

    pytest benchmarks/ --benchmark-only                       # everything (long)
    pytest benchmarks/ --benchmark-only -k "test_ops and ssim-4x3x192x640-float32-fwd-cpu"
    pytest benchmarks/ --benchmark-only --bench-quick -k test_train_step

Without --benchmark-only (or PACKOPS_BENCH=1) the cases are collected and
skipped, so nothing heavy runs by accident; `python -m pytest` alone never
collects this directory (pyproject's testpaths is tests/).

Options: --bench-device cpu|cuda (default cuda when available; env
PACKOPS_BENCH_DEVICE), --bench-quick (the report's --quick shapes; env
PACKOPS_BENCH_QUICK=1).
"""
import os

import pytest
import torch

from benchmarks import cases


def pytest_addoption(parser):
    group = parser.getgroup("packops benchmarks")
    group.addoption("--bench-device", choices=("cpu", "cuda"), default=None,
                    help="device of the benchmark cases (default: cuda when available, else cpu)")
    group.addoption("--bench-quick", action="store_true", default=False,
                    help="tiny shapes (the report's --quick cases): a smoke test")


def _device(config):
    name = config.getoption("--bench-device") or os.environ.get("PACKOPS_BENCH_DEVICE")
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _quick(config):
    return config.getoption("--bench-quick") or os.environ.get("PACKOPS_BENCH_QUICK") == "1"


def pytest_generate_tests(metafunc):
    if "bench_item" not in metafunc.fixturenames:
        return
    suite = getattr(metafunc.module, "SUITE_OF", {}).get(metafunc.function.__name__)
    items = cases.items(_device(metafunc.config), quick=_quick(metafunc.config), suites=[suite])
    metafunc.parametrize("bench_item", items, ids=[i.id for i in items])


@pytest.fixture
def bench_device(request):
    return _device(request.config)


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", False) or os.environ.get("PACKOPS_BENCH") == "1":
        return
    skip = pytest.mark.skip(reason="benchmarks run with --benchmark-only (or PACKOPS_BENCH=1)")
    for item in items:
        if "bench_item" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)
