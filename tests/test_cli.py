"""The packnet command: train preview, infer and export-onnx on a trained checkpoint."""
import os

import numpy as np
import pytest
import torch

from packnet import cli
from packnet.image import read_image, write_image
from packnet.train import Trainer, TrainConfig

from test_train import _Pairs


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(name="t", out_dir=str(tmp), size=(32, 64), batch_size=2, steps=2,
                      ckpt_every=100, preview_every=2, progress=False, num_scales=2)
    tr = Trainer(cfg, dataset=_Pairs(), log=lambda m: None).fit()
    previews = os.listdir(os.path.join(tmp, "t", "previews"))
    assert previews == ["step_0000002.png"]
    img = read_image(os.path.join(tmp, "t", "previews", previews[0]))
    # input, prediction, ground truth, error: enlarged 9x to 576 wide, labelled
    assert img.shape[1] == 576 and img.shape[0] > 4 * 32 * 9
    return tr.ckpt_path


def test_infer_writes_png_and_npy(checkpoint, tmp_path):
    src = tmp_path / "frames"
    src.mkdir()
    for i in range(2):
        write_image(str(src / f"f{i}.png"),
                    (np.random.default_rng(i).random((64, 96, 3)) * 255).astype(np.uint8))
    out = tmp_path / "out"
    assert cli.main(["infer", str(src), "--checkpoint", checkpoint, "--out", str(out),
                     "--device", "cpu"]) == 0
    names = sorted(os.listdir(out))
    assert names == ["f0_depth.npy", "f0_depth.png", "f1_depth.npy", "f1_depth.png"]
    depth = np.load(out / "f0_depth.npy")
    assert depth.shape == (64, 96) and np.isfinite(depth).all() and (depth > 0).all()


def test_export_onnx(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is needed to check the export")
    out = tmp_path / "depth.onnx"
    assert cli.main(["export-onnx", "--checkpoint", checkpoint, "--out", str(out),
                     "--size", "64", "64"]) == 0
    assert out.stat().st_size > 0


def test_train_flags_build_the_config():
    args = cli.build_parser().parse_args(["train", "--steps", "7", "--size", "64", "128",
                                          "--no-velocity", "--set", "lr=0.001",
                                          "--set", "data_kwargs={num_sequences: 2}"])
    cfg = cli._config(args)
    assert cfg.steps == 7 and cfg.size == (64, 128) and cfg.velocity_weight == 0
    assert cfg.lr == 0.001 and cfg.data_kwargs == {"num_sequences": 2}
    with pytest.raises(ValueError, match="unknown setting"):
        cli._config(cli.build_parser().parse_args(["train", "--set", "nope=1"]))


def test_packnet_train_on_the_synthetic_data(tmp_path, capsys):
    """The default data end to end: a few steps, evaluation on held-out
    sequences, and the summary with metric and median-scaled abs_rel."""
    import json
    assert cli.main(["train", "--steps", "2", "--size", "32", "64", "--out-dir", str(tmp_path),
                     "--set", "batch_size=2", "--set", "num_scales=2", "--set", "seed=3",
                     "--set", "data_kwargs={num_sequences: 1, frames_per_sequence: 6}",
                     "--set", "progress=false"]) == 0
    out = capsys.readouterr().out
    assert "abs_rel: metric (no scaling)" in out and "median-scaled" in out
    assert "pose ATE over 2 5-frame snippets: metric" in out
    run = tmp_path / "synthetic-tiny"
    assert {"checkpoint.pt", "log.csv", "summary.json", "test-strip.png"} <= set(os.listdir(run))
    summary = json.load(open(run / "summary.json"))
    assert summary["pose_eval"]["snippets"] == 2 and summary["pose_eval"]["ate"]["mean"] > 0
    prov = summary["provenance"]
    assert prov["torch"] == torch.__version__ and prov["seed"] == 3
    assert prov["config"]["seed"] == 3 and prov["backend"] in ("cpu", "triton", "reference")
    assert prov["data"]["class"] == "SyntheticDriving" and prov["data"]["split"] == "train"
    assert prov["test_data"]["split"] == "test"
    assert prov["git"] is None or len(prov["git"].split("+")[0]) == 40


def test_eval_on_kitti_layout_with_garg_crop(checkpoint, tmp_path, capsys):
    """`packnet eval --data kitti`: a synthetic KITTI-layout drive, sparse
    velodyne depth, the Garg crop; the metrics match evaluate() on the same data."""
    import json

    from packnet.data import KITTIRaw, write_kitti
    from packnet.evaluate import evaluate
    from packnet.infer import load_depth_net
    info = write_kitti(str(tmp_path / "kitti"), num_sequences=1, frames_per_sequence=4)
    split = info["split_files"]["eigen_test_files.txt"]
    out = tmp_path / "m.json"
    assert cli.main(["eval", "--checkpoint", checkpoint, "--data", "kitti", "--data-root",
                     str(tmp_path / "kitti"), "--split-file", split, "--device", "cpu",
                     "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "median_scaled" in text and "(Garg crop)" in text
    got = json.load(open(out))
    assert got["crop"] == "garg" and got["eval"]["n"] == 2
    data = KITTIRaw(str(tmp_path / "kitti"), split, size=(32, 64))
    want = evaluate(load_depth_net(checkpoint), torch.utils.data.DataLoader(data, batch_size=4),
                    "cpu", crop="garg", progress=False)
    assert got["eval"]["median_scaled"]["abs_rel"] == pytest.approx(
        want["median_scaled"]["abs_rel"], rel=1e-6)
    assert cli.main(["eval", "--checkpoint", checkpoint, "--data", "kitti", "--data-root",
                     str(tmp_path / "kitti")]) == 2
    assert "packnet eval: error: KITTI needs --split-file" in capsys.readouterr().err


def test_eval_json_says_when_it_replaces_a_file(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.json"
    args = ["eval", "--checkpoint", checkpoint, "--data", "synthetic", "--device", "cpu",
            "--json", str(out)]
    assert cli.main(args) == 0
    assert f"wrote {out}\n" in capsys.readouterr().out
    assert cli.main(args) == 0
    assert "(replaced the existing file)" in capsys.readouterr().out
