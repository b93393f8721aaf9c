"""The one case list, read by the one runner (`pytest benchmarks/ --benchmark-only`).

A `Case` is one provider of one thing at one setting. Every
`benchmarks/bench_<name>.py` (found by glob) defines
`cases(device, quick) -> [Case]`; the runner (conftest.py, test_bench.py)
parametrizes its one test function by them, with ids `<suite>/<group>-<provider>`
(e.g. `ops/ssim-4x3x192x640-float32-fwd+bwd-cpu`).

- `suite`: the results file, `results/<device>/<suite>.json`;
- `group`: the case without its provider: providers are compared within it;
- `params`: the descriptive columns (op, shape, dtype, mode, ...);
- `setup(device) -> Run`, or raise `Skip` (the reason is reported).

The runner calls `run.fn` once (timed apart: `first_call_s`, compilation
under the compile providers), `run.warmup` more times, then lets
pytest-benchmark time it with the device synchronised inside the timed
function, and finally asks `run.metrics(median_s, first_result)` for the
extra columns (peak memory, GB/s, max error, ...).
"""
import contextlib
import dataclasses
import functools
import importlib
import os
import pkgutil

import torch

import packops

from . import measure

_HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("fwd", "bwd", "fwd+bwd")
# settings the runner's command line gives the cases (conftest.py sets them)
OPTIONS = {"profile_steps": 2}  # training steps under the profiler (--bench-profile-steps)
PROVIDERS = ("reference", "compile", "cpu", "triton", "cuda")


class Skip(Exception):
    """A case that cannot run here; the message says why."""


@dataclasses.dataclass
class Run:
    fn: callable                                  # the timed call
    metrics: callable = None                      # (median_s or None, first result) -> dict
    context: callable = contextlib.nullcontext    # () -> the context every call runs in
    device: torch.device = None                   # where fn runs, when not the session's device
    warmup: int = 2                               # untimed calls after the first
    close: callable = None                        # frees what setup built


@dataclasses.dataclass
class Case:
    suite: str
    group: str
    provider: str
    params: dict
    setup: callable  # (device) -> Run

    @property
    def id(self):
        return f"{self.group}-{self.provider}"


def all_cases(device, quick=False):
    """Every case of every bench_*.py for `device`, in file order."""
    device = torch.device(device)
    out = []
    for m in sorted(pkgutil.iter_modules([_HERE]), key=lambda m: m.name):
        if m.name.startswith("bench_"):
            out += importlib.import_module(f"{__package__}.{m.name}").cases(device, quick)
    ids = [f"{c.suite}/{c.id}" for c in out]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"benchmark ids must be unique: {sorted(dup)}"
    return out


# ------------------------------------------------------- helpers for op cases
def shape_str(shape):
    return "x".join(map(str, shape))


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def op_step(fn, inputs, mode, grad_out):
    """The timed call of an op in a mode, and what it returns:

    fwd      fn(*inputs) under no_grad
    bwd      the backward alone, of one forward made here (retain_graph)
    fwd+bwd  forward and torch.autograd.grad (which returns the gradients, so
             nothing accumulates between calls)
    """
    if mode == "fwd":
        def step():
            with torch.no_grad():
                return fn(*inputs)
        return step
    wrt = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
    if mode == "bwd":
        out = fn(*inputs)

        def step():
            return torch.autograd.grad(out, wrt, grad_out, retain_graph=True)
        return step

    def step():
        return torch.autograd.grad(fn(*inputs), wrt, grad_out)
    return step


def with_grad(inputs, mode, grad_inputs=None):
    """inputs, the ones in grad_inputs (None: all) requiring grad unless mode is fwd."""
    if mode == "fwd":
        return tuple(inputs)
    want = range(len(inputs)) if grad_inputs is None else grad_inputs
    return tuple(x.detach().requires_grad_(i in want) for i, x in enumerate(inputs))


def max_rel_err(a, b):
    """Largest |a - b| of any returned tensor relative to that tensor's largest
    |b|: gradients like the pose's sum over a whole image and can be 1e4 in
    size, so an absolute difference says little across ops."""
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    return max(((x.double() - y.double()).abs().max() / y.double().abs().max().clamp_min(1e-30))
               .item() for x, y in zip(a, b))


# ------------------------------------------------------------- op cases
def skip_reason(provider, device):
    """Why an op provider cannot be timed on device here, or None."""
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


def op_cases(suite, op, public, reference, make_inputs, shape, dtype, nbytes, grad_inputs=None,
             modes=MODES):
    """Every provider (PROVIDERS) x mode of one op at one shape and dtype.

    public: packops.<op>, dispatching on the backend asked for; reference:
    what the compile provider compiles; make_inputs: () -> the tensors on the
    device (the same values every call); nbytes: (fwd, bwd), the least bytes
    any implementation must move, for GB/s; grad_inputs: indices of the
    inputs that need gradients (None: all).
    """
    out = []
    for mode in modes:
        group = f"{op}-{shape_str(shape)}-{dtype_name(dtype)}-{mode}"
        params = {"op": op, "shape": list(shape), "dtype": dtype_name(dtype), "mode": mode}
        moved = {"fwd": nbytes[0], "bwd": nbytes[1], "fwd+bwd": nbytes[0] + nbytes[1]}[mode]
        for provider in PROVIDERS:
            setup = functools.partial(_setup_op, provider, public, reference, make_inputs, mode,
                                      grad_inputs, moved, group)
            out.append(Case(suite, group, provider, params, setup))
    return out


# the reference provider's result for the max error column, one group at a
# time: a full run times the reference first in each group; a run selecting
# one provider computes it here
_expected = {"group": None, "result": None}


def _reference_result(group, public, inputs, mode, grad_out, first=None):
    if _expected["group"] != group:
        _expected.update(group=None, result=None)  # free the previous one first
        if first is None:
            with packops.use_backend("reference"):
                first = op_step(public, inputs, mode, grad_out)()
        _expected.update(group=group, result=first)
    return _expected["result"]


def _setup_op(provider, public, reference, make_inputs, mode, grad_inputs, moved, group, device):
    why = skip_reason(provider, device)
    if why is not None:
        raise Skip(why)
    inputs = with_grad(make_inputs(), mode, grad_inputs)
    with torch.no_grad():
        grad_out = torch.ones_like(reference(*inputs))  # a real tensor: backward reads all of it
    fn, backend = public, provider
    if provider == "compile":
        # a fresh Dynamo cache per case: shapes x dtypes x grad modes on one code
        # object would hit the recompile limit
        torch._dynamo.reset()
        fn, backend = torch.compile(reference, dynamic=False), "reference"
    with packops.use_backend(backend):
        step = op_step(fn, inputs, mode, grad_out)

    def metrics(median_s, first):
        if provider == "reference":
            _reference_result(group, public, inputs, mode, grad_out, first)
        expected = _reference_result(group, public, inputs, mode, grad_out)
        peak, _ = measure.memory(step, device)
        gbps = moved / median_s / 1e9 if median_s else None
        return {"bytes": moved, "gbps": gbps, "peak_mem_mb": peak / 1e6,
                "max_err": max_rel_err(first, expected)}
    return Run(fn=step, metrics=metrics, context=lambda: packops.use_backend(backend))
