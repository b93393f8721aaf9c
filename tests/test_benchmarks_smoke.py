"""The benchmark machinery works (nothing here times or asserts speed): the
pytest-benchmark suite collects and a tiny case runs through it, the report's
quick path writes its files, the training-step breakdown adds up, the compare
tool runs both sides, and the sanitizer runner finds every driver."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import breakdown, cases, compare, report, train_step  # noqa: E402
from tools import sanitize  # noqa: E402

import packops  # noqa: E402


def _pytest(*args, timeout=300):
    """python -m pytest ARGS on benchmarks/, from the repository root."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [
        os.environ.get("PYTHONPATH")] if p]))
    env.pop("TRITON_INTERPRET", None)  # as a user runs it (tests/conftest.py sets it)
    env.pop("PACKOPS_BENCH", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _tiny_op_id():
    provider = "cpu" if packops.backends()["cpu"].available else "reference"
    return f"ssim-1x3x16x32-float32-fwd-{provider}"


def test_suite_collects_every_case():
    r = _pytest("--collect-only", "-q", "benchmarks/")
    assert r.returncode == 0, r.stdout + r.stderr
    items = cases.items("cuda" if torch.cuda.is_available() else "cpu")
    assert f"{len(items)} tests collected" in r.stdout, r.stdout[-2000:]
    for test in ("test_ops[", "test_pack[", "test_pack_layer[", "test_train_step[", "test_data["):
        assert test in r.stdout, test
    assert "test_train_step[packnet01-fused+compile]" in r.stdout
    assert "test_data[render-192x640-1-thread]" in r.stdout


def test_nothing_runs_without_benchmark_only():
    r = _pytest("-q", "benchmarks/", "--bench-quick", "-k", "render")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout, r.stdout[-2000:]


def test_tiny_case_runs_under_pytest_benchmark(tmp_path):
    out = tmp_path / "bench.json"
    case = _tiny_op_id()
    r = _pytest("benchmarks/", "--benchmark-only", "--bench-quick", "--bench-device", "cpu",
                "-k", case, "--benchmark-disable-gc", "--benchmark-min-rounds=1",
                "--benchmark-max-time=0.01", "--benchmark-warmup=off", f"--benchmark-json={out}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout, r.stdout[-2000:]
    bench = json.loads(out.read_text())["benchmarks"]
    assert [b["name"] for b in bench] == [f"test_ops[{case}]"]
    extra = bench[0]["extra_info"]
    assert extra["provider"] == case.rsplit("-", 1)[1] and extra["device"] == "cpu"
    assert extra["gbps"] > 0 and extra["peak_mem_mb"] >= 0 and extra["max_err"] < 1e-3


def test_report_quick_path(tmp_path, capsys):
    providers = ["reference"] + (["cpu"] if packops.backends()["cpu"].available else [])
    assert report.main(["--quick", "--device", "cpu", "--ops", "ssim", "--providers", *providers,
                        "--reps", "1", "--out", str(tmp_path)]) == 0
    stem = report.results_stem(str(tmp_path), "cpu", "ops", quick=True)
    assert stem.endswith(os.path.join("ops-quick"))
    data = json.loads(open(stem + ".json").read())
    assert data["header"]["quick"] and data["suite"] == "ops"
    assert {r["provider"] for r in data["rows"]} == set(providers)
    assert len(data["rows"]) == 4 * len(providers)  # 2 quick shapes x 2 modes
    assert all(r["op"] == "ssim" and r["median_ms"] > 0 for r in data["rows"])
    md = open(stem + ".md").read()
    assert "quick run" in md and "| ssim | 1x3x16x32 | float32 | fwd |" in md
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(os.path.dirname(stem))]


# ------------------------------------------------------------ breakdown
@pytest.mark.parametrize("name, category", [
    ("aten::conv2d", "conv_fwd"), ("aten::mkldnn_convolution", "conv_fwd"),
    ("aten::convolution_backward", "conv_bwd"), ("aten::native_group_norm_backward", "norm_act"),
    ("aten::elu_", "norm_act"), ("packops::pack3d_fwd", "packing"), ("aten::conv3d", "packing"),
    ("packops::photometric_bwd", "loss"), ("aten::grid_sampler_2d", "loss"),
    ("Optimizer.step#Adam.step", "optimizer"), ("aten::_foreach_mul_", "optimizer"),
    ("aten::copy_", "copy_fill"), ("aten::cat", "copy_fill"), ("aten::add", None),
    (breakdown.LOSS, "loss"), (breakdown.OPTIMIZER, "optimizer"),
])
def test_category_rules(name, category):
    assert breakdown.categorize_name(name) == category


def _profiled(step, n=2):
    from torch.profiler import ProfilerActivity, profile, record_function
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            with record_function(breakdown.ROOT):
                step()
    return breakdown.breakdown(prof.events())


def test_breakdown_adds_up_on_a_tiny_step():
    from torch.profiler import record_function
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    gn = torch.nn.GroupNorm(2, 8)
    w3, b3 = torch.randn(2, 1, 3, 3, 3, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam(list(conv.parameters()) + list(gn.parameters()) + [w3, b3])
    x = torch.rand(1, 3, 16, 16)

    def step():
        opt.zero_grad(set_to_none=True)
        y = torch.nn.functional.elu(gn(conv(x)))
        p = packops.pack3d(y, w3, b3)                  # [1, 64, 8, 8]
        with record_function(breakdown.LOSS):
            a = torch.sigmoid(p[:, :3])
            loss = packops.ssim(a, a.detach().flip(-1)).mean() + (a * 2).mean()
        loss.backward()
        opt.step()

    b = _profiled(step)
    assert b["steps"] == 2
    assert sum(b["us"].values()) == pytest.approx(b["total_us"], rel=1e-6)
    assert sum(breakdown.percentages(b).values()) == pytest.approx(100.0)
    for cat in ("conv_fwd", "conv_bwd", "norm_act", "packing", "loss", "optimizer"):
        assert b["us"][cat] > 0, (cat, b)
    assert b["other_threads_us"] == 0


def test_breakdown_3d_conv_backward_is_packing():
    w = torch.randn(4, 1, 3, 3, 3, requires_grad=True)
    x = torch.rand(1, 1, 4, 8, 8)

    def step():
        torch.nn.functional.conv3d(x, w, padding=1).sum().backward()

    b = _profiled(step)
    assert b["us"]["packing"] > 0
    assert b["us"]["conv_fwd"] == 0 and b["us"]["conv_bwd"] == 0, b


def test_train_step_item_runs_the_trainer_step():
    item = train_step.TrainStepItem("main-quick", "fused", profile_steps=1)
    run = item.prepare("cpu")
    try:
        with run.context():
            run.fn()
        extra = run.extras(100.0)
    finally:
        run.close()
    assert extra["model"] == "PackNetTiny" and extra["batch"] == 1 and extra["ops"] == "fused"
    assert extra["images_per_s"] == pytest.approx(10.0) and extra["peak_mem_mb"] > 0
    assert sum(extra["breakdown_pct"].values()) == pytest.approx(100.0)
    for cat in ("conv_fwd", "conv_bwd", "packing", "loss", "optimizer"):
        assert extra["breakdown_pct"][cat] > 0, (cat, extra["breakdown_pct"])
    assert train_step.make_config("packnet01", "reference", "cpu").model == "PackNet01"


# --------------------------------------------------------------- compare
def test_compare_runs_both_sides(capsys):
    rc = compare.main(["--base-tree", ROOT, "--bench", "report", "--rounds", "1", "--",
                       "--quick", "--device", "cpu", "--ops", "render", "--reps", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "| data/render-32x64-1-thread |" in out


# -------------------------------------------------------------- sanitize
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


def test_pack_routes_quick(tmp_path, capsys):
    """benchmarks.pack_routes times every route and the reference, and each
    route computes pack_conv (float64 error against the reference)."""
    from benchmarks import pack_routes
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    assert pack_routes.main(["--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    slug = report.slug(report.device_name(torch.device("cpu")))
    data = json.load(open(tmp_path / slug / "pack-routes-quick.json"))
    assert [r["route"] for r in data["rows"]] == list(pack_routes.ROUTES)
    for r in data["rows"]:
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0, r
        assert r["rel_err"] < 1e-12, r
    assert packops.pack.ROUTE == "auto"  # restored
    assert "| pack-quick |" in (tmp_path / slug / "pack-routes-quick.md").read_text()
