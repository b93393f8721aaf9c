"""What the runner measures besides time: memory, the machine, top kernels.

Time itself is pytest-benchmark's (test_bench.py); nothing here times.
"""
import datetime
import os
import platform
import re
import subprocess

import torch
from torch.profiler import ProfilerActivity, profile

import packops


def sync(device):
    """Wait for the device: the runner calls it inside every timed call."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_memory_deltas(prof):
    """[(time_ns, bytes)] of every CPU allocation (+) and free (-) in prof.

    The raw "[memory]" records of the kineto result carry each allocation
    and free with its own time stamp. The FunctionEvent view does not: it
    folds records into the op that encloses them (and into every parent op
    as well), so summing that view would miss most allocations.
    """
    cpu_types = ("CPU", "MKLDNN", "IDEEP")  # what the profiler itself counts as CPU memory
    try:
        records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        return [(e.start_ns(), e.nbytes()) for e in records if e.device_type().name in cpu_types]
    except AttributeError:  # private API moved: fall back to each op's self memory
        return [(e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                if e.self_cpu_memory_usage]


def memory(fn, device):
    """(peak, held) bytes of one fn(): the most allocated while it runs and
    what is still allocated when it returns, both above what was allocated
    before. Its result is held until the end, so outputs count.

    CUDA: the caching allocator's counters. CPU: no such counter, so the
    profiler records every allocation and free; their running sum in time
    order peaks at the answer (transient buffers freed inside fn count too).
    """
    device = torch.device(device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        held = torch.cuda.memory_allocated(device) - base
        del out
        return peak, held
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    del out
    running = peak = 0
    for _, nbytes in sorted(_cpu_memory_deltas(prof)):
        running += nbytes
        peak = max(peak, running)
    return peak, running


def top_kernels(fn, device, calls=3, n=10):
    """[[name, ms per call]] of the n kernels (CUDA; ops' self time on CPU)
    that take the most time in `calls` calls of fn."""
    from . import breakdown
    device = torch.device(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(calls):
            fn()
        sync(device)
    totals = {}
    if device.type == "cuda":
        for a in breakdown.device_activities(prof.events()):
            totals[a.name] = totals.get(a.name, 0.0) + a.end - a.start
    else:
        for e in prof.events():
            totals[e.name] = totals.get(e.name, 0.0) + e.self_cpu_time_total
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:n]
    return [[name, us / 1e3 / calls] for name, us in top]


# ------------------------------------------------------------ the machine
def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        if m:
            return m.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device):
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def slug(name):
    """"NVIDIA H100 80GB HBM3" -> "h100-80gb-hbm3": the results directory."""
    name = re.sub(r"^nvidia\s+", "", name.strip(), flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def git_revision():
    """Short HEAD of the tree whose packops is imported (the measured code;
    under benchmarks.compare not necessarily this file's tree), plus "-dirty"
    when tracked files differ from it."""
    tree = os.path.dirname(os.path.dirname(os.path.realpath(packops.__file__)))

    def git(*args):
        return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
    try:
        rev = git("rev-parse", "--short", "HEAD")
        return rev + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def triton_version():
    try:
        import triton
        return triton.__version__
    except ImportError:
        return "not installed"


def machine(device, quick=False):
    """The header of a results file: what ran, where, with which code."""
    device = torch.device(device)
    h = {"device": device_name(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        h["gpu"] = (f"{props.name}, {props.multi_processor_count} SMs, "
                    f"{props.total_memory / 2**30:.0f} GiB")
        h["cuda"] = torch.version.cuda
        h["cudnn"] = (f"allow_tf32 {torch.backends.cudnn.allow_tf32}, "
                      f"benchmark {torch.backends.cudnn.benchmark}")
    else:
        h["cores"] = f"{os.cpu_count()} logical, torch uses {torch.get_num_threads()} threads"
    h.update({
        "torch": torch.__version__, "triton": triton_version(), "git": git_revision(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "timer": "pytest-benchmark (wall clock, device synchronised inside each timed call); "
                 "spread q1/q3 of its rounds",
        "backends": {k: v.available for k, v in packops.backends().items()},
        "quick": quick,
    })
    return h
