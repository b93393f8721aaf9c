"""A small benchmark harness: timing, peak memory, copy bandwidth, providers.

Used by the bench_*.py files and run by `python -m benchmarks.report`.
Nothing here asserts speed: it measures and reports (docs/design.md, "Performance targets").
"""
import contextlib
import dataclasses
import math
import time

import torch
from torch.profiler import ProfilerActivity, profile

import packops

PROVIDERS = ("reference", "compile", "cpu", "triton", "cuda")
MODES = ("fwd", "fwd+bwd")
# L2 of an H100 is 50 MB, an H200's 60 MB: the 4x3x192x640 inputs (5.9 MB each)
# would stay resident between reps and inflate GB/s, so we overwrite a buffer
# larger than any L2 before each rep (as triton.testing.do_bench does).
_L2_FLUSH_BYTES = 256 << 20
_l2_buffer = {}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quantile(sorted_xs, q):
    """Linear-interpolated quantile of an already sorted list."""
    pos = (len(sorted_xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def time_fn(fn, warmup=None, reps=None, device="cpu", target_s=None, min_reps=5, max_reps=2000,
            flush_l2=True):
    """Run fn() warmup times, then time it; {"median", "p20", "p80" (ms), "reps"}.

    reps=None picks the count so the timed part lasts ~target_s (at least
    min_reps): fixed counts either waste minutes on slow cases or give a
    noisy median on fast ones. target_s defaults to 1.5 s on CPU and 0.5 s on
    CUDA, where events are precise and hundreds of reps fit in that time. CUDA: one pair of events per rep around the
    launch (GPU time, including gaps when launching is the bottleneck);
    CPU: time.perf_counter (the ops are synchronous).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    warmup = (10 if cuda else 3) if warmup is None else warmup
    target_s = (0.5 if cuda else 1.5) if target_s is None else target_s
    # The first call(s) also estimate the per-call time for the adaptive count.
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(max(warmup, 1)):
        fn()
    _sync(device)
    est_s = (time.perf_counter() - t0) / max(warmup, 1)
    if reps is None:
        reps = int(min(max(math.ceil(target_s / max(est_s, 1e-7)), min_reps), max_reps))
    if cuda:
        flush = None
        if flush_l2:
            if device not in _l2_buffer:
                _l2_buffer[device] = torch.empty(_L2_FLUSH_BYTES // 4, device=device)
            flush = _l2_buffer[device]
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for start, end in zip(starts, ends):
            if flush is not None:
                flush.zero_()  # outside the events: not timed
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    else:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {"median": _quantile(times, 0.5), "p20": _quantile(times, 0.2),
            "p80": _quantile(times, 0.8), "reps": reps}


def _cpu_memory_deltas(prof):
    """[(time_ns, bytes)] of every CPU allocation (+) and free (-) in prof.

    The raw "[memory]" records of the kineto result carry each allocation
    and free with its own time stamp. The FunctionEvent view does not: it
    folds records into the op that encloses them (and into every parent op
    as well), so only allocations made outside any op stay "[memory]" events
    there; summing that view would miss most allocations.
    """
    cpu_types = ("CPU", "MKLDNN", "IDEEP")  # what the profiler itself counts as CPU memory
    try:
        records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        return [(e.start_ns(), e.nbytes()) for e in records if e.device_type().name in cpu_types]
    except AttributeError:  # private API moved: fall back to each op's self memory
        return [(e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                if e.self_cpu_memory_usage]


def peak_memory(fn, device="cpu"):
    """Peak bytes allocated while fn() runs, above what was allocated before.

    Whatever fn returns is held until the measurement ends, so outputs count.
    CUDA: the caching allocator's peak counter. CPU: no such counter, so the
    profiler records every allocation/free; their running sum in time order
    peaks at the answer (transient buffers freed inside fn count too).
    """
    device = torch.device(device)
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return peak
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    del out
    running = peak = 0
    for _, nbytes in sorted(_cpu_memory_deltas(prof)):
        running += nbytes
        peak = max(peak, running)
    return peak


def copy_bandwidth(device="cpu", reps=None):
    """GB/s of dst.copy_(src) (bytes read + bytes written), the roofline for our ops."""
    device = torch.device(device)
    nbytes = (256 if device.type == "cuda" else 64) << 20
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), reps=reps, device=device, target_s=0.5, flush_l2=False)
    return 2 * nbytes / (t["median"] * 1e-3) / 1e9


# ------------------------------------------------------------- providers
class Skip(Exception):
    """A provider that cannot run here (the message says why): skipped, not failed."""


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def shape_str(shape):
    return "x".join(map(str, shape))


@dataclasses.dataclass
class Case:
    """One op at one shape, dtype and mode; every available provider times it."""
    op: str              # public name, e.g. "photometric_loss"
    public: callable     # packops.<op>, dispatching on the requested backend
    reference: callable  # packops.<op>_reference, what "compile" compiles
    make_inputs: callable  # () -> tuple of tensors on the device
    shape: tuple
    dtype: torch.dtype
    mode: str            # "fwd" or "fwd+bwd"
    bytes: int           # analytic bytes moved, for GB/s
    grad_inputs: tuple = None  # fwd+bwd: indices of the inputs that need gradients (None: all)
    suite: str = "ops"   # results file: benchmarks/results/<device>/<suite>.md

    @property
    def key(self):
        """What identifies the case across providers: op-shape-dtype-mode."""
        return f"{self.op}-{shape_str(self.shape)}-{dtype_name(self.dtype)}-{self.mode}"

    def params(self):
        return {"op": self.op, "shape": list(self.shape), "dtype": dtype_name(self.dtype),
                "mode": self.mode, "bytes": self.bytes}


@dataclasses.dataclass
class Run:
    """A prepared benchmark: `fn` is the timed callable, already called once
    (compiled, warmed); time it and measure it inside `context()`."""
    fn: callable
    context: callable = contextlib.nullcontext  # () -> context manager (e.g. use_backend)
    first_s: float = None                       # seconds of the first (untimed) call
    result: object = None                       # what the first call returned
    extras: callable = None                     # (median_ms or None) -> dict of extra columns
    close: callable = None                      # frees what prepare built
    device: object = None                       # where fn runs, when not on the benchmark's device
    warmup: int = None                          # untimed calls before timing (None: time_fn's default)


def skip_reason(provider, device):
    """Why provider cannot be timed on device here, or None."""
    device = torch.device(device)
    if provider == "compile":
        return None
    if provider == "triton" and device.type == "cpu":
        return "Triton on CPU tensors is the interpreter, not a speed provider"
    info = packops.backends()[provider]
    if not info.available:
        return info.reason
    if device.type not in info.devices:
        return f"runs on {', '.join(info.devices)} tensors, not {device.type}"
    return None


def provider_fn(provider, case, device):
    """(fn, None) that runs case.op on this provider, or (None, why it is skipped)."""
    why = skip_reason(provider, device)
    if why is not None:
        return None, why
    if provider == "compile":
        # A fresh Dynamo cache per case: otherwise shapes x dtypes x grad modes
        # pile up recompiles on one code object and hit the recompile limit.
        torch._dynamo.reset()
        return torch.compile(case.reference, dynamic=False), None
    return case.public, None


def _step(fn, inputs, mode, grad_out):
    """The timed callable. fwd+bwd uses autograd.grad, which returns the
    gradients instead of accumulating them into .grad, so reps never add up
    and nothing needs zeroing between them."""
    if mode == "fwd":
        def step():
            with torch.no_grad():
                return fn(*inputs)
    else:
        wrt = [x for x in inputs if x.requires_grad]

        def step():
            return torch.autograd.grad(fn(*inputs), wrt, grad_out)
    return step


def _max_err(a, b):
    """Largest |a - b| of any returned tensor relative to that tensor's largest
    |b|: gradients like the pose's are sums over a whole image and can be 1e4
    in size, so an absolute difference says little across ops."""
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    return max(((x.double() - y.double()).abs().max() / y.double().abs().max().clamp_min(1e-30)).item()
               for x, y in zip(a, b))


def case_inputs(case):
    """(inputs, grad_out) of a case: inputs requiring grad as the mode says, and
    a real tensor of ones (not expanded: backward reads all of it)."""
    inputs = case.make_inputs()
    if case.mode == "fwd+bwd":
        want = range(len(inputs)) if case.grad_inputs is None else case.grad_inputs
        inputs = tuple(x.detach().requires_grad_(i in want) for i, x in enumerate(inputs))
    with torch.no_grad():
        grad_out = torch.ones_like(case.reference(*inputs))
    return inputs, grad_out


def setup_op(case, provider, device, inputs=None, grad_out=None, expected=None, copy_gbps=None):
    """Run (see Run) of case on provider, or raise Skip.

    expected: the reference provider's result, for the max-error column
    (None on the reference itself, which is its own reference: error 0).
    copy_gbps: the device's copy bandwidth, for the % copy bw column.
    """
    device = torch.device(device)
    fn, why = provider_fn(provider, case, device)
    if fn is None:
        raise Skip(why)
    if inputs is None:
        inputs, grad_out = case_inputs(case)
    backend = "reference" if provider == "compile" else provider
    step = _step(fn, inputs, case.mode, grad_out)

    def context():
        return packops.use_backend(backend)

    with context():
        t0 = time.perf_counter()
        result = step()  # first call: compiles under "compile", untimed
        _sync(device)
        first_s = time.perf_counter() - t0
    if expected is None and provider == "reference":
        expected = result

    def extras(median_ms):
        with context():
            mem = peak_memory(step, device)
        gbps = case.bytes / (median_ms * 1e-3) / 1e9 if median_ms else None
        return {"gbps": gbps,
                "pct_copy_bw": 100 * gbps / copy_gbps if copy_gbps and gbps else None,
                "peak_mem_mb": mem / 1e6,
                # max |difference| vs the reference of what the step returns (output or
                # grads), relative to the reference's max |value|
                "max_err": _max_err(result, expected) if expected is not None else None}
    return Run(fn=step, context=context, first_s=first_s, result=result, extras=extras)


def measure(run, device, warmup=None, reps=None):
    """{median_ms, p20_ms, p80_ms, reps} and run.extras(median) of a prepared Run."""
    device = run.device or device
    warmup = run.warmup if warmup is None else warmup
    with run.context():
        t = time_fn(run.fn, warmup=warmup, reps=reps, device=device)
    row = {"median_ms": t["median"], "p20_ms": t["p20"], "p80_ms": t["p80"], "reps": t["reps"]}
    if run.extras is not None:
        row.update(run.extras(t["median"]))
    return row


# -------------------------------------------------------------- self-test
def selftest(device="cpu"):
    """Check the measuring tools themselves; returns (ok, lines of results)."""
    device = torch.device(device)
    lines, ok = [], True

    def check(name, value, lo, hi, unit):
        nonlocal ok
        good = lo <= value <= hi
        ok &= good
        spec = ",.0f" if unit == "bytes" else ",.3f"
        lines.append(f"{'PASS' if good else 'FAIL'} {name}: {value:{spec}} {unit} "
                     f"(expected {lo:{spec}} .. {hi:{spec}})")

    n = 10_000_000  # float32: 40,000,000 bytes
    mb = 1e6
    # slack of 1 MB for the profiler's own small allocations
    check("peak_memory(torch.empty(10_000_000) float32)",
          peak_memory(lambda: torch.empty(n, device=device), device), 39.9e6, 41e6, "bytes")

    def transient():  # 40 MB freed before the next 40 MB: the peak is 40 MB, not 80 MB
        a = torch.empty(n, device=device)
        del a
        return torch.empty(n, device=device)
    check("peak_memory(alloc 40 MB, free, alloc 40 MB)",
          peak_memory(transient, device) / mb, 39.9, 41, "MB")

    def two_live():  # a temporary alive next to the output: the peak is 80 MB
        a = torch.ones(n, device=device)
        return a * 2
    check("peak_memory(40 MB temporary + 40 MB output)",
          peak_memory(two_live, device) / mb, 79.9, 81, "MB")
    # The timer, on something of known length: 10 ms of sleep (loose bounds,
    # a busy machine can oversleep; this checks units and bookkeeping).
    t = time_fn(lambda: time.sleep(0.01), warmup=1, reps=5, device=torch.device("cpu"))
    check("time_fn(sleep 10 ms) median", t["median"], 9.5, 30, "ms")
    check("copy_bandwidth", copy_bandwidth(device, reps=5), 0.1, 1e5, "GB/s")
    return ok, lines
