"""The one runner: pytest-benchmark over benchmarks/cases.py (see README.md here).

    pytest benchmarks/ --benchmark-only [-k EXPR] [--bench-device cpu|cuda] [--bench-quick]
        [--bench-out benchmarks/results [--bench-merge]] [--bench-profile]
        [--bench-profile-steps N] [--bench-cudnn-benchmark]

Without --benchmark-only (or PACKOPS_BENCH=1) the cases are collected and
skipped, so nothing heavy runs by accident; `python -m pytest` alone never
collects this directory (pyproject's testpaths is tests/).
"""
import os

import pytest
import torch

from benchmarks import cases, measure, results


def pytest_addoption(parser):
    g = parser.getgroup("packops benchmarks")
    g.addoption("--bench-device", choices=("cpu", "cuda"), default=None,
                help="device of the cases (default: cuda when available, else cpu; env "
                     "PACKOPS_BENCH_DEVICE)")
    g.addoption("--bench-quick", action="store_true", default=False,
                help="tiny shapes and short timing: a smoke test (env PACKOPS_BENCH_QUICK=1)")
    g.addoption("--bench-out", metavar="DIR", default=None,
                help="write DIR/<device-slug>/<suite>.json and .md after every case "
                     "(benchmarks/results is the committed one)")
    g.addoption("--bench-merge", action="store_true", default=False,
                help="keep the rows of the existing results files that this session does not "
                     "measure again")
    g.addoption("--bench-profile", action="store_true", default=False,
                help="list every case's top kernels (3 calls under torch.profiler)")
    g.addoption("--bench-profile-steps", type=int, default=cases.OPTIONS["profile_steps"],
                help="training steps under the profiler for the breakdown (0: none)")
    g.addoption("--bench-cudnn-benchmark", action="store_true", default=False,
                help="torch.backends.cudnn.benchmark = True (results files *-cudnn-benchmark.*)")


def _device(config):
    name = config.getoption("--bench-device") or os.environ.get("PACKOPS_BENCH_DEVICE")
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _quick(config):
    return config.getoption("--bench-quick") or os.environ.get("PACKOPS_BENCH_QUICK") == "1"


def pytest_configure(config):
    if _device(config).type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda: no CUDA device is visible")
    cases.OPTIONS["profile_steps"] = config.getoption("--bench-profile-steps")
    if config.getoption("--bench-cudnn-benchmark"):
        torch.backends.cudnn.benchmark = True


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        found = cases.all_cases(_device(metafunc.config), _quick(metafunc.config))
        metafunc.parametrize("case", found, ids=[f"{c.suite}/{c.id}" for c in found])


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", False) or os.environ.get("PACKOPS_BENCH") == "1":
        if _quick(config):  # a smoke test: 0.01 s a case, whatever the options say
            for item in items:
                item.add_marker(pytest.mark.benchmark(min_rounds=1, max_time=0.01, warmup=False))
        return
    skip = pytest.mark.skip(reason="benchmarks run with --benchmark-only (or PACKOPS_BENCH=1)")
    for item in items:
        if "case" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


class Session:
    """The session's rows and skips per suite, written after every case."""

    def __init__(self, config):
        self.device = _device(config)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.quick = _quick(config)
        self.out = config.getoption("--bench-out")
        self.merge = config.getoption("--bench-merge")
        self.profile = config.getoption("--bench-profile")
        self.cudnn_benchmark = config.getoption("--bench-cudnn-benchmark")
        self.copy_gbps = None
        self.suites = {}  # suite -> {"rows": [], "skipped": [], "base": data or None}
        self.written = []
        self._machine = None

    def record(self, case, row=None, reason=None):
        s = self.suites.setdefault(case.suite, {"rows": [], "skipped": [], "base": None})
        if row is not None:
            if case.suite == "copy":
                self.copy_gbps = row["metrics"]["gbps"]
            s["rows"].append(row)
        else:
            s["skipped"].append({"id": case.id, "group": case.group, "provider": case.provider,
                                 "params": dict(case.params), "reason": reason})
        if self.out:
            self._write(case.suite, s)

    def pct_copy_bw(self, gbps):
        return 100 * gbps / self.copy_gbps if self.copy_gbps and gbps else None

    def _write(self, suite, s):
        if self._machine is None:
            self._machine = measure.machine(self.device, self.quick)
        slug = measure.slug(self._machine["device"])
        stem = results.stem(self.out, slug, suite, self.quick, self.cudnn_benchmark)
        if self.merge and s["base"] is None and os.path.exists(stem + ".json"):
            s["base"] = results.load(stem + ".json")
        if self.copy_gbps is None and suite != "copy":  # measured earlier on this device?
            copy = results.stem(self.out, slug, "copy", self.quick)
            rows = results.load(copy + ".json")["rows"] if os.path.exists(copy + ".json") else []
            self.copy_gbps = rows[-1]["metrics"]["gbps"] if rows else None
        run = dict(self._machine)
        if suite != "copy" and self.copy_gbps and any("gbps" in r["metrics"] for r in s["rows"]):
            run["copy_bandwidth_gbps"] = round(self.copy_gbps, 1)
            for r in s["rows"]:
                if r["metrics"].get("gbps") and r["metrics"].get("pct_copy_bw") is None:
                    r["metrics"]["pct_copy_bw"] = self.pct_copy_bw(r["metrics"]["gbps"])
        results.save(stem, suite, run, s["rows"], s["skipped"], s["base"])
        if stem not in self.written:
            self.written.append(stem)


@pytest.fixture(scope="session")
def bench_session(request):
    request.config._packops_bench = Session(request.config)
    return request.config._packops_bench


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_packops_bench", None)
    for stem in session.written if session else ():
        terminalreporter.write_line(f"packops benchmarks: wrote {stem}.json and .md")
