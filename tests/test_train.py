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
