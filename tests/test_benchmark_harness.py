"""The benchmarks' measuring tools measure what they claim: memory accounting,
the timed call and its units, the time breakdown's arithmetic (host and
device, on synthetic profiler events), achieved FLOP/s, and the results
schema and its renderer. Nothing here times anything or asserts speed."""
import glob
import os
import sys
from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import breakdown, cases, measure, results  # noqa: E402
from benchmarks.test_bench import synchronised  # noqa: E402

MB = 1e6
N = 10_000_000  # float32: 40 MB


# ------------------------------------------------------------- memory
def test_memory_counts_known_allocations():
    """(peak, held) of known allocations; 1 MB of slack for the profiler's own."""
    peak, held = measure.memory(lambda: torch.empty(N), "cpu")
    assert 39.9 <= peak / MB <= 41 and 39.9 <= held / MB <= 41

    def transient():  # 40 MB freed before the next 40 MB: the peak is 40 MB, not 80
        a = torch.empty(N)
        del a
        return torch.empty(N)
    assert 39.9 <= measure.memory(transient, "cpu")[0] / MB <= 41

    def two_live():  # a temporary alive next to the output: 80 MB peak, 40 MB held
        a = torch.ones(N)
        return a * 2
    peak, held = measure.memory(two_live, "cpu")
    assert 79.9 <= peak / MB <= 81 and 39.9 <= held / MB <= 41


# -------------------------------------------------------------- timer
def test_timed_call_synchronises_after_each_call(monkeypatch):
    log = []
    monkeypatch.setattr(measure, "sync", lambda device: log.append(("sync", str(device))))
    call = synchronised(lambda: log.append("fn") or 7, torch.device("cuda"))
    assert call() == 7 and call() == 7
    assert log == ["fn", ("sync", "cuda"), "fn", ("sync", "cuda")]


def test_rows_are_in_ms_from_pytest_benchmarks_seconds():
    from pytest_benchmark.stats import Stats
    stats = Stats()
    for s in (0.004, 0.001, 0.003, 0.002, 0.005):
        stats.update(s)
    case = cases.Case("ops", "g", "cpu", {"op": "x"}, None)
    r = results.row(case, stats, {"gbps": 1.0})
    assert r["id"] == "g-cpu" and r["rounds"] == 5 and r["metrics"] == {"gbps": 1.0}
    assert r["median_ms"] == pytest.approx(3.0)
    assert r["q1_ms"] == pytest.approx(stats.q1 * 1e3) and r["q1_ms"] < 3 < r["q3_ms"]


# --------------------------------------- breakdown on synthetic events
_ids = iter(range(1, 10 ** 6))


def ev(name, start, end, parent=None, device="CPU", link=0, seq=-1, annotation=False):
    """An object with the attributes breakdown reads from torch's FunctionEvent.
    An op's own "device time" is set absurdly high: it must never be used."""
    return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start, end=end),
                           device_type=getattr(DeviceType, device), cpu_parent=parent,
                           id=next(_ids), linked_correlation_id=link, sequence_nr=seq,
                           is_user_annotation=annotation, is_async=False,
                           self_device_time_total=1e9, device_time_total=1e9)


def kernel(name, start, end, op):
    return ev(name, start, end, device="CUDA", link=op.id)


def test_host_breakdown_adds_up_to_the_step():
    root = ev(breakdown.ROOT, 0, 100)
    loss = ev("packnet.loss", 10, 40, root)
    conv = ev("aten::conv2d", 12, 30, loss)  # inside the loss range: loss (outermost decides)
    ev_conv2 = ev("aten::conv2d", 50, 70, root)
    copy = ev("aten::copy_", 55, 60, ev_conv2)  # inside a convolution: convolution
    unknown = ev("aten::add", 80, 90, root)
    outside = ev("aten::mul", 120, 130)  # another thread or after the step: not counted
    events = [root, loss, conv, ev_conv2, copy, unknown, outside]
    b = breakdown.breakdown(events)
    assert b["total_us"] == 100 and b["steps"] == 1
    assert sum(b["us"].values()) == pytest.approx(100)
    assert b["us"]["loss"] == 30 and b["us"]["conv_fwd"] == 20 and b["us"]["copy_fill"] == 0
    assert b["us"]["other"] == 10 + 40  # aten::add, and the root's own time (Python)
    assert b["other_threads_us"] == 10
    assert b["phase_us"]["packnet.loss"] == 30
    assert sum(breakdown.percentages(b).values()) == pytest.approx(100)


def _step(events, start, end, sync_at=None):
    """A root range [start, end) ending with the benchmark's own synchronize."""
    root = ev(breakdown.ROOT, start, end)
    events.append(root)
    if sync_at is not None:
        s = ev(breakdown.SYNC, sync_at, end, root)
        events += [s, ev("cudaDeviceSynchronize", sync_at + 1, end - 1, s)]
    return root


def test_device_kernels_on_two_streams_overlap_and_count_once():
    events = []
    root = _step(events, 0, 100, sync_at=60)
    conv = ev("aten::cudnn_convolution", 1, 5, root)
    norm = ev("aten::native_group_norm", 6, 9, root)
    launches = [ev("cudaLaunchKernel", 2, 3, conv), ev("cudaLaunchKernel", 7, 8, norm)]
    k1 = kernel("conv_kernel", 10, 30, conv)   # stream 1
    k2 = kernel("norm_kernel", 20, 40, norm)   # stream 2, overlapping k1 by 10 us
    # the benchmark's synchronize again, as the profiler may record it: not nested
    # under its range (an unlinked runtime call keeps another thread id)
    events += [conv, norm, k1, k2, ev("cudaDeviceSynchronize", 62, 98)] + launches
    b = breakdown.breakdown(events, device=True)
    assert b["busy_us"] == 30 and b["idle_us"] == 70
    assert b["device_us"] == 40  # summed durations: above busy where streams overlap
    assert b["us"]["conv_fwd"] == 15 and b["us"]["norm_act"] == 15  # the overlap split in two
    assert sum(b["us"].values()) == pytest.approx(b["total_us"]) == 100
    assert b["us"]["idle"] == 70
    assert b["launches"] == 2 and b["kernels"] == 2
    assert b["syncs"] == 0  # the benchmark's own synchronize is not the step's


def test_device_kernel_of_an_op_counted_once_and_ranges_are_not_work():
    events = []
    root = _step(events, 0, 100)
    fwd = ev("packnet.forward", 1, 50, root)
    loss = ev("packnet.loss", 50, 90, root)
    conv = ev("aten::conv2d", 52, 60, loss)
    k = kernel("implicit_gemm", 55, 75, conv)
    # the GPU-side annotations record_function leaves (span the kernels; not work)
    notes = [ev("packnet.loss", 50, 90, device="CUDA", annotation=True),
             ev(breakdown.ROOT, 0, 100, device="CUDA", annotation=True),
             ev("packnet.forward", 1, 50, device="CUDA")]  # named like a range
    events += [fwd, loss, conv, k] + notes
    b = breakdown.breakdown(events, device=True)
    assert b["device_us"] == 20 and b["busy_us"] == 20  # conv's own 1e9 "device time" unused
    assert b["us"]["loss"] == 20  # inside packnet.loss: loss, not conv fwd
    assert b["us"]["idle"] == 80 and b["kernels"] == 1


def test_device_idle_gaps_steps_and_host_syncs():
    events = []
    r1 = _step(events, 0, 100, sync_at=90)
    r2 = _step(events, 200, 300, sync_at=290)
    item = ev("aten::item", 40, 45, r1)
    events += [item, ev("cudaStreamSynchronize", 41, 44, item),  # .item(): a host sync
               ev("cudaMemcpy", 210, 212, r2),                    # a synchronous copy
               kernel("a", 10, 20, item), kernel("b", 50, 60, item),   # step 1: 20 busy
               kernel("c", 95, 130, item),   # ends after step 1: clipped to it (5 us)
               kernel("d", 150, 160, item),  # between the steps: in neither
               ev("Memcpy HtoD (Pageable -> Device)", 215, 225, device="CUDA", link=item.id)]
    b = breakdown.breakdown(events, device=True)
    assert b["steps"] == 2 and b["total_us"] == 200
    assert b["busy_us"] == 25 + 10 and b["idle_us"] == 165
    assert b["syncs"] == 2 and b["kernels"] == 3 and b["launches"] == 0
    assert sum(b["us"].values()) == pytest.approx(200)


def test_device_backward_kernel_takes_its_forward_ops_category():
    events = []
    root = _step(events, 0, 100)
    loss = ev("packnet.loss", 1, 20, root)
    fwd = ev("packops::photometric_fwd", 2, 10, loss, seq=7)
    bwd_node = ev("autograd::engine::evaluate_function: PhotometricBackward", 30, 60, seq=7)
    bwd_op = ev("packops::photometric_bwd", 31, 59, bwd_node)  # on the autograd thread
    events += [loss, fwd, bwd_node, bwd_op, kernel("photometric_bwd_kernel", 35, 55, bwd_op)]
    assert breakdown.breakdown(events, device=True)["us"]["loss"] == 20


def test_peak_table_and_achieved_flops():
    assert breakdown.peak_tflops("NVIDIA H200", "tf32") == 494.7
    assert breakdown.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert breakdown.peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert breakdown.peak_tflops("NVIDIA A100-SXM4-80GB", "tf32") is None
    tflops, pct = breakdown.achieved(4.9e12, 0.0796, 494.7)
    assert tflops == pytest.approx(61.56, abs=0.01) and pct == pytest.approx(12.44, abs=0.01)
    assert breakdown.achieved(1e12, 1.0)[1] is None


@pytest.mark.parametrize("name, category", [
    ("aten::conv2d", "conv_fwd"), ("aten::mkldnn_convolution", "conv_fwd"),
    ("aten::convolution_backward", "conv_bwd"), ("aten::native_group_norm_backward", "norm_act"),
    ("aten::elu_", "norm_act"), ("packops::pack3d_fwd", "packing"), ("aten::conv3d", "packing"),
    ("packops::photometric_bwd", "loss"), ("aten::grid_sampler_2d", "loss"),
    ("Optimizer.step#Adam.step", "optimizer"), ("aten::_foreach_mul_", "optimizer"),
    ("aten::copy_", "copy_fill"), ("aten::cat", "copy_fill"), ("aten::add", None),
    ("packnet.loss", "loss"), ("packnet.clip", "optimizer"), ("packnet.optimizer", "optimizer"),
    ("packnet.forward", None), ("packnet.backward", None),
])
def test_category_rules(name, category):
    assert breakdown.categorize_name(name) == category


# ------------------------------------------------------------- results
def _row(i, run=0):
    return {"id": f"g{i}-cpu", "group": f"g{i}", "provider": "cpu", "params": {"op": f"g{i}"},
            "median_ms": 1.0 + i, "q1_ms": 0.9, "q3_ms": 1.1 + i, "rounds": 5, "metrics": {}}


def test_merge_keeps_rows_not_measured_again(tmp_path):
    stem = str(tmp_path / "dev" / "ops")
    first = results.save(stem, "ops", {"device": "d", "git": "a"}, [_row(0), _row(1)], [])
    again = dict(_row(1), median_ms=9.0)
    data = results.save(stem, "ops", {"device": "d", "git": "b"}, [again],
                        [{"id": "g2-cuda", "group": "g2", "provider": "cuda", "params": {},
                          "reason": "no GPU"}], base=results.load(stem + ".json"))
    assert [r["git"] for r in data["runs"]] == ["a", "b"] and len(first["runs"]) == 1
    assert [(r["id"], r["run"], r["median_ms"]) for r in data["rows"]] == [
        ("g0-cpu", 0, 1.0), ("g1-cpu", 1, 9.0)]
    md = open(stem + ".md").read()
    assert "Run 1:" in md and "- git: b" in md and "- cuda: no GPU" in md


def test_committed_results_render_to_their_markdown():
    """Every committed results file is in the schema and its .md is its rendering."""
    paths = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "results", "*", "*.json")))
    assert paths
    for path in paths:
        with open(path[:-5] + ".md") as f:
            assert results.render(results.load(path)) == f.read(), path
