"""The one list of benchmark cases, read by `python -m benchmarks.report`,
`python -m benchmarks.train_step` and `pytest benchmarks/ --benchmark-only`.

Where the cases come from: every `benchmarks/bench_<name>.py` (found by glob)
and `benchmarks/train_step.py`. Each defines `OPS` (names `--ops` / `-k` can
select) and `cases(device, quick=False, ops=OPS)`, returning

- `harness.Case` objects (one op at one shape, dtype and mode), which become
  one `OpItem` per provider (`harness.PROVIDERS`), or
- items of their own (the training step, the renderer): objects with the
  attributes and methods of `Item` below.

An item is one timed thing: `suite` (its results file,
`benchmarks/results/<device>/<suite>.md`), `op`, `provider`, `id` (unique in
its suite; the pytest parameter id), `group` (the id without the provider:
pytest-benchmark groups by it, the report computes speedups within it),
`params()` (the row's descriptive columns) and `prepare(device, copy_gbps)`,
which builds it, calls it once and returns a `harness.Run`, or raises
`harness.Skip`.
"""
import importlib
import os
import pkgutil

import torch

from . import harness

SUITES = ("ops", "pack", "pack-layer", "train-step", "data", "monodepth2")
_HERE = os.path.dirname(os.path.abspath(__file__))


class Item:
    """What every item provides (documentation; items need not subclass it)."""
    suite = op = provider = id = group = None

    def params(self):
        raise NotImplementedError

    def prepare(self, device, copy_gbps=None):
        raise NotImplementedError


def modules():
    """{"photometric": module, ..., "train_step": module}: every source of cases."""
    mods = {m.name[len("bench_"):]: importlib.import_module(f"{__package__}.{m.name}")
            for m in pkgutil.iter_modules([_HERE]) if m.name.startswith("bench_")}
    mods["train_step"] = importlib.import_module(f"{__package__}.train_step")
    return dict(sorted(mods.items()))


# The reference provider's result of the last op case prepared, for max error:
# the report prepares the reference first in each group; a pytest run selecting
# one provider (-k) computes it once here.
_reference = {"key": None, "result": None}


def _reference_result(case, device):
    key = (case.key, str(device))
    if _reference["key"] != key:
        _reference.update(key=None, result=None)  # free the previous one first
        run = harness.setup_op(case, "reference", device)
        _reference.update(key=key, result=run.result)
    return _reference["result"]


class OpItem(Item):
    """One provider of one op case (harness.Case)."""

    def __init__(self, case, provider):
        self.case, self.provider = case, provider
        self.suite, self.op = case.suite, case.op
        self.group = case.key
        self.id = f"{case.key}-{provider}"

    def params(self):
        return self.case.params()

    def prepare(self, device, copy_gbps=None):
        device = torch.device(device)
        why = harness.skip_reason(self.provider, device)
        if why is not None:
            raise harness.Skip(why)
        expected = None if self.provider == "reference" else _reference_result(self.case, device)
        run = harness.setup_op(self.case, self.provider, device, expected=expected,
                               copy_gbps=copy_gbps)
        if self.provider == "reference":
            _reference.update(key=(self.case.key, str(device)), result=run.result)
        return run


def items(device, quick=False, suites=None, ops=None, providers=None):
    """Every item to run on `device`, in order (each group's reference first).

    suites: names from SUITES (None: all); ops: bench file names
    ("photometric"), op names ("ssim") or training presets ("main") (None:
    all); providers: keep only these (None: all).
    """
    device = torch.device(device)
    wanted = set(ops or ())
    out = []
    for name, module in modules().items():
        if wanted and name not in wanted and not wanted & set(module.OPS):
            continue
        sel = module.OPS if not wanted or name in wanted else [o for o in module.OPS if o in wanted]
        for c in module.cases(device, quick=quick, ops=sel):
            if isinstance(c, harness.Case):
                out += [OpItem(c, p) for p in harness.PROVIDERS]
            else:
                out.append(c)
    if suites:
        out = [i for i in out if i.suite in suites]
    if providers:
        out = [i for i in out if i.provider in providers]
    return out


def known_names():
    """(bench file names, op names) --ops accepts."""
    mods = modules()
    return sorted(mods), sorted(o for m in mods.values() for o in m.OPS)
