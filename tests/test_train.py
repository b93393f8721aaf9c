"""The trainer: steps end to end, exact resume, non-finite handling, DDP on CPU."""
import os

import pytest
import torch
import torch.multiprocessing as mp

from packnet import geometry
from packnet.train import Trainer, TrainConfig, load_checkpoint

H, W = 32, 64


class _Pairs(torch.utils.data.Dataset):
    """Target frames and context frames synthesised from them with known
    depth and motion (packops.reproject_reference), speed and timestamps."""

    def __init__(self, n=8, seed=0):
        self.n, self.seed = n, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import packops
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        rgb = torch.nn.functional.avg_pool2d(torch.rand(1, 3, H + 4, W + 4, generator=g), 5, 1)
        depth = 5 + 5 * torch.rand(1, 1, H, W, generator=g)
        K = torch.tensor([[[0.6 * W, 0, W / 2 - 0.5], [0, 0.6 * W, H / 2 - 0.5], [0, 0, 1]]])
        ctx, poses = [], []
        for s in (-1, 1):
            T = geometry.pose_vec2mat(torch.tensor([[0.0, 0.0, 0.5 * s, 0, 0, 0]]))
            ctx.append(packops.reproject_reference(rgb, depth, K, geometry.invert_pose(T))[0])
            poses.append(T[0])
        return {"rgb": rgb[0], "rgb_context": ctx, "depth": depth[0], "intrinsics": K[0],
                "pose_context": poses, "timestamp": torch.tensor(0.1 * i),
                "timestamps_context": [torch.tensor(0.1 * i - 0.1), torch.tensor(0.1 * i + 0.1)],
                "speed": torch.tensor(5.0)}


def _cfg(tmp_path, **kw):
    base = dict(name="t", out_dir=str(tmp_path), size=(H, W), batch_size=2, steps=6,
                log_every=1, ckpt_every=3, progress=False, num_scales=2, preview_every=0)
    base.update(kw)
    return TrainConfig(**base)


def _params(trainer):
    return [p.detach().clone() for p in list(trainer.depth_net.parameters())
            + list(trainer.pose_net.parameters())]


def test_steps_end_to_end_write_checkpoint_and_log(tmp_path):
    tr = Trainer(_cfg(tmp_path), dataset=_Pairs(), log=lambda m: None).fit()
    assert tr.step == 6
    ck = load_checkpoint(os.path.join(tmp_path, "t", "checkpoint.pt"))
    assert ck["step"] == 6 and ck["config"]["size"] == (H, W)
    assert set(ck["model"]) == {"depth_net", "pose_net"}
    rows = open(os.path.join(tmp_path, "t", "log.csv")).read().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 7
    assert not any(f.endswith(".tmp") or ".tmp." in f for f in os.listdir(os.path.join(tmp_path, "t")))


@pytest.mark.parametrize("augment", [False, True])
def test_resume_gives_the_same_state_as_an_uninterrupted_run(tmp_path, augment):
    full = Trainer(_cfg(tmp_path / "a", augment=augment), dataset=_Pairs(), log=lambda m: None).fit()
    part = Trainer(_cfg(tmp_path / "b", augment=augment), dataset=_Pairs(), log=lambda m: None)
    part.fit(stop_after=3)  # "killed" after the checkpoint at step 3
    resumed = Trainer(_cfg(tmp_path / "b", augment=augment), dataset=_Pairs(),
                      log=lambda m: None).fit(resume=True)
    assert resumed.step == full.step == 6
    for a, b in zip(_params(full), _params(resumed)):
        assert torch.equal(a, b)


def test_non_finite_loss_is_skipped_then_stops(tmp_path):
    tr = Trainer(_cfg(tmp_path, max_bad_steps=3), dataset=_Pairs(), log=lambda m: None)
    real = tr.losses
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        out = real(batch)
        if calls["n"] == 2 or calls["n"] >= 4:
            out["photometric"] = out["photometric"] * float("nan")
            out["loss"] = out["loss"] * float("nan")
        return out
    tr.losses = flaky
    with pytest.raises(FloatingPointError, match=r"stopping at step 5: 3 steps in a row.*photometric"):
        tr.fit()
    assert tr.skipped_steps == 4


def test_velocity_warmup_ramps_the_weight(tmp_path):
    """velocity_warmup=N: the velocity term is weight * min(1, step / N)."""
    batch = torch.utils.data.default_collate([_Pairs()[i] for i in range(2)])
    plain = Trainer(_cfg(tmp_path, velocity_weight=0.3, velocity_warmup=0), dataset=_Pairs(),
                    log=lambda m: None)
    ramp = Trainer(_cfg(tmp_path, velocity_weight=0.3, velocity_warmup=4), dataset=_Pairs(),
                   log=lambda m: None)
    ramp.load_state(plain.state())
    full = plain.losses(batch)["velocity"]
    assert full > 0
    for step, frac in ((0, 0.0), (1, 0.25), (3, 0.75), (4, 1.0), (9, 1.0)):
        ramp.step = step
        assert torch.allclose(ramp.losses(batch)["velocity"], frac * full), step


def test_augment_jitters_and_flips_deterministically(tmp_path):
    from packnet.train import _batches
    plain = list(_batches(_Pairs(), _cfg(tmp_path), 0, 1, epoch=0))
    aug = [list(_batches(_Pairs(), _cfg(tmp_path, augment=True), 0, 1, epoch=0)) for _ in range(2)]
    for a, b in zip(*aug):  # the same draws every time (resumable)
        assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["flipped"], b["flipped"])
    flipped = torch.cat([b["flipped"] for b in aug[0]])
    assert flipped.any() and not flipped.all()
    assert not any(torch.equal(p["rgb"], a["rgb"]) for p, a in zip(plain, aug[0]))
    other_epoch = list(_batches(_Pairs(), _cfg(tmp_path, augment=True), 0, 1, epoch=1))
    assert not torch.equal(torch.cat([b["flipped"] for b in other_epoch]), flipped) or \
        not torch.equal(other_epoch[0]["rgb"], aug[0][0]["rgb"])


def test_config_checks():
    with pytest.raises(ValueError, match="divisible by 32"):
        TrainConfig(size=(30, 64)).validate()
    with pytest.raises(ValueError, match="unknown setting"):
        TrainConfig.from_dict({"lr": 1e-3, "bogus": 1})
    assert TrainConfig.from_dict({"size": [64, 192]}).size == (64, 192)
    with pytest.raises(ValueError, match="velocity_warmup"):
        TrainConfig(velocity_warmup=-1).validate()


def _ddp_worker(rank, world, tmp, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    tr = Trainer(_cfg(tmp, steps=2, ckpt_every=100), dataset=_Pairs(), log=lambda m: None).fit()
    torch.save(_params(tr), os.path.join(tmp, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    port = 29500 + os.getpid() % 1000
    mp.spawn(_ddp_worker, args=(2, str(tmp_path), port), nprocs=2, join=True)
    p0, p1 = (torch.load(os.path.join(tmp_path, f"rank{r}.pt")) for r in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert os.path.exists(os.path.join(tmp_path, "t", "checkpoint.pt"))


# ------------------------------------------------- issue 12: reliability
def test_config_coerces_values_by_the_field_type():
    """YAML reads 1e-3 as a string and 2.0 as a float: settings take their field's type."""
    cfg = TrainConfig.from_dict({"lr": "1e-3", "size": "32x96", "batch_size": 2.0,
                                 "steps": "7", "augment": "true", "name": 5})
    assert cfg.lr == 1e-3 and type(cfg.lr) is float
    assert cfg.size == (32, 96) and cfg.batch_size == 2 and type(cfg.batch_size) is int
    assert cfg.steps == 7 and cfg.augment is True and cfg.name == "5"
    assert TrainConfig.from_dict({"size": [64, 192]}).size == (64, 192)
    for bad, frags in (({"batch_size": 2.5}, ["batch_size", "2.5", "integer"]),
                       ({"lr": "fast"}, ["lr", "'fast'", "number"]),
                       ({"size": "big"}, ["size", "'big'", "HxW"]),
                       ({"progress": "maybe"}, ["progress", "true or false"]),
                       ({"data_kwargs": [1]}, ["data_kwargs", "mapping"])):
        with pytest.raises(ValueError) as e:
            TrainConfig.from_dict(bad)
        assert all(f in str(e.value) for f in frags), (bad, str(e.value))


@pytest.mark.parametrize("kw,frags", [
    (dict(ckpt_every=0), ["ckpt_every", ">= 1"]),
    (dict(log_every=0), ["log_every", ">= 1"]),
    (dict(preview_every=-1), ["preview_every", ">= 0"]),
    (dict(max_bad_steps=0), ["max_bad_steps", ">= 1"]),
    (dict(lr=0.0), ["lr", "> 0"]),
    (dict(lr=float("inf")), ["lr", "> 0"]),
    (dict(clip_grad=0.0), ["clip_grad", "> 0"]),
    (dict(num_scales=5), ["num_scales", "1 to 4"]),
    (dict(model="Nope"), ["model", "'Nope'", "PackNet01", "PackNetTiny"]),
    (dict(model_kwargs={"depth": 3}), ["model_kwargs", "depth"]),
    (dict(pose_kwargs={"nb_ref_imgs": 3}), ["pose_kwargs", "nb_ref_imgs"]),
    (dict(data="imagenet"), ["data", "'imagenet'", "synthetic"]),
    (dict(amp=True, device="cpu"), ["amp", "CUDA"]),
    (dict(checkpoint_activations="some"), ["checkpoint_activations", "'some'", "decoder"]),
    (dict(size=(0, 64)), ["size", "multiples of 32"]),
    (dict(name=""), ["name"]),
])
def test_config_validate_names_the_setting_and_the_range(kw, frags):
    with pytest.raises(ValueError) as e:
        TrainConfig(**kw).validate()
    assert all(f in str(e.value) for f in frags), str(e.value)


def test_too_few_samples_for_a_batch_raise_at_start(tmp_path):
    with pytest.raises(ValueError, match=r"3 usable samples.*batch_size 4"):
        Trainer(_cfg(tmp_path, batch_size=4), dataset=_Pairs(n=3), log=lambda m: None)
    with pytest.raises(ValueError, match=r"0 usable samples"):
        Trainer(_cfg(tmp_path, batch_size=1), dataset=_Pairs(n=0), log=lambda m: None)


def test_loss_finiteness_error_is_a_skipped_step(tmp_path):
    """MultiViewPhotometricLoss raises FloatingPointError on a non-finite depth:
    the trainer skips and counts that step like a non-finite loss."""
    tr = Trainer(_cfg(tmp_path, max_bad_steps=2, steps=4), dataset=_Pairs(), log=lambda m: None)

    def boom(batch):
        raise FloatingPointError("MultiViewPhotometricLoss: the depth network's inverse depth "
                                 "is not finite (NaN/inf) at scale(s) [0]")
    tr.losses = boom
    with pytest.raises(FloatingPointError, match=r"stopping at step 1: 2 steps in a row"):
        tr.fit()
    assert tr.skipped_steps == 2


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_checkpoints_load_without_the_full_unpickler(tmp_path):
    import numpy as np

    from packnet.train import CheckpointError
    tr = Trainer(_cfg(tmp_path), dataset=_Pairs(), log=lambda m: None)
    tr.save()
    ck = torch.load(tr.ckpt_path, weights_only=True)      # RNG states are tensors and lists
    assert ck["step"] == 0 and set(ck["rng"]) >= {"torch", "numpy", "python"}
    tr.load_state(load_checkpoint(tr.ckpt_path))          # and they restore
    # a checkpoint written before (numpy arrays in the RNG state) still loads
    ck["rng"]["numpy"] = np.random.get_state()
    torch.save(ck, tmp_path / "old.pt")
    tr.load_state(load_checkpoint(tmp_path / "old.pt"))
    # a pickle that runs code is refused, naming the file and what it asked for
    ck["x"] = _Payload(tmp_path / "pwned")
    torch.save(ck, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil.pt.*posix.mkdir.*trust"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CheckpointError, match=r"junk.pt: cannot read"):
        (tmp_path / "junk.pt").write_bytes(b"\x80\x02junk")
        load_checkpoint(tmp_path / "junk.pt")


def test_fast_adam_matches_the_reference_loop():
    """make_adam's implementation (fused or foreach) gives the per-parameter
    loop's update to float tolerance, over a few steps with changing grads."""
    from packnet.train import make_adam
    g = torch.Generator().manual_seed(0)
    shapes = [(64, 32, 3, 3), (64,), (7, 5), (1,)]
    start = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(4)]
    fast = [p.clone().requires_grad_() for p in start]
    slow = [p.clone().requires_grad_() for p in start]
    opt, flags = make_adam(fast, 1e-2)
    assert flags["fused"] or flags["foreach"]
    ref = torch.optim.Adam(slow, lr=1e-2, foreach=False, fused=False)
    for step_grads in grads:
        for p, q, gr in zip(fast, slow, step_grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt.step()
        ref.step()
    for p, q in zip(fast, slow):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def _one_step_grads(tmp_path, **kw):
    torch.manual_seed(0)
    trainer = Trainer(_cfg(tmp_path, **kw), dataset=_Pairs(4))
    batch = torch.utils.data.default_collate([trainer.dataset[i] for i in range(2)])
    trainer.opt.zero_grad()
    out = trainer.train_step(batch)
    # the (clipped) gradients the step used: Adam's first update is about
    # lr * sign(grad), too sensitive to compare
    return out, [p.grad.clone() for p in trainer.depth_net.parameters()]


@pytest.mark.parametrize("part", ["decoder", "encoder", "all"])
def test_checkpoint_activations_change_nothing_but_memory(tmp_path, part):
    """Recomputing a part of the depth net in backward gives the same step:
    the same loss and the same gradients, bit for bit on the CPU."""
    ref_out, ref = _one_step_grads(tmp_path, checkpoint_activations="none")
    out, got = _one_step_grads(tmp_path, checkpoint_activations=part)
    assert float(out["loss"]) == float(ref_out["loss"])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_compile_runs_the_same_step(tmp_path):
    """compile=true: the depth and pose nets compile in one graph each
    (fullgraph, packops' ops inside) and the step matches the eager one to
    float tolerance."""
    torch._dynamo.reset()
    ref_out, ref = _one_step_grads(tmp_path, compile=False)
    out, got = _one_step_grads(tmp_path, compile=True)
    assert abs(float(out["loss"]) - float(ref_out["loss"])) < 1e-5
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6 + 1e-3 * float(b.abs().max()))


# ------------------------------------- issue 24: nested settings, by table
NESTED = [
    (dict(data_kwargs={"fps": 0}), ["data_kwargs fps = 0", "> 0"]),
    (dict(data_kwargs={"fps": "fast"}), ["data_kwargs fps = 'fast'", "finite number"]),
    (dict(data_kwargs={"fps": float("nan")}), ["data_kwargs fps = nan", "finite number"]),
    (dict(data_kwargs={"context": ["a", "b"]}), ["data_kwargs context = ['a', 'b']", "non-zero"]),
    (dict(data_kwargs={"num_sequences": 0}), ["data_kwargs num_sequences = 0", ">= 1"]),
    (dict(data_kwargs={"seed": -1}), ["data_kwargs seed = -1", ">= 0"]),
    (dict(model_kwargs={"init_depth": "ten"}), ["model_kwargs init_depth = 'ten'", "> 0.5"]),
    (dict(model_kwargs={"init_depth": 0.2}), ["model_kwargs init_depth = 0.2", "> 0.5"]),
    (dict(model_kwargs={"dropout": "half"}), ["model_kwargs dropout = 'half'", "<= 1"]),
    (dict(model_kwargs={"version": "2A"}), ["model_kwargs version = '2A'", "'1A', '1B'"]),
    (dict(pose_kwargs={"translation_scale": 0}), ["pose_kwargs translation_scale = 0", "> 0"]),
    (dict(data="folder", data_kwargs={"root": "x", "context": [0, 1]}),
     ["data_kwargs context = [0, 1]", "folder data", "non-zero"]),
    (dict(data="folder", data_kwargs={"root": "x", "skip_bad": "sometimes"}),
     ["data_kwargs skip_bad = 'sometimes'", "true or false"]),
    (dict(data="kitti", data_kwargs={"root": "x", "split_files": ["a.txt", "b.txt"]}),
     ["data_kwargs split_files = ['a.txt', 'b.txt']", "mapping of split name"]),
    (dict(data="kitti", data_kwargs={"root": "x", "split_files": {"training": "a.txt"}}),
     ["data_kwargs split_files", "'training'", "train, val, test"]),
    (dict(data="kitti", data_kwargs={"root": "x", "split_files": {"test": __file__}}),
     ["split_files", "needs a train entry"]),
    (dict(data="kitti", data_kwargs={"root": "x", "split_files": {"train": __file__,
                                                                   "test": "nope.txt"}}),
     ["data_kwargs split_files test = 'nope.txt'", "not found"]),
    (dict(data="kitti", data_kwargs={"root": "x", "split_file": __file__,
                                     "split_files": {"train": __file__}}), ["not both"]),
]


@pytest.mark.parametrize("kw,frags", NESTED, ids=[str(kw) for kw, _ in NESTED])
def test_nested_kwargs_are_checked_against_each_class_table(kw, frags):
    """Values that used to pass the check and end in a traceback (ZeroDivisionError
    for fps 0, TypeError for init_depth 'ten', a KeyError after training for
    split_files without the split) are refused naming the key."""
    with pytest.raises(ValueError) as e:
        TrainConfig(**kw).validate()
    assert all(f in str(e.value) for f in frags), str(e.value)


def test_nested_kwargs_are_converted_like_settings():
    cfg = TrainConfig(data_kwargs={"fps": "12", "context": (-2, 1), "num_sequences": 2.0},
                      model_kwargs={"init_depth": "1e1", "dropout": None}).validate()
    assert cfg.data_kwargs == {"fps": 12.0, "context": [-2, 1], "num_sequences": 2}
    assert cfg.model_kwargs == {"init_depth": 10.0, "dropout": None}


def test_every_data_set_and_model_argument_has_a_table_entry():
    """packnet/specs.py lists exactly what each class takes from a config, and
    each class's defaults pass its own table."""
    import inspect

    from packnet import data, models, specs

    def params(cls, drop):
        return {p.name: p for p in inspect.signature(cls).parameters.values()
                if p.name not in drop and p.kind is not p.VAR_KEYWORD}

    pairs = [(specs.SYNTHETIC, data.SyntheticDriving, {"split", "size", "transform"}),
             (specs.KITTI, data.KITTIRaw, {"size", "transform"}),
             (specs.FOLDER, data.FolderDataset, {"size", "transform"}),
             (specs.POSE_KWARGS, models.PoseNet, {"nb_ref_imgs"})]
    pairs += [(specs.MODEL_KWARGS[m], getattr(models, m), set()) for m in specs.DEPTH_MODELS]
    for table, cls, drop in pairs:
        ps = params(cls, drop)
        extra = {"split_files"} if cls is data.KITTIRaw else set()
        assert set(table) == set(ps) | extra, cls.__name__
        for name, p in ps.items():
            if p.default is not p.empty:
                table[name].convert(p.default)   # raises if a default is out of its range


def test_the_registries_name_every_data_set_and_depth_network():
    """specs.DATASETS and specs.DEPTH_MODELS, the one list of each (read by
    TrainConfig, the CLI and packnet.release), name what make_dataset builds
    and the depth networks packnet.models has, and the docs list them."""
    import inspect
    import re

    from packnet import cli, config, data, models, specs
    from packnet.models import packnet01

    assert config.DATASETS is specs.DATASETS and config.DEPTH_MODELS is specs.DEPTH_MODELS
    assert re.findall(r'name == "(\w+)"', inspect.getsource(data.make_dataset)) == \
        list(specs.DATASETS)
    with pytest.raises(ValueError, match=", ".join(specs.DATASETS)):
        data.make_dataset("imagenet")
    assert tuple(packnet01.__all__) == specs.DEPTH_MODELS
    assert all(issubclass(getattr(models, m), torch.nn.Module) for m in specs.DEPTH_MODELS)
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    for command in ("train", "eval"):
        assert tuple(commands[command]._option_string_actions["--data"].choices) == \
            specs.DATASETS, command
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "packnet.md")) as f:
        doc = f.read()
    missing = [n for n in specs.DATASETS + specs.DEPTH_MODELS if f"`{n}" not in doc]
    assert not missing, f"docs/packnet.md does not list {missing}"


def test_adjustable_on_resume_is_read_from_the_fields():
    """Each setting says itself whether a resume may change it (its field's
    metadata); ADJUSTABLE_ON_RESUME is derived from them, in field order."""
    import dataclasses

    from packnet import config
    marked = [f.name for f in dataclasses.fields(TrainConfig) if f.metadata["adjustable"]]
    assert config.ADJUSTABLE_ON_RESUME == tuple(marked)
    assert {"steps", "lr", "device", "progress"} <= set(marked)
    assert not {"name", "out_dir", "model", "data", "size", "seed"} & set(marked)


def test_a_retired_setting_of_an_old_run_is_ignored(tmp_path):
    """num_workers (reserved, never used) is gone: the config of an earlier
    version's checkpoint or YAML that has it still loads, resumes and is
    evaluated (packnet eval reads it with from_dict)."""
    from packnet import config
    assert "num_workers" in config.RETIRED and not hasattr(TrainConfig(), "num_workers")
    assert TrainConfig.from_dict({"num_workers": 2, "lr": 1e-3}, validate=True).lr == 1e-3
    Trainer(_cfg(tmp_path, steps=1), dataset=_Pairs(), log=lambda m: None).fit()
    path = tmp_path / "t" / "checkpoint.pt"
    ck = load_checkpoint(path)
    ck["config"]["num_workers"] = 2
    torch.save(ck, path)
    assert config.resume_changes(ck["config"], _cfg(tmp_path, steps=2)) == \
        ([], [("steps", 1, 2)])
    TrainConfig.from_dict(ck["config"])
    tr = Trainer(_cfg(tmp_path, steps=2), dataset=_Pairs(), log=lambda m: None).fit(resume=True)
    assert tr.step == 2


def test_fit_with_nothing_to_train_touches_no_file(tmp_path):
    """Trainer API: a resume at its last step rewrites nothing; steps below the
    run's step is refused (the checkpoint would record the smaller value)."""
    Trainer(_cfg(tmp_path, steps=2), dataset=_Pairs(), log=lambda m: None).fit()
    run_dir = tmp_path / "t"
    stamps = {f: os.stat(run_dir / f).st_mtime_ns for f in ("checkpoint.pt", "log.csv")}
    tr = Trainer(_cfg(tmp_path, steps=2), dataset=_Pairs(), log=lambda m: None).fit(resume=True)
    assert tr.step == 2
    assert {f: os.stat(run_dir / f).st_mtime_ns for f in stamps} == stamps
    with pytest.raises(ValueError, match="at step 2 and does not go back"):
        Trainer(_cfg(tmp_path, steps=1), dataset=_Pairs(), log=lambda m: None).fit(resume=True)
    assert load_checkpoint(run_dir / "checkpoint.pt")["config"]["steps"] == 2
