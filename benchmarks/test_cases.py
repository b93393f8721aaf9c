"""Every case of benchmarks/cases.py as a pytest-benchmark test, one test
function per suite (see conftest.py for the options). extra_info carries the
report's columns: GB/s, peak memory, max error vs the reference (ops),
images/s and the time breakdown (training step), device and provider.

pytest-benchmark times the wall clock of each call (on CUDA: with a
synchronize at the end, so launch overhead counts and there is no L2 flush);
`python -m benchmarks.report` times CUDA with events. Compare runs of one
timer with each other, not across the two.
"""
import pytest
import torch

from benchmarks import harness

SUITE_OF = {"test_ops": "ops", "test_pack": "pack", "test_pack_layer": "pack-layer",
            "test_train_step": "train-step", "test_data": "data", "test_monodepth2": "monodepth2"}


def _bench(benchmark, bench_item, device):
    try:
        run = bench_item.prepare(device)
    except harness.Skip as why:
        pytest.skip(str(why))
    where = run.device or device
    fn = run.fn
    if where.type == "cuda":
        def fn():
            out = run.fn()
            torch.cuda.synchronize(where)
            return out
    benchmark.group = f"{bench_item.suite}: {bench_item.group}"
    try:
        with run.context():
            benchmark(fn)
            stats = getattr(benchmark, "stats", None)
            median_ms = stats.stats.median * 1e3 if stats is not None else None
        extra = run.extras(median_ms) if run.extras is not None else {}
        benchmark.extra_info.update({
            "suite": bench_item.suite, "id": bench_item.id, "provider": bench_item.provider,
            "device": str(where), **bench_item.params(), "first_call_s": run.first_s, **extra})
    finally:
        if run.close is not None:
            run.close()


def test_ops(benchmark, bench_item, bench_device):
    _bench(benchmark, bench_item, bench_device)


def test_pack(benchmark, bench_item, bench_device):
    _bench(benchmark, bench_item, bench_device)


def test_pack_layer(benchmark, bench_item, bench_device):
    _bench(benchmark, bench_item, bench_device)


def test_train_step(benchmark, bench_item, bench_device):
    _bench(benchmark, bench_item, bench_device)


def test_data(benchmark, bench_item, bench_device):
    _bench(benchmark, bench_item, bench_device)


def test_monodepth2(benchmark, bench_item, bench_device):
    _bench(benchmark, bench_item, bench_device)
