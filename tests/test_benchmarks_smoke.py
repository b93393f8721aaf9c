"""The benchmark machinery works (nothing here asserts speed): the runner
collects every case and runs nothing by accident, tiny cases run through
pytest-benchmark and write the results schema, the training step's case
profiles the trainer's own phases and its breakdown adds up, the pack routes
compute pack_conv, the overhead cases run, compare runs both sides, and the
sanitizer runner finds every driver."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import bench_train_step, breakdown, cases, compare, measure, results  # noqa: E402
from tools import sanitize  # noqa: E402

import packops  # noqa: E402

FAST = ["--benchmark-disable-gc", "--benchmark-min-rounds=1", "--benchmark-max-time=0.001",
        "--benchmark-warmup=off"]


def _pytest(*args, timeout=300):
    """python -m pytest ARGS, from the repository root, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [
        os.environ.get("PYTHONPATH")] if p]))
    env.pop("TRITON_INTERPRET", None)  # tests/conftest.py sets it; a user does not
    env.pop("PACKOPS_BENCH", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _quick(suite):
    return [c for c in cases.all_cases("cpu", quick=True) if c.suite == suite]


def test_every_case_collects_and_nothing_runs_by_accident():
    r = _pytest("benchmarks/", "--bench-quick", "--bench-device", "cpu", "-rs", "-q")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    n = len(cases.all_cases("cpu", quick=True))
    assert f"{n} skipped" in r.stdout and "benchmarks run with --benchmark-only" in r.stdout, \
        r.stdout[-2000:]
    ids = {f"{c.suite}/{c.id}" for c in cases.all_cases("cpu")}
    for case in ("ops/ssim-4x3x192x640-float32-fwd+bwd-cpu", "copy/copy-64MB-torch",
                 "pack-routes/pack1-1x64x192x640-float32-fwd+bwd-folded",
                 "overhead/group_norm_elu-1x16x4x4-fwd+bwd-native", "data/render-192x640-1-thread",
                 "train-step/packnet01-fused+compile", "train-step/main-fused+graph",
                 "monodepth2/warp_loss-12x3x192x640-fwd-packops"):
        assert case in ids, case


def test_tiny_cases_run_and_write_the_results_schema(tmp_path):
    provider = "cpu" if packops.backends()["cpu"].available else "reference"
    r = _pytest("benchmarks/", "--benchmark-only", "--bench-quick", "--bench-device", "cpu",
                "-k", "copy/ or (ssim-1x3x16x32-float32-fwd- and not compile])", "--bench-out",
                str(tmp_path),
                f"--benchmark-json={tmp_path / 'raw.json'}", *FAST)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    raw = {b["extra_info"]["id"]: b for b in json.loads((tmp_path / "raw.json").read_text())[
        "benchmarks"]}
    slug = measure.slug(measure.device_name("cpu"))
    data = results.load(tmp_path / slug / "ops-quick.json")
    assert data["suite"] == "ops" and data["runs"][0]["quick"] and len(data["runs"]) == 1
    rows = {row["id"]: row for row in data["rows"]}
    assert provider in {row["provider"] for row in rows.values()}
    for rid, row in rows.items():  # the same timing, in ms in ours and s in pytest-benchmark's
        assert row["median_ms"] == pytest.approx(raw[rid]["stats"]["median"] * 1e3, rel=1e-12)
        m = row["metrics"]
        assert m["gbps"] > 0 and m["pct_copy_bw"] > 0 and m["max_err"] < 1e-3, row
    assert {s["provider"] for s in data["skipped"]} >= {"triton", "cuda"}
    md = (tmp_path / slug / "ops-quick.md").read_text()
    assert "quick run" in md and "| ssim | 1x3x16x32 | float32 | fwd | reference |" in md
    assert results.render(data) == md
    assert results.load(tmp_path / slug / "copy-quick.json")["rows"][0]["metrics"]["gbps"] > 0


def test_train_step_case_profiles_the_trainers_phases():
    cases.OPTIONS["profile_steps"] = 1
    case = next(c for c in _quick("train-step") if c.provider == "fused")
    run = case.setup(torch.device("cpu"))
    try:
        with run.context():
            first = run.fn()
            m = run.metrics(0.1, first)
    finally:
        run.close()
    assert case.params["model"] == "PackNetTiny" and case.params["batch"] == 1
    assert m["images_per_s"] == pytest.approx(10.0) and m["peak_mem_mb"] > 0
    assert sum(m["breakdown_pct"].values()) == pytest.approx(100.0)
    for cat in ("conv_fwd", "conv_bwd", "packing", "loss", "optimizer"):
        assert m["breakdown_pct"][cat] > 0, (cat, m["breakdown_pct"])
    for phase in breakdown.PHASES:  # packnet/train.py's own ranges, no monkeypatching
        assert m["phase_ms"][phase] > 0, (phase, m["phase_ms"])
    assert "launches_per_step" not in m  # CUDA only
    assert bench_train_step.make_config("packnet01", "reference", "cpu").model == "PackNet01"
    with pytest.raises(cases.Skip, match="CUDA graph"):
        bench_train_step.make_config("main", "fused+graph", "cpu")


def test_breakdown_of_a_profiled_cpu_step_adds_up():
    from torch.profiler import ProfilerActivity, profile, record_function
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    gn = torch.nn.GroupNorm(2, 8)
    w3 = torch.randn(2, 1, 3, 3, 3, requires_grad=True)
    x, w = torch.rand(1, 3, 16, 16), torch.randn(4, 1, 3, 3, 3, requires_grad=True)
    opt = torch.optim.Adam(list(conv.parameters()) + list(gn.parameters()) + [w3])

    def step():
        opt.zero_grad(set_to_none=True)
        p = packops.pack3d(torch.nn.functional.elu(gn(conv(x))), w3, None)  # [1, 64, 8, 8]
        with record_function("packnet.loss"):
            a = torch.sigmoid(p[:, :3])
            loss = packops.ssim(a, a.detach().flip(-1)).mean() + (a * 2).mean()
        loss = loss + torch.nn.functional.conv3d(x[:, None], w, padding=1).sum()
        loss.backward()
        opt.step()

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            with record_function(breakdown.ROOT):
                step()
    b = breakdown.breakdown(prof.events())
    assert b["steps"] == 2 and b["other_threads_us"] == 0
    assert sum(b["us"].values()) == pytest.approx(b["total_us"], rel=1e-6)
    for cat in ("conv_fwd", "conv_bwd", "norm_act", "packing", "loss", "optimizer"):
        assert b["us"][cat] > 0, (cat, b)


def test_pack_routes_compute_pack_conv():
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    seen = set()
    for case in _quick("pack-routes"):
        run = case.setup(torch.device("cpu"))
        with run.context():
            m = run.metrics(1e-3, run.fn())
        assert m["rel_err"] < 1e-12 and m["peak_mem_mb"] >= 0, (case.id, m)
        seen.add(case.provider)
    assert seen == {"reference"} | set(packops.pack.ROUTES)
    # restored: a small call takes the automatic choice again (folded would be forced)
    assert packops.pack.route_for(torch.empty(1, 8, 8, 8), torch.empty(4, 256, 3, 3), 2) == "direct"


def test_overhead_cases_run():
    found = _quick("overhead")
    assert {c.params["op"] for c in found} == {
        "photometric_loss", "ssim", "group_norm_elu", "reproject", "pack3d", "unpack3d",
        "pack_conv"}
    for case in found:
        try:
            run = case.setup(torch.device("cpu"))
        except cases.Skip:
            assert case.provider != "native"
            continue
        with run.context():
            run.fn()


def test_compare_runs_both_sides(capsys):
    rc = compare.main(["--base-tree", ROOT, "--rounds", "1", "--", "--bench-quick",
                       "--bench-device", "cpu", "-k", "data/", *FAST])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "| data/render-32x64-1-thread |" in out


def test_sanitize_runner_finds_every_driver(monkeypatch, capsys):
    here = os.path.join(ROOT, "tools", "sanitize")
    files = {f[:-3] for f in os.listdir(here) if f.endswith(".py") and not f.startswith("_")}
    found = sanitize.drivers()
    assert set(found) == files and {"photometric", "reproject", "pack"} <= files
    monkeypatch.setenv("SANITIZE_OPS", "photometric")
    assert sanitize.main(["--device", "cpu", "reference", "--dtypes", "float32"]) == 0
    assert capsys.readouterr().out.split("\n")[0] == "ok reference photometric torch.float32"
    found["pack"]("reference", torch.float32, "cpu")
    found["reproject"]("reference", torch.float32, "cpu")
