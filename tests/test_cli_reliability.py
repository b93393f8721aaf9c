"""`packnet` end to end on what a new user (and a fuzzer) runs into: no hang,
no silent data loss, no code from a checkpoint, one clear message and a
non-zero exit for every user error (issue 12).

Every case runs the command in-process (packnet.cli.main) at tiny sizes
(32x32, batch 1, a step or three). A guard turns a hang into a failure.
"""
import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from packnet import cli
from packnet.image import write_image

# a tiny run: 32x32, batch 1, one scale, a log row per step;
# TINY: on 1 synthetic sequence of 4 frames (2 samples)
SMALL = ["--size", "32", "32", "--batch-size", "1", "--set", "progress=false",
         "--set", "num_scales=1", "--set", "log_every=1"]
TINY = SMALL + ["--set", "data_kwargs={num_sequences: 1, frames_per_sequence: 4}"]


@pytest.fixture(autouse=True)
def _no_hang():
    """A command that spins forever fails the test instead of stalling the suite."""
    if not hasattr(signal, "SIGALRM"):  # not on Windows
        yield
        return

    def alarm(signum, frame):
        raise TimeoutError("packnet did not return within 120 s (hang)")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def run(capsys, *argv):
    """cli.main(argv) -> (exit code, stdout, stderr); a Python traceback in the
    output fails the test (only exceptions that escape main propagate)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors, --help
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def make_frames(root, n, size=(32, 32), speed=True):
    """A folder data set: n frames of a texture sliding by one pixel per frame,
    intrinsics.txt and (optionally) speed.txt."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    H, W = size
    base = rng.integers(0, 256, (H, W + n, 3), dtype=np.uint8)
    for i in range(n):
        write_image(str(root / f"f{i:03d}.png"), base[:, i:i + W])
    (root / "intrinsics.txt").write_text(f"{0.6 * W} {0.6 * W} {W / 2 - 0.5} {H / 2 - 0.5}\n")
    if speed:
        (root / "speed.txt").write_text("1.0\n" * n)
    return root


def log_steps(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished 1-step run (synthetic, 32x32): runs/r/checkpoint.pt, log.csv."""
    out = tmp_path_factory.mktemp("runs")
    assert cli.main(["train", "--out-dir", str(out), "--name", "r", "--steps", "1", "--no-eval",
                     *TINY]) == 0
    return out / "r"


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run to change: (out_dir, run_dir)."""
    import shutil
    dst = tmp_path / "runs" / "r"
    shutil.copytree(trained, dst)
    return tmp_path / "runs", dst


# ------------------------------------------------------------ 1. no hang
@pytest.mark.parametrize("case", ["synthetic-batch-4", "synthetic-batch-1000", "folder-3-frames",
                                  "folder-2-frames"])
def test_too_few_samples_for_a_batch_is_refused_at_start(case, tmp_path, capsys):
    out = tmp_path / "runs"
    if case == "synthetic-batch-4":        # 2 samples
        argv, n, bs = ["train", *TINY, "--batch-size", "4"], 2, 4
    elif case == "synthetic-batch-1000":   # the default 20 sequences: 560 samples
        argv, n, bs = ["train", "--size", "32", "32", "--batch-size", "1000"], 560, 1000
    else:
        frames = 3 if case == "folder-3-frames" else 2
        root = make_frames(tmp_path / "video", frames)
        argv = ["train", *SMALL, "--data", "folder", "--data-root", root,
                "--batch-size", "4" if frames == 3 else "1"]
        n, bs = frames - 2, 4 if frames == 3 else 1
    code, _, err = run(capsys, *argv, "--out-dir", out, "--steps", "2")
    assert code == 2
    assert f"{n} usable sample" in err and f"batch_size {bs}" in err
    assert ("--batch-size" in err) == (n > 0)    # lowering it helps only if there is a sample
    if case.startswith("folder"):
        assert f"previous and next frame in the folder, which has {n + 2} frames" in err
    assert not (out / "synthetic-tiny" / "checkpoint.pt").exists()


# ------------------------------------------- 2. folder data has no ground truth
def test_folder_train_and_eval_skip_evaluation_without_depth(tmp_path, capsys):
    root = make_frames(tmp_path / "video", 4)
    code, out, err = run(capsys, "train", *SMALL, "--data", "folder", "--data-root", root,
                         "--out-dir", tmp_path / "runs", "--name", "f", "--steps", "1")
    assert code == 0
    assert "evaluation skipped" in out and "no ground-truth depth" in out
    ckpt = tmp_path / "runs" / "f" / "checkpoint.pt"
    code, out, err = run(capsys, "eval", "--checkpoint", ckpt, "--data", "folder", "--data-root",
                         root, "--device", "cpu")
    assert code == 0 and "evaluation skipped" in out and "no ground-truth depth" in out

    # with a depth folder (one <frame>.npy per frame, metres) it evaluates
    (root / "depth").mkdir()
    for i in range(4):
        np.save(root / "depth" / f"f{i:03d}.npy", np.full((32, 32), 5.0, np.float32))
    code, out, err = run(capsys, "eval", "--checkpoint", ckpt, "--data", "folder", "--data-root",
                         root, "--device", "cpu")
    assert code == 0 and "abs_rel: metric" in out and "images: 2" in out


# ---------------------------------------- 3. an existing run is not destroyed
def test_existing_run_is_refused_without_resume_or_overwrite(run_copy, capsys):
    out, run_dir = run_copy
    before = {f: (run_dir / f).read_bytes() for f in ("checkpoint.pt", "log.csv")}
    code, _, err = run(capsys, "train", *TINY, "--out-dir", out, "--name", "r", "--steps", "1",
                       "--no-eval")
    assert code == 2
    assert "already exists" in err and str(run_dir) in err
    assert "--resume" in err and "--name" in err and "--overwrite" in err
    assert {f: (run_dir / f).read_bytes() for f in before} == before

    code, _, err = run(capsys, "train", *TINY, "--out-dir", out, "--name", "r", "--steps", "1",
                       "--no-eval", "--overwrite")
    assert code == 0 and log_steps(run_dir) == [1]


# ---------------------------------------------------- 4. resume and changes
def test_resume_refuses_fixed_settings(run_copy, capsys):
    out, run_dir = run_copy
    before = (run_dir / "checkpoint.pt").read_bytes()
    code, _, err = run(capsys, "train", "--out-dir", out, "--name", "r", "--resume", "--no-eval",
                       "--batch-size", "2", "--size", "64", "64", "--set", "seed=3")
    assert code == 2
    assert "batch_size 1 -> 2" in err and "size (32, 32) -> (64, 64)" in err
    assert "seed 0 -> 3" in err
    assert "--name" in err
    assert (run_dir / "checkpoint.pt").read_bytes() == before


def test_resume_applies_lr_and_steps_to_the_scheduler(run_copy, capsys):
    """Only the changed settings are given: the rest comes from the run's checkpoint."""
    out, run_dir = run_copy
    code, text, err = run(capsys, "train", "--out-dir", out, "--name", "r", "--resume",
                          "--no-eval", "--steps", "3", "--lr", "1e-3")
    assert code == 0, err
    assert "resume: lr 0.0005 -> 0.001" in text and "resume: steps 1 -> 3" in text
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 3 and ck["config"]["lr"] == 1e-3 and ck["config"]["size"] == (32, 32)
    sched = ck["scheduler"]
    assert sched["step_size"] == 2 and sched["base_lrs"] == [1e-3]   # round(3 * 0.6)
    # 3 optimizer steps, StepLR(2, 0.5): one decay of the new lr
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(5e-4, rel=1e-12)
    assert log_steps(run_dir) == [1, 2, 3]


# ------------------------------------------ 5. no code from a checkpoint
class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil_checkpoint(path, trained, marker):
    ck = torch.load(trained / "checkpoint.pt", weights_only=True)
    ck["extra"] = _Payload(marker)
    torch.save(ck, path)
    return path


def test_checkpoint_with_code_is_refused(trained, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", trained, marker)
    imgs = make_frames(tmp_path / "imgs", 1, speed=False)
    runs = tmp_path / "runs"
    (runs / "e").mkdir(parents=True)
    _evil_checkpoint(runs / "e" / "checkpoint.pt", trained, marker)
    for argv in (["infer", imgs, "--checkpoint", evil, "--out", tmp_path / "o"],
                 ["eval", "--checkpoint", evil, "--device", "cpu"],
                 ["export-onnx", "--checkpoint", evil, "--out", tmp_path / "x.onnx"],
                 ["train", "--out-dir", runs, "--name", "e", "--resume", "--no-eval"]):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert "evil.pt" in err or "checkpoint.pt" in err
        assert "posix.mkdir" in err and "--trust-checkpoint" in err
        assert not marker.exists(), f"{argv[0]} ran code from the checkpoint"


def test_trust_checkpoint_opts_in_to_the_full_unpickler(trained, tmp_path, capsys):
    import fractions
    ck = torch.load(trained / "checkpoint.pt", weights_only=True)
    ck["note"] = fractions.Fraction(1, 3)   # harmless, but not loadable with weights_only
    torch.save(ck, tmp_path / "old.pt")
    imgs = make_frames(tmp_path / "imgs", 1, speed=False)
    code, _, err = run(capsys, "infer", imgs, "--checkpoint", tmp_path / "old.pt", "--out",
                       tmp_path / "o")
    assert code == 2 and "fractions.Fraction" in err
    code, out, err = run(capsys, "infer", imgs, "--checkpoint", tmp_path / "old.pt", "--out",
                         tmp_path / "o", "--trust-checkpoint")
    assert code == 0 and "full unpickler" in err and "wrote 2 files" in out


# ---------------------------------------------------------- 6. divergence
def test_divergence_is_skipped_counted_and_stops_cleanly(tmp_path, capsys):
    # GroupNorm makes every block scale-invariant, so with the fused group_norm_elu
    # (a two-pass variance) --lr 1e6 trains on; 1e20 overflows float32 for certain
    code, out, err = run(capsys, "train", *TINY, "--out-dir", tmp_path, "--steps", "6",
                         "--no-eval", "--lr", "1e20", "--set", "max_bad_steps=2")
    assert code == 1
    assert "step skipped" in out + err
    assert "stopping at step" in err and "2 steps in a row" in err and "--lr" in err


# -------------------------------------------------------- 7. bad settings
BAD_SETTINGS = [
    (["--set", "ckpt_every=0"], ["ckpt_every", "0", ">= 1"]),
    (["--set", "log_every=0"], ["log_every", "0", ">= 1"]),
    (["--set", "lr=abc"], ["lr", "'abc'", "number"]),
    (["--set", "batch_size=2.5"], ["batch_size", "2.5", "integer"]),
    (["--set", "size=33x96"], ["size", "33", "multiples of 32"]),
    (["--set", "size=big"], ["size", "'big'", "HxW"]),
    (["--set", "amp=true", "--device", "cpu"], ["amp", "CUDA"]),
    (["--set", "amp=maybe"], ["amp", "'maybe'", "true or false"]),
    (["--set", "nope=1"], ["unknown setting", "nope"]),
    (["--set", "lr"], ["--set", "KEY=VALUE", "'lr'"]),
    (["--set", "data_kwargs={a: [}"], ["data_kwargs", "YAML"]),
    (["--set", "data_kwargs={bogus: 1}"], ["data_kwargs", "bogus"]),
    (["--set", "model_kwargs=[1]"], ["model_kwargs", "mapping"]),
    (["--model", "Nope"], ["model", "'Nope'", "PackNetTiny"]),
    (["--size", "33", "96"], ["size", "(33, 96)", "multiples of 32"]),
    (["--lr", "-1"], ["lr", "-1", "> 0"]),
    (["--lr", "nan"], ["lr", "nan", "> 0"]),
    (["--steps", "0"], ["steps", "0", ">= 1"]),
    (["--set", "ops=fast"], ["ops", "'fast'", "fused", "reference"]),
    (["--device", "gpu7"], ["device", "'gpu7'"]),
    (["--data", "folder"], ["folder", "--data-root"]),
    (["--name", "../x"], ["name", "'../x'"]),
]


@pytest.mark.parametrize("flags,fragments", BAD_SETTINGS,
                         ids=[" ".join(f) for f, _ in BAD_SETTINGS])
def test_bad_settings_are_refused_before_any_work(flags, fragments, tmp_path, capsys):
    code, out, err = run(capsys, "train", "--out-dir", tmp_path / "runs", *flags)
    assert code == 2
    assert err.startswith("packnet train: error:")
    for frag in fragments:
        assert frag in err, (frag, err)
    assert not (tmp_path / "runs").exists()


def test_bad_files_given_to_train_are_named(tmp_path, capsys):
    cases = [(["--config", tmp_path / "missing.yaml"], "missing.yaml"),
             (["--data", "folder", "--data-root", tmp_path / "nowhere"], "nowhere")]
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    cases.append((["--config", tmp_path / "list.yaml"], "list.yaml"))
    (tmp_path / "broken.yaml").write_text("lr: [\n")
    cases.append((["--config", tmp_path / "broken.yaml"], "broken.yaml"))
    for flags, name in cases:
        code, _, err = run(capsys, "train", "--out-dir", tmp_path / "runs", *flags)
        assert code == 2 and name in err, err


def test_numbers_and_sizes_in_set_parse_by_the_field_type():
    args = cli.build_parser().parse_args(["train", "--set", "lr=1e-3", "--set", "size=32x96",
                                          "--set", "batch_size=2.0", "--set", "name=2024",
                                          "--set", "augment=yes"])
    cfg = cli._config(args)
    assert cfg.lr == 1e-3 and type(cfg.lr) is float
    assert cfg.size == (32, 96) and cfg.batch_size == 2 and type(cfg.batch_size) is int
    assert cfg.name == "2024" and cfg.augment is True


# ---------------------------------------------------- 8. corrupt checkpoints
@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "not-a-dict"])
def test_corrupt_checkpoint_is_named(kind, trained, tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "c").mkdir(parents=True)
    path = runs / "c" / "checkpoint.pt"
    good = (trained / "checkpoint.pt").read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, I am not a checkpoint\n")
    elif kind == "truncated":
        path.write_bytes(good[:len(good) // 2])
    else:
        torch.save([1, 2, 3], path)
    imgs = make_frames(tmp_path / "imgs", 1, speed=False)
    for argv in (["infer", imgs, "--checkpoint", path, "--out", tmp_path / "o"],
                 ["eval", "--checkpoint", path, "--device", "cpu"],
                 ["train", "--out-dir", runs, "--name", "c", "--resume", "--no-eval"]):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert str(path) in err and ("cannot read" in err or "not a packnet checkpoint" in err)


def test_missing_checkpoint_is_named(tmp_path, capsys):
    code, _, err = run(capsys, "eval", "--checkpoint", tmp_path / "nope.pt")
    assert code == 2 and "nope.pt" in err and "not found" in err


# ------------------------------------------------------ 9. kill leftovers
def _dead_pid():
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_resume_after_a_kill_cleans_temporaries_and_replayed_log_rows(run_copy, capsys):
    """A kill after step 2 was logged but before its checkpoint: the orphan
    temporary goes, and step 2's row is written once, by the resumed run."""
    out, run_dir = run_copy
    orphan = run_dir / f"checkpoint.pt.tmp.{_dead_pid()}"
    orphan.write_bytes(b"half a checkpoint")
    with open(run_dir / "log.csv", "a") as f:
        f.write("2,99.0,99.0,99.0,99.0,0.0005,1.00\n")
    assert log_steps(run_dir) == [1, 2]
    code, text, err = run(capsys, "train", "--out-dir", out, "--name", "r", "--resume",
                          "--no-eval", "--steps", "2")
    assert code == 0, err
    assert not orphan.exists() and orphan.name in text + err
    assert log_steps(run_dir) == [1, 2]
    rows = list(csv.DictReader(open(run_dir / "log.csv")))
    assert float(rows[1]["loss"]) != 99.0


def test_sigkill_then_resume_keeps_one_log_row_per_step(tmp_path, capsys):
    """A real SIGKILL once step 1 is logged (checkpoints every 2 steps, so
    step 1 is not saved): resuming replays what the checkpoint lacks and the
    log has each step once."""
    import time
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run_dir = tmp_path / "runs" / "k"
    p = subprocess.Popen([sys.executable, "-m", "packnet", "train", *TINY, "--out-dir",
                          str(tmp_path / "runs"), "--name", "k", "--steps", "1000", "--no-eval",
                          "--set", "ckpt_every=2"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 100
        while not ((run_dir / "log.csv").exists() and log_steps(run_dir)):
            if time.time() > deadline or p.poll() is not None:
                pytest.fail("the training subprocess logged no step in time")
            time.sleep(0.05)
    finally:
        p.kill()
        p.wait()
    at_kill = log_steps(run_dir)[-1]
    # the same command line (a run killed before its first checkpoint has no saved settings)
    code, _, err = run(capsys, "train", *TINY, "--out-dir", tmp_path / "runs", "--name", "k",
                       "--resume", "--no-eval", "--steps", str(at_kill + 1),
                       "--set", "ckpt_every=2")
    assert code == 0, err
    assert log_steps(run_dir) == list(range(1, at_kill + 2))
    assert not [f for f in os.listdir(run_dir) if ".tmp." in f]


# ------------------------------------------------- 14. infer on a directory
def test_infer_skips_unreadable_images_and_fails_at_the_end(trained, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    d = make_frames(tmp_path / "imgs", 1, speed=False)          # f000.png
    (d / "bad.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(d / "c.bmp")
    (d / "dir.png").mkdir()                                      # a directory, not an image
    out = tmp_path / "o"
    code, text, err = run(capsys, "infer", d, "--checkpoint", trained / "checkpoint.pt",
                          "--out", out)
    assert code == 1
    assert "bad.png" in err and "skipping" in err and "dir.png" not in err
    assert "wrote 4 files" in text
    assert sorted(os.listdir(out)) == ["c_depth.npy", "c_depth.png", "f000_depth.npy",
                                       "f000_depth.png"]


# ------------------------------- issue 24, 1. every seed the config takes
def test_a_large_seed_trains_with_augmentation(tmp_path, capsys):
    """seed=20240101 with augment overflowed the augmentation's generator seed."""
    code, out, err = run(capsys, "train", *TINY, "--out-dir", tmp_path, "--steps", "2",
                         "--no-eval", "--set", "preview_every=0", "--set", "seed=20240101",
                         "--set", "augment=true")
    assert code == 0, err
    assert log_steps(tmp_path / "synthetic-tiny") == [1, 2]


def test_sub_seeds_keep_their_values_and_wrap_past_64_bits():
    from packnet.config import TrainConfig
    from packnet.data import SyntheticDriving
    from packnet.train import _augment, _batches, _sub_seed
    # the values every seed that trained before has always had
    assert _sub_seed(100003, 7, 3) == 7 * 100003 + 3
    assert _sub_seed(1000003, 7, 3, 11) == (7 * 1000003 + 3) * 1000003 + 11
    assert _sub_seed(1000003, 2 ** 64 - 1, 5, 9) < 2 ** 64
    data = SyntheticDriving("train", (32, 32), num_sequences=1, frames_per_sequence=4)
    for seed in (0, 20240101, 2 ** 63, 2 ** 64 - 1):   # the largest the config takes
        cfg = TrainConfig(seed=seed, batch_size=1, augment=True, size=(32, 32))
        batch = next(_batches(data, cfg, 0, 1, epoch=12345))
        assert batch["rgb"].shape == (1, 3, 32, 32)
        assert "jitter" in _augment(data[0], cfg, 12345, 10 ** 6)
    TrainConfig(seed=2 ** 64 - 1).validate()
    with pytest.raises(ValueError, match=r"seed = 18446744073709551616: must be an integer "
                                         r"from 0 to 2\*\*64 - 1"):
        TrainConfig(seed=2 ** 64).validate()


# ------------------------- issue 24, 2. pictures never lose a run's results
def test_a_narrow_test_strip_draws_and_the_last_line_lists_what_exists(tmp_path, capsys):
    """32x32 with two test frames: the strip is 136 pixels wide, narrower than
    the colour bar's title and bar; no previews with preview_every=0."""
    code, out, err = run(capsys, "train", *TINY, "--out-dir", tmp_path, "--steps", "1",
                         "--set", "preview_every=0")
    assert code == 0, err
    run_dir = tmp_path / "synthetic-tiny"
    assert (run_dir / "summary.json").is_file() and (run_dir / "test-strip.png").is_file()
    assert not (run_dir / "previews").exists()
    assert out.strip().splitlines()[-1] == (f"wrote {run_dir}/ (checkpoint.pt, log.csv, "
                                            f"test-strip.png, summary.json)")


def test_a_picture_that_cannot_be_drawn_is_a_warning(tmp_path, capsys, monkeypatch):
    from packnet import visualize

    def broken(*args, **kwargs):
        raise ValueError("could not broadcast input array")
    monkeypatch.setattr(visualize, "test_strip", broken)
    monkeypatch.setattr(visualize, "labelled_preview", broken)
    code, out, err = run(capsys, "train", *TINY, "--out-dir", tmp_path, "--steps", "2",
                         "--set", "preview_every=1")
    assert code == 0, err
    run_dir = tmp_path / "synthetic-tiny"
    assert (run_dir / "summary.json").is_file() and log_steps(run_dir) == [1, 2]
    assert "warning: could not write" in out and "test-strip.png" in out
    assert "step_0000001.png" in out and "could not broadcast" in out
    assert out.strip().splitlines()[-1] == (f"wrote {run_dir}/ (checkpoint.pt, log.csv, "
                                            f"summary.json)")


# ------------------ issue 24, 5, 10, 11. infer: every image, every output kept
def _png(path, h=32, w=32, value=0):
    rng = np.random.default_rng(value)
    write_image(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path


def test_infer_goes_on_after_an_image_that_fails_to_process(trained, tmp_path, capsys,
                                                            monkeypatch):
    """A 6000x4000 photo stopped the loop in the colouriser (torch.quantile's
    2**24 limit): any error on one image is reported and the rest are written."""
    import packnet.infer
    real = packnet.infer.colorize_depth

    def colorize(x, *args, **kwargs):
        if x.shape[-1] == 40:
            raise RuntimeError("quantile() input tensor is too large")
        return real(x, *args, **kwargs)
    monkeypatch.setattr(packnet.infer, "colorize_depth", colorize)
    d = tmp_path / "imgs"
    d.mkdir()
    _png(d / "a.png"), _png(d / "big.png", w=40), _png(d / "c.png")
    out = tmp_path / "o"
    code, text, err = run(capsys, "infer", d, "--checkpoint", trained / "checkpoint.pt",
                          "--out", out)
    assert code == 1
    assert f"skipping {d / 'big.png'}: RuntimeError: quantile() input tensor is too large" in err
    assert "1 image(s) failed" in err and "wrote 4 files" in text
    assert sorted(os.listdir(out)) == ["a_depth.npy", "a_depth.png", "c_depth.npy",
                                       "c_depth.png"]


def test_infer_refuses_two_inputs_that_would_write_one_output(trained, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    _png(d / "a.png"), _png(d / "a.PNG", value=1)
    out = tmp_path / "o"
    code, text, err = run(capsys, "infer", d, "--checkpoint", trained / "checkpoint.pt",
                          "--out", out)
    assert code == 2 and err.count("\n") == 1
    assert f"{d / 'a.PNG'} and {d / 'a.png'} would both be written as" in err
    assert not out.exists() or not os.listdir(out)
    # a shared stem with different extensions: one output per input
    (d / "a.PNG").rename(d / "a.ppm")
    pytest.importorskip("PIL.Image")
    code, text, err = run(capsys, "infer", d, "--checkpoint", trained / "checkpoint.pt",
                          "--out", out)
    assert code == 0 and "wrote 4 files" in text
    assert sorted(os.listdir(out)) == ["a_png_depth.npy", "a_png_depth.png", "a_ppm_depth.npy",
                                       "a_ppm_depth.png"]


def test_output_names_are_distinct_or_refused(tmp_path):
    from packnet.infer import output_stems
    assert output_stems(["x/a.png", "x/b.png"], "o") == ["a", "b"]
    assert output_stems(["x/a.png", "x/A.jpg"], "o") == ["a_png", "A_jpg"]
    for files in (["x/a.png", "y/a.png"], ["x/a.png", "x/a.jpg", "x/a_png.bmp"]):
        with pytest.raises(ValueError, match="would both be written as"):
            output_stems(files, "o")
    with pytest.raises(ValueError, match="would replace the input"):
        output_stems([str(tmp_path / "a.png"), str(tmp_path / "a_depth.png")], str(tmp_path))


def test_infer_in_place_leaves_its_own_outputs_out(trained, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    _png(d / "a.png")
    for _ in range(2):
        code, text, err = run(capsys, "infer", d, "--checkpoint", trained / "checkpoint.pt",
                              "--out", d)
        assert code == 0, err
        assert "wrote 2 files" in text
    assert "left out 1 file(s) named *_depth.png" in err
    assert sorted(os.listdir(d)) == ["a.png", "a_depth.npy", "a_depth.png"]
    os.remove(d / "a.png")
    code, text, err = run(capsys, "infer", d, "--checkpoint", trained / "checkpoint.pt",
                          "--out", d)
    assert code == 2 and "no images other than 1 earlier output(s) of infer" in err


# ------------------------- issue 24, low. a folder of two frame sizes
def test_a_folder_of_two_frame_sizes_is_refused_at_start(tmp_path, capsys):
    root = make_frames(tmp_path / "video", 4)
    write_image(str(root / "f004.png"), np.zeros((32, 64, 3), np.uint8))
    (root / "speed.txt").write_text("1.0\n" * 5)
    code, _, err = run(capsys, "train", *SMALL, "--data", "folder", "--data-root", root,
                       "--out-dir", tmp_path / "runs", "--steps", "8")
    assert code == 2 and err.count("\n") == 1
    assert "f004.png: frame size 32x64 differs from" in err and "f000.png's 32x32" in err
    assert not list((tmp_path / "runs").rglob("log.csv"))   # refused before the first step


# ------------------------------------------------ 15. export without onnx
def test_export_without_onnx_says_what_to_install(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)   # import onnx -> ImportError
    code, _, err = run(capsys, "export-onnx", "--checkpoint", trained / "checkpoint.pt", "--out",
                       tmp_path / "x.onnx", "--size", "32", "32")
    assert code == 2 and "pip install onnx onnxruntime" in err


# --------------------------------------------------------------- CLI help
def _subparsers():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices


@pytest.mark.parametrize("command", ["train", "eval", "infer", "export-onnx"])
def test_every_option_has_help_with_its_default(command, capsys):
    sp = _subparsers()[command]
    for action in sp._actions:
        if action.dest == "help":
            continue
        assert action.help and len(action.help) > 10, (command, action.dest)
        if action.option_strings:
            assert "default" in action.help, (command, action.option_strings, action.help)
    code, text, _ = run(capsys, command, "--help")
    assert code == 0 and "default" in text


def test_help_points_to_the_settings(capsys):
    from packnet.train import TrainConfig
    import dataclasses
    code, text, _ = run(capsys, "train", "--help")
    assert "--list-settings" in text and "TrainConfig" in text
    assert f"(default: {TrainConfig().steps})" in text        # --steps
    code, text, _ = run(capsys, "train", "--list-settings")
    assert code == 0
    for f in dataclasses.fields(TrainConfig):
        assert f"\n{f.name} " in "\n" + text, f.name


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run([sys.executable, "-m", "packnet", "train", "--set", "ckpt_every=0",
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "ckpt_every" in p.stderr, p.stderr


# ============================================ issue 24: reliability, round two
# ------------------------------------------- 13. nested settings, 3. KITTI splits
BAD_NESTED = [
    (["--set", "data_kwargs={fps: 0}"], ["data_kwargs fps = 0", "> 0"]),
    (["--set", "data_kwargs={fps: fast}"], ["data_kwargs fps = 'fast'", "number"]),
    (["--set", "data_kwargs={fps: .nan}"], ["data_kwargs fps = nan", "finite"]),
    (["--set", "data_kwargs={context: [a, b]}"], ["data_kwargs context", "non-zero integer"]),
    (["--set", "model_kwargs={init_depth: ten}"], ["model_kwargs init_depth = 'ten'"]),
    (["--set", "model_kwargs={dropout: half}"], ["model_kwargs dropout = 'half'"]),
    (["--data", "folder", "--data-root", ".", "--set", "data_kwargs={context: [0, 1]}"],
     ["data_kwargs context = [0, 1]", "non-zero"]),
    (["--data", "kitti", "--data-root", ".", "--set", "data_kwargs={split_files: [a, b]}"],
     ["data_kwargs split_files = ['a', 'b']", "mapping"]),
]


@pytest.mark.parametrize("flags,fragments", BAD_NESTED, ids=[" ".join(f) for f, _ in BAD_NESTED])
def test_bad_nested_settings_are_refused_before_any_work(flags, fragments, tmp_path, capsys):
    code, out, err = run(capsys, "train", "--out-dir", tmp_path / "runs", "--steps", "1",
                         "--no-eval", "--set", "progress=false", *flags)
    assert code == 2 and err.startswith("packnet train: error:") and err.count("\n") == 1
    for frag in fragments:
        assert frag in err, (frag, err)
    assert not (tmp_path / "runs").exists()


def test_kitti_split_files_without_a_test_entry_are_refused_at_start(tmp_path, capsys):
    (tmp_path / "train.txt").write_text("")
    code, _, err = run(capsys, "train", "--out-dir", tmp_path / "runs", "--steps", "1",
                       "--data", "kitti",
                       "--data-root", tmp_path,
                       "--set", f"data_kwargs={{split_files: {{train: {tmp_path / 'train.txt'}}}}}")
    assert code == 2
    assert "split_files" in err and "no test entry" in err and "--no-eval" in err
    assert not (tmp_path / "runs").exists()


# ------------------------------------------- 4. eval options the data set does not take
def test_eval_refuses_options_the_data_set_does_not_take(trained, tmp_path, capsys):
    ckpt = trained / "checkpoint.pt"
    for flag, value in (("--data-root", tmp_path), ("--split-file", tmp_path / "s.txt")):
        code, out, err = run(capsys, "eval", "--checkpoint", ckpt, "--device", "cpu", flag, value)
        assert code == 2 and err.count("\n") == 1, err
        assert flag in err and "synthetic data is built in" in err, err
    root = make_frames(tmp_path / "video", 4)
    code, out, err = run(capsys, "eval", "--checkpoint", ckpt, "--device", "cpu", "--data",
                         "folder", "--data-root", root, "--split-file", tmp_path / "s.txt")
    assert code == 2 and "--split-file" in err and "folder data" in err
    for data in (["--data", "folder", "--data-root", root], []):
        code, out, err = run(capsys, "eval", "--checkpoint", ckpt, "--device", "cpu", *data,
                             "--split", "bogus")
        assert code == 2 and "--split 'bogus'" in err and "train, val, test" in err, err


def test_eval_json_to_an_unwritable_path_fails_before_the_evaluation(trained, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for path, why in ((tmp_path / "file" / "m.json", "is not a directory"),
                      (tmp_path / "nowhere" / "m.json", "does not exist"),
                      (tmp_path, "is a directory")):
        code, out, err = run(capsys, "eval", "--checkpoint", trained / "checkpoint.pt",
                             "--device", "cpu", "--json", path)
        assert code == 2 and "--json" in err and why in err, err
        assert "abs_rel" not in out     # refused before evaluating


# ------------------------------------------------------ low: config files
def test_config_that_is_a_directory_is_named_as_one(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--out-dir", tmp_path / "runs", *TINY, "--steps", "1",
                       "--no-eval", "--config", tmp_path)
    assert code == 2 and "is a directory" in err and "not found" not in err


def test_duplicate_yaml_keys_are_refused_naming_key_and_line(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("lr: 1e-3\nsteps: 5\nlr: 2e-4\n")
    code, _, err = run(capsys, "train", "--out-dir", tmp_path / "runs", *TINY, "--no-eval",
                       "--config", tmp_path / "run.yaml")
    assert code == 2 and "run.yaml" in err
    assert "duplicate key 'lr' on line 3 (first on line 1)" in err, err
    code, _, err = run(capsys, "train", "--out-dir", tmp_path / "runs", *TINY, "--steps", "1",
                       "--no-eval", "--set", "data_kwargs={fps: 5, fps: 6}")
    assert code == 2 and "duplicate key 'fps'" in err, err
    # YAML merge keys may still be overridden
    import yaml

    from packnet.config import yaml_loader
    doc = yaml.load("a: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n", Loader=yaml_loader())
    assert doc["c"] == {"x": 3, "y": 2}
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------- 12. strict JSON when a metric is NaN
def _strict(path):
    """json.loads that refuses NaN / Infinity, as strict parsers (JavaScript, jq) do."""
    def refuse(token):
        raise ValueError(f"{path}: bare {token} is not JSON")
    return json.loads(open(path).read(), parse_constant=refuse)


def test_summary_and_eval_json_are_strict_json_when_a_metric_is_nan(tmp_path, capsys):
    """Depth files of zeros (no ground truth anywhere): every depth metric is NaN.
    (64x64: at 32x32 the test strip fails, item 2, fixed separately.)"""
    root = make_frames(tmp_path / "video", 4, size=(64, 64))
    (root / "depth").mkdir()
    for i in range(4):
        np.save(root / "depth" / f"f{i:03d}.npy", np.zeros((64, 64), np.float32))
    code, out, err = run(capsys, "train", *SMALL, "--size", "64", "64", "--data", "folder",
                         "--data-root", root, "--out-dir", tmp_path / "runs", "--name", "n",
                         "--steps", "1")
    assert code == 0, err
    summary = _strict(tmp_path / "runs" / "n" / "summary.json")
    assert summary["eval"]["metric"]["abs_rel"] is None and summary["eval"]["n"] == 0
    assert summary["non_finite"]["eval.metric.abs_rel"] == "nan"
    assert "no evaluated image had a valid ground-truth pixel" in summary["note"]
    assert "eval.metric.abs_rel" in out and "written as null" in out
    m = tmp_path / "m.json"
    code, out, err = run(capsys, "eval", "--checkpoint", tmp_path / "runs" / "n" / "checkpoint.pt",
                         "--device", "cpu", "--json", m)
    assert code == 0, err
    got = _strict(m)
    assert got["eval"]["median_scaled"]["rmse"] is None and got["eval"]["scale"] is None
    assert "eval.median_scaled.rmse" in got["non_finite"] and "note" in got


# ------------------------------------------------------- 8. PACKOPS_BACKEND
def _packnet(env_extra, *argv, timeout=240):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env_extra)
    return subprocess.run([sys.executable, "-m", "packnet", *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_train_runs_on_the_backend_packops_backend_names(tmp_path):
    """PACKOPS_BACKEND picks the backend of a fused run (the summary names the one
    that ran); --ops reference wins over it; an unknown name is refused at start."""
    runs = tmp_path / "runs"
    p = _packnet({"PACKOPS_BACKEND": "bogus"}, "train", *TINY, "--out-dir", runs, "--steps", "1",
                 "--no-eval")
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "PACKOPS_BACKEND='bogus'" in p.stderr and "not a packops backend" in p.stderr
    assert not runs.exists()
    for name, env, flags, want in (("env", "reference", [], "reference"),
                                   ("ops", "cpu", ["--ops", "reference"], "reference")):
        p = _packnet({"PACKOPS_BACKEND": env}, "train", *TINY, "--out-dir", runs, "--name", name,
                     "--steps", "1", "--no-eval", *flags)
        assert p.returncode == 0, p.stderr
        prov = json.load(open(runs / name / "summary.json"))["provenance"]
        assert prov["backend"] == want and prov["backend_requested"] == want, (name, prov)
    if not torch.cuda.is_available():   # a backend that cannot run here: refused, saying why
        p = _packnet({"PACKOPS_BACKEND": "cuda"}, "train", *TINY, "--out-dir", runs,
                     "--name", "c", "--steps", "1", "--no-eval")
        assert p.returncode == 2 and "PACKOPS_BACKEND='cuda'" in p.stderr, p.stderr
        assert "not available here" in p.stderr or "runs on" in p.stderr


def test_trainer_uses_the_requested_backend(tmp_path):
    """The backend in effect inside the training loop is the requested one."""
    import packops
    from packnet.config import TrainConfig
    from packnet.train import Trainer
    seen = []
    cfg = TrainConfig(out_dir=str(tmp_path), name="b", size=(32, 32), batch_size=1, steps=1,
                      num_scales=1, progress=False, preview_every=0,
                      data_kwargs={"num_sequences": 1, "frames_per_sequence": 4})
    old = packops.get_backend()
    packops.set_backend("reference")
    try:
        tr = Trainer(cfg, log=lambda m: None)
        step = tr.train_step
        tr.train_step = lambda batch: (seen.append(packops.get_backend()), step(batch))[1]
        tr.fit()
    finally:
        packops.set_backend(old)
    assert tr.backend == "reference" and seen == ["reference"]


# ------------------------------------------------------- 6. one writer per run
def _start_training(runs, name, steps):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-m", "packnet", "train", *TINY, "--out-dir",
                             str(runs), "--name", name, "--steps", str(steps), "--no-eval",
                             "--set", "ckpt_every=2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_run_being_trained_is_locked_and_a_killed_holder_is_taken_over(tmp_path, capsys):
    """A second writer (a new run of the same name, --resume, --overwrite) is
    refused naming the run and the pid while another process trains it; after
    a SIGKILL the lock left behind is recognised as stale and taken over."""
    import time
    runs, run_dir = tmp_path / "runs", tmp_path / "runs" / "k"
    p = _start_training(runs, "k", 1000)
    try:
        deadline = time.time() + 100
        while not ((run_dir / "log.csv").exists() and log_steps(run_dir)):
            if time.time() > deadline or p.poll() is not None:
                pytest.fail(f"the training subprocess logged no step in time: {p.stderr.read()}")
            time.sleep(0.05)
        assert (run_dir / "train.lock").read_text().strip() == str(p.pid)
        for extra in ([], ["--resume"], ["--overwrite"]):
            code, _, err = run(capsys, "train", *TINY, "--out-dir", runs, "--name", "k",
                               "--steps", "3", "--no-eval", *extra)
            assert code == 2 and err.count("\n") == 1, (extra, err)
            assert "run 'k'" in err and "in use" in err and f"process {p.pid}" in err, err
        assert p.poll() is None and log_steps(run_dir)[0] == 1   # still training, log kept
    finally:
        p.kill()
        p.wait()
    assert (run_dir / "train.lock").read_text().strip() == str(p.pid)   # left by the kill
    at_kill = log_steps(run_dir)[-1]
    code, out, err = run(capsys, "train", *TINY, "--out-dir", runs, "--name", "k", "--resume",
                         "--no-eval", "--steps", str(at_kill + 1), "--set", "ckpt_every=2")
    assert code == 0, err
    assert f"process {p.pid} no longer holds this run" in out and "taken over" in out
    assert log_steps(run_dir) == list(range(1, at_kill + 2))
    assert not (run_dir / "train.lock").exists()     # released at the end


def test_the_same_run_started_twice_at_once_is_written_by_one(tmp_path):
    runs = tmp_path / "runs"
    procs = [_start_training(runs, "twice", 2) for _ in range(2)]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(e for code, e in results if code == 2)
    assert "'twice'" in err and ("in use" in err or "already exists" in err), err
    assert log_steps(runs / "twice") == [1, 2]


# ------------------------------------------------ 7. a resume with nothing to do
def _snapshot(run_dir):
    """Every file of a run with its bytes and modification time."""
    out = {}
    for dirpath, _, files in os.walk(run_dir):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, run_dir)] = (open(p, "rb").read(), os.stat(p).st_mtime_ns)
    return out


def test_resume_with_nothing_to_do_says_so_and_changes_nothing(run_copy, capsys):
    out, run_dir = run_copy
    first = json.load(open(run_dir / "summary.json"))
    before = _snapshot(run_dir)
    for extra in (["--no-eval"], [], ["--steps", "1", "--no-eval"]):
        code, text, err = run(capsys, "train", "--out-dir", out, "--name", "r", "--resume", *extra)
        assert code == 0, err
        assert "is at step 1 of 1: nothing to train" in text and "nothing was changed" in text
        assert "trained" not in text
        assert _snapshot(run_dir) == before, extra
    # one more step, then --steps below it: refused, nothing changed
    code, text, err = run(capsys, "train", "--out-dir", out, "--name", "r", "--resume",
                          "--no-eval", "--steps", "2")
    assert code == 0, err
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    summary = json.load(open(run_dir / "summary.json"))
    # the run's training time, over both processes
    assert ck["train_seconds"] >= first["train_seconds"] - 0.05
    assert summary["train_seconds"] == pytest.approx(ck["train_seconds"], abs=0.06)
    before = _snapshot(run_dir)
    code, text, err = run(capsys, "train", "--out-dir", out, "--name", "r", "--resume",
                          "--no-eval", "--steps", "1")
    assert code == 2 and "--steps 1" in err and "already at step 2" in err, err
    assert _snapshot(run_dir) == before
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["config"]["steps"] == 2


def test_resume_refuses_a_log_with_a_foreign_header(run_copy, capsys):
    out, run_dir = run_copy
    text = (run_dir / "log.csv").read_text().splitlines()
    (run_dir / "log.csv").write_text("\n".join(["step,loss,notes"] + text[1:]) + "\n")
    before = _snapshot(run_dir)
    code, _, err = run(capsys, "train", "--out-dir", out, "--name", "r", "--resume", "--no-eval",
                       "--steps", "2")
    assert code == 2 and "log.csv" in err and "'step,loss,notes'" in err, err
    assert "move the file aside" in err
    assert _snapshot(run_dir) == before


def test_a_run_from_before_mask_out_of_view_resumes_as_it_trained(run_copy, capsys):
    """mask_out_of_view became the default after runs existed without it: a
    checkpoint that does not record it resumes with it off (as it trained),
    and a Python resume with the new default is refused, naming it."""
    from packnet.train import Trainer
    out, run_dir = run_copy
    path = run_dir / "checkpoint.pt"
    ck = torch.load(path, weights_only=True)
    assert ck["config"]["mask_out_of_view"] is True  # the default now
    del ck["config"]["mask_out_of_view"]                # as an earlier version wrote it
    torch.save(ck, path)
    code, text, err = run(capsys, "train", "--out-dir", out, "--name", "r", "--resume",
                          "--no-eval", "--steps", "2")
    assert code == 0, err
    assert torch.load(path, weights_only=True)["config"]["mask_out_of_view"] is False
    torch.save(ck, path)  # step 1 again, without the setting
    from packnet.config import TrainConfig
    cfg = TrainConfig(out_dir=str(out), name="r", steps=3, size=(32, 32), batch_size=1,
                      progress=False, num_scales=1, log_every=1,
                      data_kwargs={"num_sequences": 1, "frames_per_sequence": 4})
    with pytest.raises(ValueError, match="mask_out_of_view"):
        Trainer(cfg).resume_from(str(path))
