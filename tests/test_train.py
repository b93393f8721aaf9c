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


def _flaky(tr, bad_calls):
    """Make the loss terms of the calls in bad_calls (1-based) NaN."""
    real = tr.step_fn.terms
    calls = {"n": 0}

    def flaky(inputs):
        calls["n"] += 1
        out, inv = real(inputs)
        if bad_calls(calls["n"]):
            out["photometric"] = out["photometric"] * float("nan")
            out["loss"] = out["loss"] * float("nan")
        return out, inv
    tr.step_fn.terms = flaky


def test_non_finite_loss_is_skipped_then_stops(tmp_path):
    logged = []
    tr = Trainer(_cfg(tmp_path, max_bad_steps=3), dataset=_Pairs(), log=logged.append)
    _flaky(tr, lambda n: n == 2 or n >= 4)
    with pytest.raises(FloatingPointError, match=r"stopping at step 5: 3 steps in a row.*photometric"):
        tr.fit()
    assert tr.skipped_steps == 4
    assert [m.split(";")[0] for m in logged if "skipped" in m] == [
        f"step {s}: non-finite loss, photometric" for s in (1, 3, 4, 5)]
    assert [m for m in logged if m.startswith("step 5:")][0].endswith("(3 in a row)")


def test_a_stop_between_reads_freezes_the_networks(tmp_path):
    """log_every=4: the host reads the flags every 4 steps, so it learns of the
    stop (3 non-finite steps in a row, at step 4) only at step 8; the steps in
    between change nothing, and the error names step 4."""
    tr = Trainer(_cfg(tmp_path / "a", max_bad_steps=3, log_every=4, steps=12, ckpt_every=100),
                 dataset=_Pairs(), log=lambda m: None)
    _flaky(tr, lambda n: 3 <= n <= 5)
    seen = {}
    real_step = tr.train_step

    def step(batch):
        out = real_step(batch)
        seen[tr.step] = _params(tr)
        return out
    tr.train_step = step
    with pytest.raises(FloatingPointError, match=r"stopping at step 4: 3 steps in a row"):
        tr.fit()
    assert tr.step == 4 and tr.skipped_steps == 3
    for s in range(3, 9):  # nothing changed after step 2's update
        assert all(torch.equal(a, b) for a, b in zip(seen[s], seen[2])), s


def test_velocity_warmup_ramps_the_weight(tmp_path):
    """velocity_warmup=N: the velocity term is weight * min(1, step / N)."""
    batch = torch.utils.data.default_collate([_Pairs()[i] for i in range(2)])
    plain = Trainer(_cfg(tmp_path, velocity_weight=0.3, velocity_warmup=0), dataset=_Pairs(),
                    log=lambda m: None)
    ramp = Trainer(_cfg(tmp_path, velocity_weight=0.3, velocity_warmup=4), dataset=_Pairs(),
                   log=lambda m: None)
    ramp.load_state(plain.state())
    full = plain.loss_terms(batch)["velocity"]
    assert full > 0
    for step, frac in ((0, 0.0), (1, 0.25), (3, 0.75), (4, 1.0), (9, 1.0)):
        ramp.step_fn.load_counters(step, 0, 0)
        assert torch.allclose(ramp.loss_terms(batch)["velocity"], frac * full), step


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


def test_non_finite_inverse_depth_is_a_skipped_step(tmp_path):
    """A non-finite inverse depth (at any scale) skips and counts the step like
    a non-finite loss, naming the scale."""
    logged = []
    tr = Trainer(_cfg(tmp_path, max_bad_steps=2, steps=4), dataset=_Pairs(), log=logged.append)
    net = tr.step_fn.depth_fwd

    def nan_scale_1(rgb):
        out = list(net(rgb))
        out[1] = out[1] * float("nan")
        return out
    tr.step_fn.depth_fwd = nan_scale_1
    with pytest.raises(FloatingPointError, match=r"stopping at step 1: 2 steps in a row.*"
                                                 r"inverse depth \(scale 1\)"):
        tr.fit()
    assert tr.skipped_steps == 2
    assert any("step 0: non-finite loss, smoothness, inverse depth (scale 1)" in m
               for m in logged)


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
    """make_adam's Adam (fused, a device-tensor LR) gives the per-parameter
    loop's update to float tolerance, over a few steps with changing grads."""
    from packnet.train import make_adam
    g = torch.Generator().manual_seed(0)
    shapes = [(64, 32, 3, 3), (64,), (7, 5), (1,)]
    start = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(4)]
    fast = [p.clone().requires_grad_() for p in start]
    slow = [p.clone().requires_grad_() for p in start]
    opt = make_adam(fast, torch.tensor(1e-2))
    assert all(g["fused"] and g["capturable"] for g in opt.param_groups)
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


# --------------------------------------------------- the step without host syncs
class _SyncCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """The ops that make the host wait for the device: a read of a value
    (item, bool, float, tolist of a device tensor), a data-dependent shape
    (nonzero, a boolean index), a copy between devices."""

    SYNCING = ("aten._local_scalar_dense", "aten.is_nonzero", "aten.nonzero",
               "aten.masked_select", "aten.unique")

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket).replace("aten::", "aten.")
        if name.startswith(self.SYNCING) or func is torch.ops.aten.index.Tensor and any(
                t is not None and t.dtype == torch.bool for t in args[1]):
            self.found.append(name)
        if name in ("aten._to_copy", "aten.copy_"):
            src = args[1] if name == "aten.copy_" else args[0]
            dst = args[0].device if name == "aten.copy_" else kwargs.get("device", src.device)
            if src.device != torch.device(dst):
                self.found.append(f"{name} {src.device} -> {dst}")
        return func(*args, **kwargs)


def test_a_training_step_never_waits_for_the_device(tmp_path):
    """Between two log steps, train_step reads nothing back from the device:
    no value, no data-dependent shape, no copy between devices (on the GPU
    each would be a host sync; here the dispatcher shows them)."""
    tr = Trainer(_cfg(tmp_path, log_every=100, velocity_weight=0.1, supervised_weight=0.1,
                      amp=False), dataset=_Pairs(), log=lambda m: None)
    batches = [torch.utils.data.default_collate([tr.dataset[i] for i in range(j, j + 2)])
               for j in (0, 2, 4)]
    tr.train_step(batches[0])  # the first step makes Adam's state and the cached constants
    with _SyncCounter() as counter:
        for b in batches:
            tr.train_step(b)
    assert counter.found == []
    tr.sync()  # and the host reads them when it asks
    assert tr.skipped_steps == 0


def _old_style_run(tmp_path, batches, bad):
    """The step as it was before the device flags (the reference): the host
    checks each term, skips a non-finite step before backward, and steps a
    StepLR with a float learning rate."""
    tr = Trainer(_cfg(tmp_path / "old", velocity_weight=0.1), dataset=_Pairs(),
                 log=lambda m: None)
    params = list(tr.depth_net.parameters()) + list(tr.pose_net.parameters())
    opt = torch.optim.Adam(params, lr=tr.cfg.lr, fused=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    losses = []
    for i, batch in enumerate(batches):
        opt.zero_grad(set_to_none=True)
        tr.step_fn.steps.fill_(i)  # the warm-up's step
        terms, _ = tr.step_fn.terms(tr.inputs(batch))
        if i in bad:
            terms = {k: v * float("nan") for k, v in terms.items()}
        losses.append(float(terms["loss"].detach()))
        if not all(torch.isfinite(v).all() for v in terms.values()):
            continue
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, tr.cfg.clip_grad)
        opt.step()
        sched.step()
    return params, opt, losses


def test_the_device_step_equals_the_host_checked_step(tmp_path):
    """Five steps, the third one non-finite: the same losses, parameters and
    Adam state as the step that checked each term on the host and skipped
    before backward (the learning rate halving every 2 updates, the
    velocity weight ramping up)."""
    batches = [torch.utils.data.default_collate([_Pairs()[i] for i in (j % 8, (j + 3) % 8)])
               for j in range(5)]
    ref_params, ref_opt, ref_losses = _old_style_run(tmp_path, batches, bad={2})
    tr = Trainer(_cfg(tmp_path / "new", velocity_weight=0.1, steps=5, lr_step_fraction=0.4),
                 dataset=_Pairs(), log=lambda m: None)
    _flaky(tr, lambda n: n == 3)
    losses = [float(tr.train_step(b)["loss"]) for b in batches]
    tr.sync()
    assert tr.skipped_steps == 1 and tr.step_fn.counters()["updates"] == 4
    assert losses[2] != losses[2] and ref_losses[2] != ref_losses[2]  # NaN both
    assert [x for i, x in enumerate(losses) if i != 2] == \
        [x for i, x in enumerate(ref_losses) if i != 2]
    params = list(tr.depth_net.parameters()) + list(tr.pose_net.parameters())
    for p, q in zip(params, ref_params):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
        for k in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(tr.opt.state[p][k], ref_opt.state[q][k], rtol=0, atol=0)


def test_a_callback_sees_every_step_and_the_log_steps_values(tmp_path):
    """Python users add callbacks: on_step_end gets every step's device
    tensors, and on log steps the host values the CSV log writes."""
    from packnet.callbacks import Callback, default_callbacks

    class Record(Callback):
        def __init__(self):
            self.events = []

        def on_fit_start(self, trainer):
            self.events.append(("start", trainer.step))

        def on_step_end(self, trainer, batch, out, values):
            self.events.append((trainer.step, sorted(values) if values else None,
                                out["loss"].device.type))

        def on_fit_end(self, trainer):
            self.events.append(("end", trainer.step))

    rec = Record()
    cfg = _cfg(tmp_path, steps=4, log_every=2)
    Trainer(cfg, dataset=_Pairs(), log=lambda m: None,
            callbacks=[*default_callbacks(cfg), rec]).fit()
    keys = ["images_per_s", "loss", "lr", "photometric", "smoothness", "velocity"]
    assert rec.events == [("start", 0), (1, None, "cpu"), (2, keys, "cpu"), (3, None, "cpu"),
                          (4, keys, "cpu"), ("end", 4)]
    rows = open(os.path.join(tmp_path, "t", "log.csv")).read().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "2", "4"]


def test_train_and_evaluate_is_the_cli_in_one_call(tmp_path):
    """packnet.train_and_evaluate(cfg): training, evaluation and summary.json,
    as `packnet train` writes them; a resume with nothing to do returns None
    and rewrites nothing."""
    import json

    import packnet
    cfg = TrainConfig(name="py", out_dir=str(tmp_path), size=(32, 64), batch_size=2, steps=2,
                      progress=False, preview_every=0, num_scales=1,
                      data_kwargs={"num_sequences": 2, "frames_per_sequence": 6})
    summary = packnet.train_and_evaluate(cfg, log=lambda m: None)
    on_disk = json.load(open(tmp_path / "py" / "summary.json"))
    assert summary["step"] == on_disk["step"] == 2
    assert summary["eval"]["metric"]["abs_rel"] == on_disk["eval"]["metric"]["abs_rel"] > 0
    stamp = os.stat(tmp_path / "py" / "summary.json").st_mtime_ns
    assert packnet.train_and_evaluate(cfg, resume=True, log=lambda m: None) is None
    assert os.stat(tmp_path / "py" / "summary.json").st_mtime_ns == stamp


def test_cuda_graph_setting():
    with pytest.raises(ValueError, match=r"cuda_graph = 'on': a CUDA graph needs a CUDA device"):
        TrainConfig(cuda_graph="on", device="cpu").validate()
    with pytest.raises(ValueError, match=r"cuda_graph = 'sometimes': choose auto, on, off"):
        TrainConfig(cuda_graph="sometimes").validate()
    assert not Trainer(TrainConfig(device="cpu", size=(32, 64), progress=False),
                       dataset=_Pairs(), log=lambda m: None).graph  # auto: off on the CPU


def test_device_inputs_keep_their_buffers():
    """static=True (a captured graph's inputs): every batch lands in the same
    device tensors, with the values the eager inputs have."""
    from packnet.step import DeviceInputs
    cfg = TrainConfig(velocity_weight=0.1, supervised_weight=0.1)
    batches = [torch.utils.data.default_collate([_Pairs()[i], _Pairs()[i + 1]]) for i in (0, 2)]
    static = DeviceInputs(cfg, torch.device("cpu"), static=True)
    eager = DeviceInputs(cfg, torch.device("cpu"))
    first = static(batches[0])
    ptrs = {k: v.data_ptr() for k, v in first.items() if torch.is_tensor(v)}
    second = static(batches[1])
    assert {k: v.data_ptr() for k, v in second.items() if torch.is_tensor(v)} == ptrs
    want = eager(batches[1])
    assert set(want) == {"rgb", "rgb_context", "intrinsics", "translation_norms", "depth"}
    for k in ("rgb", "intrinsics", "translation_norms", "depth"):
        assert torch.equal(second[k], want[k])
    assert all(torch.equal(a, b) for a, b in zip(second["rgb_context"], want["rgb_context"]))


def test_eval_curve_and_its_picture(tmp_path):
    """eval_every_minutes: curve.csv gets a row at the start, about every
    interval of training time, and at the end; tools.plot_curve draws it."""
    import csv

    import packnet
    from tools import plot_curve
    cfg = TrainConfig(name="curve", out_dir=str(tmp_path), size=(32, 64), batch_size=2,
                      steps=3, progress=False, preview_every=0, num_scales=1,
                      eval_every_minutes=1e-6,  # every step
                      data_kwargs={"num_sequences": 2, "frames_per_sequence": 6})
    packnet.train_and_evaluate(cfg, log=lambda m: None)
    rows = list(csv.DictReader(open(tmp_path / "curve" / "curve.csv")))
    steps = [int(r["step"]) for r in rows]
    assert steps[0] == 0 and steps[-1] == 3 and set(steps) == {0, 1, 2, 3}
    minutes = [float(r["minutes"]) for r in rows]
    assert minutes == sorted(minutes) and minutes[0] == 0.0
    assert all(float(r["abs_rel"]) > 0 for r in rows)
    out = tmp_path / "curve.png"
    assert plot_curve.main([str(tmp_path / "curve"), "--out", str(out)]) == 0
    from packnet.image import read_image
    assert read_image(out).shape == (plot_curve.H, plot_curve.W, 3)
    run = str(tmp_path / "curve")
    assert plot_curve.main([run + "=fused ops", run + "=again", "--out", str(out),
                            "--ymax", "0.5"]) == 0
    with pytest.raises(SystemExit):  # two lines, one label
        plot_curve.main([run + "=a", run + "=a", "--out", str(out)])


def test_synthetic_evaluation_frames_do_not_depend_on_the_training_context():
    """A run that trains with context [-2, 2] is scored on the same test (and
    val) frames as the default [-1, 1]: the targets with both neighbours."""
    from packnet.train import make_dataset
    kw = {"num_sequences": 2, "frames_per_sequence": 8}
    default = TrainConfig(size=(32, 64), data_kwargs=dict(kw))
    wide = TrainConfig(size=(32, 64), data_kwargs=dict(kw, context=[-2, 2]))
    assert len(make_dataset(wide, "train")) == 2 * 4 < len(make_dataset(default, "train"))
    for split in ("val", "test"):
        a, b = make_dataset(default, split), make_dataset(wide, split)
        assert a.targets == b.targets == list(range(1, 7))
        assert torch.equal(a[3]["depth"], b[3]["depth"])
