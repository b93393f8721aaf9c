"""The one benchmark test: every case of benchmarks/cases.py, timed by
pytest-benchmark (options and results files: conftest.py)."""
import time

import pytest

from benchmarks import cases, measure, results


def synchronised(fn, device):
    """fn, then a device synchronisation: what pytest-benchmark times, so a
    CUDA call counts until its kernels are done."""
    def call():
        out = fn()
        measure.sync(device)
        return out
    return call


def _failed(exc):
    msg = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"failed: {type(exc).__name__}: {msg}"


def test_case(benchmark, case, bench_session):
    s = bench_session
    try:
        run = case.setup(s.device)
    except cases.Skip as why:
        s.record(case, reason=str(why))
        pytest.skip(str(why))
    except Exception as exc:  # listed in the results file too, and the case fails
        s.record(case, reason=_failed(exc))
        raise
    device = run.device or s.device
    call = synchronised(run.fn, device)
    benchmark.group = f"{case.suite}/{case.group}"
    stats = None
    try:
        with run.context():
            t0 = time.perf_counter()
            first = call()  # compiles under the compile providers: never timed
            metrics = {"first_call_s": time.perf_counter() - t0}
            for _ in range(0 if s.quick else run.warmup):
                call()
            benchmark(call)
            stats = benchmark.stats.stats if benchmark.stats else None  # None: --benchmark-disable
            if run.metrics is not None:
                metrics.update(run.metrics(stats.median if stats else None, first))
            if metrics.get("gbps") and case.suite != "copy":
                metrics["pct_copy_bw"] = s.pct_copy_bw(metrics["gbps"])
            if s.profile:
                metrics["top_kernels"] = measure.top_kernels(run.fn, device)
    except Exception as exc:
        s.record(case, reason=_failed(exc))
        raise
    finally:
        if run.close is not None:
            run.close()
    if stats is not None:
        s.record(case, row=results.row(case, stats, metrics))
    benchmark.extra_info.update({"suite": case.suite, "id": case.id, "provider": case.provider,
                                 "device": str(device), **case.params, **metrics})
