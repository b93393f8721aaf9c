"""PackNet-SfM's released .ckpt files in packnet (issue 23): read without yacs
and without running code from the file; infer, eval, export-onnx and
train --init on them; packnet.load_release.

Release-format files are made here: torch.save of {config: CfgNode, epoch,
state_dict: model.depth_net.* / model.pose_net.*, optimizer, scheduler},
with a stand-in yacs.config.CfgNode (registered in sys.modules only while
saving, so the pickle names yacs.config.CfgNode as the release's does).
Most files hold a PackNetTiny (cheap); one test runs the full PackNet01 once,
at 32x32.
"""
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch

from packnet import cli, models
from packnet.image import write_image
from packnet.checkpoint import UnsafeCheckpointError, load_checkpoint
from packnet.models import strip_prefix

HAVE_ONNX = importlib.util.find_spec("onnx") is not None
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------- release-format files
@contextlib.contextmanager
def yacs_stand_in():
    """A module yacs.config with a CfgNode like yacs' (a dict subclass that keeps
    a frozen flag and sets/dicts of key names in its __dict__), only inside
    the with block; yields the class."""
    class CfgNode(dict):
        def __init__(self, init=None):
            super().__init__(init or {})
            self.__dict__["__immutable__"] = False
            self.__dict__["__deprecated_keys__"] = set()
            self.__dict__["__renamed_keys__"] = {}
            self.__dict__["__new_allowed__"] = False

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    pkg, mod = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    pkg.config, mod.CfgNode = mod, CfgNode
    saved = {k: sys.modules.get(k) for k in ("yacs", "yacs.config")}
    sys.modules.update({"yacs": pkg, "yacs.config": mod})
    try:
        yield CfgNode
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _cfg_tree(CN, d):
    return CN({k: _cfg_tree(CN, v) if isinstance(v, dict) else v for k, v in d.items()})


def release_config(depth="PackNetTiny", version="1A", pose="PoseNet", model="VelSupModel",
                   image_shape=(64, 96)):
    """The parts of PackNet-SfM's config (configs/default_config.py) a release
    file carries that matter here, plus a few that do not."""
    return {
        "name": "test-release", "debug": False,
        "arch": {"seed": 42, "max_epochs": 50},
        "model": {"name": model, "checkpoint_path": "",
                  "optimizer": {"name": "Adam", "depth": {"lr": 2e-4, "weight_decay": 0.0}},
                  "loss": {"num_scales": 4, "velocity_loss_weight": 0.1,
                           "jittering": (0.2, 0.2, 0.2, 0.05)},
                  "depth_net": {"name": depth, "checkpoint_path": "", "version": version,
                                "dropout": 0.0},
                  "pose_net": {"name": pose, "checkpoint_path": "", "version": "",
                               "dropout": 0.0}},
        "datasets": {"augmentation": {"image_shape": image_shape,
                                      "crop_train_borders": ()},
                     "train": {"dataset": ["KITTI"], "path": ["/data/KITTI_raw"],
                               "cameras": [[]], "depth_type": [""]}},
        "wandb": {"dry_run": True, "tags": []},
        "prepared": True,
    }


def save_release(path, depth_net=None, pose_net=None, config=None, extra=None, legacy=False,
                 drop=()):
    """A release-format file: the nets' weights under model.depth_net. and
    model.pose_net., Adam and StepLR states, config as nested CfgNodes
    (`extra`: more config entries, e.g. a payload); `drop`: depth keys left out."""
    params = []
    sd = OrderedDict()
    for prefix, net in (("model.depth_net.", depth_net), ("model.pose_net.", pose_net)):
        if net is not None:
            params += list(net.parameters())
            sd.update((prefix + k, v) for k, v in net.state_dict().items() if k not in drop)
    opt = torch.optim.Adam(params or [torch.zeros(1, requires_grad=True)], lr=2e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.5)
    config = dict(config or release_config())
    config.update(extra or {})
    with yacs_stand_in() as CN:
        cfg = _cfg_tree(CN, config)
        cfg.__dict__["__immutable__"] = True
        state = {"config": cfg, "epoch": 49, "state_dict": sd, "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict()}
        kwargs = {"_use_new_zipfile_serialization": False} if legacy else {}
        torch.save(state, path, **kwargs)
    assert "yacs.config" not in sys.modules or sys.modules["yacs.config"] is not None
    return path


def tiny_nets(seed=0, **kwargs):
    torch.manual_seed(seed)
    depth = models.PackNetTiny(**kwargs).eval()
    with torch.no_grad():   # the release's heads are trained: give them non-zero biases
        for p in depth.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pose = models.PoseNet(nb_ref_imgs=2).eval()
    return depth, pose


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A PackNetTiny + PoseNet release file and its networks."""
    d = tmp_path_factory.mktemp("release")
    depth, pose = tiny_nets()
    path = save_release(d / "PackNetTiny_velsup.ckpt", depth, pose)
    return types.SimpleNamespace(path=path, depth=depth, pose=pose, dir=d)


def run(capsys, *argv):
    """cli.main -> (exit code, stdout, stderr); no traceback allowed."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def one_line_error(err, command):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"packnet {command}: error: "), err
    return lines[0]


def make_images(root, n=2, size=(40, 70)):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        write_image(str(root / f"f{i}.png"), img)
    return root


def _image(seed=0, size=(64, 96)):
    return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------- the loader
def test_config_classes_read_as_plain_dicts(release):
    """The release's CfgNode tree comes back as plain dicts, tuples kept; the
    stand-in torch builds for it, called with anything, is an empty dict."""
    from packnet.checkpoint import _ConfigNode
    ck = load_checkpoint(release.path, require=())
    assert type(ck["config"]) is dict and type(ck["config"]["model"]["depth_net"]) is dict
    assert ck["config"]["datasets"]["augmentation"]["image_shape"] == (64, 96)
    assert ck["config"]["model"]["loss"]["jittering"] == (0.2, 0.2, 0.2, 0.05)
    assert ck["epoch"] == 49 and isinstance(ck["state_dict"], OrderedDict)
    assert _ConfigNode("rm -rf /", shell=True) == OrderedDict()


LOAD_WITHOUT_YACS = textwrap.dedent("""
    import json, sys
    sys.modules["yacs"] = None            # import yacs fails, installed or not
    try:
        import yacs.config
        raise SystemExit("yacs importable")
    except ImportError:
        pass
    import torch, packnet
    files, image, out = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
    x = torch.load(image, weights_only=True)
    result, infos = {}, []
    for i, f in enumerate(files):
        depth_net, pose_net, info = packnet.load_release(f)
        with torch.no_grad():
            result[f"depth{i}"] = depth_net(x)
            result[f"pose{i}"] = pose_net(x, [x.flip(-1), x.flip(-2)])
        infos.append(info)
    torch.save(result, out)
    print(json.dumps(infos))
    assert "yacs" not in sys.modules or sys.modules["yacs"] is None
""")


def test_release_loads_without_yacs_and_gives_the_networks_outputs(release, tmp_path):
    """In a fresh process where yacs cannot be imported, load_release gives
    the networks whose outputs are those of the same state_dict loaded
    directly (zip and legacy torch.save formats)."""
    legacy = save_release(tmp_path / "legacy.ckpt", release.depth, release.pose, legacy=True)
    x = _image()
    torch.save(x, tmp_path / "x.pt")
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_YACS, f"{release.path},{legacy}",
         str(tmp_path / "x.pt"), str(tmp_path / "out.pt")],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    infos = json.loads(proc.stdout.strip().splitlines()[-1])
    got = torch.load(tmp_path / "out.pt", weights_only=True)

    # the same state_dict, loaded by hand
    ck = load_checkpoint(release.path, require=())
    depth, pose = models.PackNetTiny().eval(), models.PoseNet().eval()
    depth.load_state_dict(strip_prefix(ck["state_dict"], "model.depth_net."))
    pose.load_state_dict(strip_prefix(ck["state_dict"], "model.pose_net."))
    with torch.no_grad():
        want_depth, want_pose = depth(x), pose(x, [x.flip(-1), x.flip(-2)])
        assert torch.equal(want_depth, release.depth(x))
    for i in range(2):
        torch.testing.assert_close(got[f"depth{i}"], want_depth)
        torch.testing.assert_close(got[f"pose{i}"], want_pose)
        assert infos[i] == {"format": "release", "depth_net": "PackNetTiny", "version": "1A",
                            "pose_net": "PoseNet", "image_shape": [64, 96],
                            "model": "VelSupModel", "metric": True, "epoch": 49, "step": None,
                            "file": [str(release.path), str(legacy)][i]}


def test_packnet01_release_equals_its_state_dict(tmp_path):
    """The full PackNet01 (1A, 128M parameters), once, at 32x32: the network
    load_release builds from a release file gives the release network's
    output, and init_depth (our models' initial bias) plays no part."""
    from packnet import load_release
    torch.manual_seed(0)
    net = models.PackNet01("1A").eval()
    with torch.no_grad():
        for head in (net.disp1_layer, net.disp2_layer, net.disp3_layer, net.disp4_layer):
            head.conv1.bias.fill_(-1.5)        # not the init: trained weights
    path = save_release(tmp_path / "PackNet01_MR_velsup_CStoK.ckpt", net, None,
                        release_config("PackNet01", "1A", pose="", image_shape=(192, 640)))
    x = _image(size=(32, 32))
    with torch.no_grad():
        want = net(x)
    del net
    loaded, pose, info = load_release(path)
    assert pose is None and info["depth_net"] == "PackNet01" and info["image_shape"] == (192, 640)
    assert type(loaded) is models.PackNet01 and not loaded.training
    assert loaded.config == {"version": "1A", "dropout": None}     # no init_depth
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), want, rtol=0, atol=0)


def test_dropout_shortcuts_load(tmp_path):
    """A network built with dropout names its shortcuts conv3.0.*: its weights
    load into the dropout-free network inference uses (same eval output)."""
    from packnet import load_release
    depth, _ = tiny_nets(dropout=0.1)
    assert any(".conv3.0." in k for k in depth.state_dict())
    cfg = release_config()
    cfg["model"]["depth_net"]["dropout"] = 0.1
    path = save_release(tmp_path / "drop.ckpt", depth, None, {**cfg, "model": {
        **cfg["model"], "pose_net": {"name": ""}}})
    loaded, pose, _ = load_release(path)
    assert pose is None
    x = _image(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), depth(x), rtol=0, atol=0)


# ------------------------------------------------------------ no code runs
class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_release_with_a_code_payload_is_refused(release, tmp_path, capsys):
    """A release-looking file whose config carries an object that would run a
    shell command: refused by the loader and by every command, naming the
    global it asks for; the command never runs."""
    from packnet import load_release
    marker = tmp_path / "pwned"
    evil = save_release(tmp_path / "evil.ckpt", release.depth, release.pose,
                        extra={"hook": _Payload(marker)})
    with pytest.raises(UnsafeCheckpointError, match=r"evil.ckpt.*posix.system.*trust"):
        load_release(evil)
    imgs = make_images(tmp_path / "imgs", 1)
    for argv in (["infer", imgs, "--checkpoint", evil, "--out", tmp_path / "o"],
                 ["eval", "--checkpoint", evil, "--data", "synthetic", "--device", "cpu"],
                 ["export-onnx", "--checkpoint", evil, "--out", tmp_path / "x.onnx"],
                 ["train", "--init", evil, "--out-dir", tmp_path / "runs", "--steps", "1",
                  "--size", "32", "32", "--no-eval"]):
        code, _, err = run(capsys, *argv)
        line = one_line_error(err, argv[0])
        assert code == 2 and "evil.ckpt" in line and "posix.system" in line, argv
        assert not marker.exists(), f"{argv[0]} ran code from the file"
    assert not marker.exists()


# ---------------------------------------------------------------- commands
def test_infer_uses_the_release_network_and_image_shape(release, tmp_path, capsys):
    """packnet infer on a release file: its network at its image_shape (64x96
    here), depth = 1 / the network's output, as infer() with the network."""
    from packnet.infer import infer
    imgs = make_images(tmp_path / "imgs", 2)
    code, out, err = run(capsys, "infer", imgs, "--checkpoint", release.path, "--out",
                         tmp_path / "o", "--device", "cpu")
    assert code == 0, err
    assert "PackNet-SfM release: PackNetTiny version 1A (VelSupModel, epoch 49)" in out
    assert "input 64x96 (its image_shape); depth in metres" in out
    want = infer(str(imgs), release.depth, str(tmp_path / "w"), size=(64, 96))
    for f in ("f0", "f1"):
        got = np.load(tmp_path / "o" / f"{f}_depth.npy")
        assert got.shape == (40, 70)
        np.testing.assert_array_equal(got, np.load(tmp_path / "w" / f"{f}_depth.npy"))
    assert len(want) == 4
    # --size still wins
    code, out, _ = run(capsys, "infer", imgs, "--checkpoint", release.path, "--out",
                       tmp_path / "o2", "--size", "32", "64", "--device", "cpu")
    assert code == 0 and "input 32x64;" in out


@pytest.mark.skipif(not HAVE_ONNX, reason="needs onnx (pip install onnx onnxruntime)")
def test_export_onnx_of_a_release_uses_its_image_shape(release, tmp_path, capsys):
    import onnx
    code, out, err = run(capsys, "export-onnx", "--checkpoint", release.path, "--out",
                         tmp_path / "d.onnx")
    assert code == 0, err
    dims = onnx.load(str(tmp_path / "d.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 64, 96]


def test_eval_of_a_release_needs_data_settings(release, tmp_path, capsys):
    """A release has no data settings of ours: eval says which to give; with
    them it evaluates the release's network at its image_shape."""
    code, _, err = run(capsys, "eval", "--checkpoint", release.path, "--device", "cpu")
    line = one_line_error(err, "eval")
    assert code == 2 and "PackNet-SfM release" in line and "--data kitti --data-root" in line
    code, _, err = run(capsys, "eval", "--checkpoint", release.path, "--data", "kitti",
                       "--device", "cpu")
    assert code == 2 and "--split-file" in one_line_error(err, "eval")
    code, _, err = run(capsys, "eval", "--checkpoint", release.path, "--data", "folder",
                       "--device", "cpu")
    assert code == 2 and "--data-root" in one_line_error(err, "eval")

    code, out, err = run(capsys, "eval", "--checkpoint", release.path, "--data", "synthetic",
                         "--device", "cpu", "--json", tmp_path / "m.json")
    assert code == 0, err
    assert "input 64x96" in out and "abs_rel" in out
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["release"]["depth_net"] == "PackNetTiny"
    assert result["provenance"]["config"]["size"] == [64, 96]


def test_bad_release_files_give_one_line(release, tmp_path, capsys):
    """Missing weights, an architecture packnet does not have, a truncated
    file: one line naming the file and the problem, exit status 2."""
    imgs = make_images(tmp_path / "imgs", 1)
    missing = save_release(tmp_path / "missing.ckpt", release.depth, release.pose,
                           drop=("iconv1.conv_base.weight", "disp1_layer.conv1.bias"))
    resnet = save_release(tmp_path / "resnet.ckpt", release.depth, release.pose,
                          release_config("DepthResNet", "18pt", pose="PoseResNet"))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(release.path.read_bytes()[:5000])
    cases = {missing: "2 missing (iconv1.conv_base.weight, disp1_layer.conv1.bias)",
             resnet: "depth network DepthResNet is not one packnet has (supported: PackNet01, "
                     "PackNetSlim01, PackNetTiny)",
             truncated: "cannot read it"}
    for path, what in cases.items():
        for argv in (["infer", imgs, "--checkpoint", path, "--out", tmp_path / "o"],
                     ["eval", "--checkpoint", path, "--data", "synthetic", "--device", "cpu"],
                     ["export-onnx", "--checkpoint", path, "--out", tmp_path / "x.onnx"]):
            code, _, err = run(capsys, *argv)
            line = one_line_error(err, argv[0])
            assert code == 2 and str(path) in line and what in line, (argv, line)

    from packnet import load_release
    pose_resnet = save_release(tmp_path / "pose.ckpt", release.depth, None,
                               release_config(pose="PoseResNet"))
    with pytest.raises(ValueError, match="pose network PoseResNet is not one packnet has"):
        load_release(pose_resnet)
    depth_net, pose_net, _ = load_release(pose_resnet, pose=False)
    assert pose_net is None and isinstance(depth_net, models.PackNetTiny)


# -------------------------------------------------------------- train --init
def _train_cfg(tmp_path, **kw):
    from packnet.config import TrainConfig
    base = dict(out_dir=str(tmp_path / "runs"), name="init", size=(32, 32), batch_size=1,
                steps=1, progress=False, num_scales=1, preview_every=0,
                data_kwargs={"num_sequences": 1, "frames_per_sequence": 4})
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_starts_from_release_weights(release, tmp_path):
    """init: the run's networks start at the file's weights (the release's
    PackNetTiny and PoseNet, or one of our own checkpoints); the optimizer
    and the schedule start fresh; the provenance names the file."""
    from packnet.train import Trainer
    tr = Trainer(_train_cfg(tmp_path, init=str(release.path)), log=lambda m: None)
    tr.fit(stop_after=0)                          # no step: the saved weights are the start
    ck = load_checkpoint(tr.ckpt_path)
    for k, v in release.depth.state_dict().items():
        assert torch.equal(ck["model"]["depth_net"][k], v), k
    for k, v in release.pose.state_dict().items():
        assert torch.equal(ck["model"]["pose_net"][k], v), k
    assert ck["optimizer"]["state"] == {} and ck["scheduler"]["last_epoch"] == 0
    assert ck["config"]["init"] == str(release.path)
    info = tr.init_info
    assert info["format"] == "release" and info["pose"] == "loaded"
    assert info["file"] == str(release.path) and len(info["sha256"]) == 64
    # the release's PoseNet scales its outputs by 0.01; the preset's translation by 0.1
    assert info["notes"] == ["the file's PoseNet was trained with translation_scale, "
                             "rotation_scale 0.01, 0.01, this run's are 0.1, 0.01: its poses "
                             "start scaled by that ratio (--set 'pose_kwargs={translation_scale: "
                             "0.01, rotation_scale: 0.01}' keeps them)"]

    # one of our own checkpoints works the same way
    tr2 = Trainer(_train_cfg(tmp_path, name="again", init=tr.ckpt_path), log=lambda m: None)
    tr2.fit(stop_after=0)
    again = load_checkpoint(tr2.ckpt_path)["model"]["depth_net"]
    assert all(torch.equal(again[k], v) for k, v in release.depth.state_dict().items())
    assert tr2.init_info["format"] == "packnet" and tr2.init_info["notes"] == []


def test_train_init_cli(release, tmp_path, capsys):
    """packnet train --init FILE: a one-step run from the release's weights,
    provenance in summary.json; an architecture that is not the run's, or a
    missing file, is one line naming both."""
    out = tmp_path / "runs"
    small = ["--out-dir", out, "--steps", "1", "--size", "32", "32", "--batch-size", "1",
             "--no-eval", "--set", "progress=false", "--set", "num_scales=1",
             "--set", "data_kwargs={num_sequences: 1, frames_per_sequence: 4}"]
    code, text, err = run(capsys, "train", "--name", "a", "--init", release.path, *small)
    assert code == 0, err
    assert f"init: PackNetTiny version 1A from {release.path} (release checkpoint; PoseNet " \
           f"loaded)" in text
    assert "init: note: the file's PoseNet was trained with translation_scale" in text
    summary = json.loads((out / "a" / "summary.json").read_text())
    assert summary["provenance"]["init"]["file"] == str(release.path)
    assert summary["provenance"]["config"]["init"] == str(release.path)

    # --resume keeps the run's own start; another --init is a changed setting
    code, _, err = run(capsys, "train", "--name", "a", "--resume", "--init", tmp_path / "x.ckpt",
                       *small)
    assert code == 2 and "init" in one_line_error(err, "train")

    slim = save_release(tmp_path / "slim.ckpt", release.depth, release.pose,
                        release_config("PackNetSlim01", "1A"))
    code, _, err = run(capsys, "train", "--name", "b", "--init", slim, *small)
    line = one_line_error(err, "train")
    assert code == 2 and "slim.ckpt" in line and "its depth network is PackNetSlim01 version " \
        "1A, this run's is PackNetTiny version 1A" in line and "--model PackNetSlim01" in line
    assert not (out / "b" / "checkpoint.pt").exists()

    code, _, err = run(capsys, "train", "--name", "c", "--init", tmp_path / "nope.ckpt", *small)
    line = one_line_error(err, "train")
    assert code == 2 and "nope.ckpt" in line and "not found" in line
