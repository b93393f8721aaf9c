"""Self-supervised training of a PackNet depth network and PoseNet.

One TrainConfig dataclass holds every setting (a YAML file or command-line
flags fill it; it is printed at start and saved in every checkpoint).
Trainer runs: photometric (+ smoothness) loss, optional velocity loss (which
makes the scale metric) and optional supervised loss; Adam for both
networks; StepLR(30 of 50 epochs, 0.5) scaled to the run's length; gradient
clipping; bf16 autocast on CUDA (`amp`); `ops` picks packops' fused backends
or the reference; DistributedDataParallel when launched by torchrun.

Checkpoints are written atomically (a temporary file, then os.replace) with
the networks, optimizer, scheduler, step and RNG states, so killing the
process at any moment loses at most the steps since the last checkpoint and
never leaves a broken file; `resume` continues exactly (same batches, same
random draws). A non-finite loss skips its step and is counted; `max_bad_steps`
in a row stop the run with a message naming the step and the term.
"""
import contextlib
import csv
import dataclasses
import os
import random
import sys
import time

import numpy as np
import torch

import packops

from . import geometry, models
from .losses import MultiViewPhotometricLoss, SupervisedLoss, VelocityLoss

__all__ = ["TrainConfig", "Trainer", "save_checkpoint", "load_checkpoint"]


@dataclasses.dataclass
class TrainConfig:
    """Every training setting. The defaults are the main job's preset: about
    10 minutes on a 2-core CPU (1500 steps of 4 synthetic 64x192 frames).

    Three choices make a metric depth learnable in that time, none of them a
    change of parameters: the inverse-depth heads start at 10 m
    (model_kwargs init_depth; the release starts near 1 m), PoseNet's
    translation output is scaled by 0.1 instead of 0.01 (pose_kwargs
    translation_scale; at 0.01 a 1 m translation takes thousands of steps)
    and the velocity loss ramps up over its first 200 steps (velocity_warmup:
    at full weight from step 0 it inflates the translation before its
    direction is learned, and min-reprojection then leaves one context frame
    stuck with the wrong direction). configs/packnet01-kitti.yaml holds the
    paper's recipe for the full network.
    """
    name: str = "synthetic-tiny"
    out_dir: str = "runs"
    # data: a dataset factory name and its keyword arguments (see packnet.data)
    data: str = "synthetic"
    data_kwargs: dict = dataclasses.field(default_factory=dict)
    size: tuple = (64, 192)                 # (H, W), divisible by 32
    augment: bool = False                   # colour jitter + horizontal flip (the paper's recipe)
    # model
    model: str = "PackNetTiny"
    # the default preset's priors for a short metric run (see the class docstring)
    model_kwargs: dict = dataclasses.field(default_factory=lambda: {"init_depth": 10.0})
    pose_kwargs: dict = dataclasses.field(                  # PoseNet(nb_ref_imgs=2, **)
        default_factory=lambda: {"translation_scale": 0.1})
    # optimisation
    batch_size: int = 4
    steps: int = 1500
    lr: float = 5e-4                        # the paper's 2e-4 is for PackNet01 over 50 epochs
    lr_step_fraction: float = 0.6           # StepLR(30, 0.5) of a 50-epoch run, scaled
    lr_gamma: float = 0.5
    clip_grad: float = 10.0
    # losses
    num_scales: int = 4
    velocity_weight: float = 0.05           # 0 turns the velocity loss (metric scale) off
    velocity_warmup: int = 200              # steps over which its weight ramps up from 0
    supervised_weight: float = 0.0
    smooth_weight: float = 0.001
    # execution
    ops: str = "fused"                      # fused | reference
    amp: bool = False                       # bf16 autocast (CUDA)
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    max_bad_steps: int = 10
    log_every: int = 10
    ckpt_every: int = 100
    preview_every: int = 250
    progress: bool = True

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown setting(s) {unknown}; known: {sorted(names)}")
        d = dict(d)
        if "size" in d:
            d["size"] = tuple(d["size"])
        return cls(**d)

    def validate(self):
        H, W = self.size
        if H % 32 or W % 32:
            raise ValueError(f"TrainConfig: size {self.size} must be divisible by 32")
        if self.ops not in ("fused", "reference"):
            raise ValueError(f"TrainConfig: ops must be 'fused' or 'reference', got {self.ops!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("TrainConfig: steps and batch_size must be >= 1")
        if self.velocity_warmup < 0:
            raise ValueError(f"TrainConfig: velocity_warmup must be >= 0 steps, got "
                             f"{self.velocity_warmup}")
        return self


# ------------------------------------------------------------ checkpoints
def save_checkpoint(path, state):
    """Atomic: a reader sees the old file or the new one, never a partial one."""
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    return torch.load(path, map_location=map_location, weights_only=False)


def _rng_state():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s):
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


# ------------------------------------------------------------------ data
def make_dataset(cfg, split="train"):
    from . import data as data_pkg  # imported lazily: only training needs it
    return data_pkg.make_dataset(cfg.data, split=split, size=tuple(cfg.size), **cfg.data_kwargs)


def _augment(item, cfg, epoch, j):
    """Colour jitter and flip drawn from (seed, epoch, item): resumable, and
    the same on every rank."""
    from .data import Augmentation
    g = torch.Generator().manual_seed((cfg.seed * 1000003 + epoch) * 1000003 + j)
    return Augmentation(size=None, generator=g)(item)


def _batches(dataset, cfg, rank, world, epoch):
    """A deterministic order per epoch (seed, epoch): resuming mid-epoch replays it."""
    g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
    order = torch.randperm(len(dataset), generator=g).tolist()
    per_rank = len(order) // world
    order = order[rank * per_rank:(rank + 1) * per_rank]
    for i in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
        items = [dataset[j] for j in order[i:i + cfg.batch_size]]
        if cfg.augment:
            items = [_augment(it, cfg, epoch, j) for it, j in zip(items, order[i:i + cfg.batch_size])]
        yield torch.utils.data.default_collate(items)


class Trainer:
    def __init__(self, cfg, dataset=None, log=print):
        self.cfg = cfg.validate()
        self.log = log
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)
        self.rank = torch.distributed.get_rank() if self.distributed else 0
        self.world = torch.distributed.get_world_size() if self.distributed else 1
        dev = cfg.device
        if dev == "auto":
            dev = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(dev)
        torch.manual_seed(cfg.seed)
        self.depth_net = getattr(models, cfg.model)(**cfg.model_kwargs).to(self.device)
        self.pose_net = models.PoseNet(nb_ref_imgs=2, **cfg.pose_kwargs).to(self.device)
        self.dataset = dataset if dataset is not None else make_dataset(cfg)
        params = list(self.depth_net.parameters()) + list(self.pose_net.parameters())
        self.opt = torch.optim.Adam(params, lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.StepLR(
            self.opt, step_size=max(1, round(cfg.steps * cfg.lr_step_fraction)), gamma=cfg.lr_gamma)
        self.photo = MultiViewPhotometricLoss(num_scales=cfg.num_scales,
                                              smooth_weight=cfg.smooth_weight,
                                              fused=cfg.ops == "fused")
        self.velocity = VelocityLoss(cfg.velocity_weight)
        self.supervised = SupervisedLoss("l1", cfg.supervised_weight)
        self.step = 0
        self.bad_in_a_row = 0
        self.skipped_steps = 0
        self.run_dir = os.path.join(cfg.out_dir, cfg.name)
        self.ckpt_path = os.path.join(self.run_dir, "checkpoint.pt")
        if self.distributed:
            ddp = torch.nn.parallel.DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.depth_ddp, self.pose_ddp = ddp(self.depth_net, ids), ddp(self.pose_net, ids)
        else:
            self.depth_ddp, self.pose_ddp = self.depth_net, self.pose_net

    # --------------------------------------------------------- state
    def state(self):
        return {"model": {"depth_net": self.depth_net.state_dict(),
                          "pose_net": self.pose_net.state_dict()},
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "step": self.step, "skipped_steps": self.skipped_steps,
                "rng": _rng_state(), "config": dataclasses.asdict(self.cfg)}

    def load_state(self, s):
        self.depth_net.load_state_dict(s["model"]["depth_net"])
        self.pose_net.load_state_dict(s["model"]["pose_net"])
        self.opt.load_state_dict(s["optimizer"])
        self.sched.load_state_dict(s["scheduler"])
        self.step, self.skipped_steps = s["step"], s.get("skipped_steps", 0)
        _set_rng_state(s["rng"])

    def save(self):
        if self.rank == 0:
            os.makedirs(self.run_dir, exist_ok=True)
            save_checkpoint(self.ckpt_path, self.state())

    # ---------------------------------------------------------- step
    def losses(self, batch):
        cfg, dev = self.cfg, self.device
        rgb = batch["rgb"].to(dev)
        ctx = [c.to(dev) for c in batch["rgb_context"]]
        K = batch["intrinsics"].to(dev).float()
        amp = contextlib.nullcontext() if not self.cfg.amp else torch.autocast(
            dev.type, dtype=torch.bfloat16)
        with amp:
            inv_depths = self.depth_ddp(rgb)
            vec = self.pose_ddp(rgb, ctx)
        inv_depths = [d.float() for d in inv_depths]
        poses = [geometry.pose_vec2mat(vec[:, j].float()) for j in range(vec.shape[1])]
        terms = self.photo(rgb, ctx, inv_depths, K, poses)
        total = terms["loss"]
        out = {"photometric": terms["photometric"].detach(), "smoothness": terms["smoothness"].detach()}
        if cfg.velocity_weight > 0:
            if "speed" not in batch:
                raise ValueError("packnet.train: the velocity loss needs each sample's speed "
                                 "(KITTI oxts, a folder's speed.txt); give it, or turn the "
                                 "loss off with --no-velocity (velocity_weight=0)")
            ts = batch["timestamps_context"]
            ts = torch.stack(list(ts), 1) if isinstance(ts, (list, tuple)) else ts  # [B, n]
            dt = ts.to(dev).float() - batch["timestamp"].to(dev).float()[:, None]
            gt = (batch["speed"].to(dev).float()[:, None] * dt.abs())
            v = self.velocity(poses, gt)
            if cfg.velocity_warmup > 0:
                v = v * min(1.0, self.step / cfg.velocity_warmup)
            total = total + v
            out["velocity"] = v.detach()
        if cfg.supervised_weight > 0 and "depth" in batch:
            s = self.supervised(inv_depths, batch["depth"].to(dev))
            total = total + s
            out["supervised"] = s.detach()
        out["loss"] = total
        return out

    def train_step(self, batch):
        self.opt.zero_grad(set_to_none=True)
        terms = self.losses(batch)
        bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
        if bad:
            self.bad_in_a_row += 1
            self.skipped_steps += 1
            self.log(f"step {self.step}: non-finite {', '.join(bad)}; step skipped "
                     f"({self.bad_in_a_row} in a row)")
            if self.bad_in_a_row >= self.cfg.max_bad_steps:
                raise FloatingPointError(
                    f"stopping at step {self.step}: {self.bad_in_a_row} steps in a row had a "
                    f"non-finite loss (last: {', '.join(bad)})")
            self.step += 1
            return {k: float("nan") for k in terms}
        self.bad_in_a_row = 0
        terms["loss"].backward()
        params = list(self.depth_net.parameters()) + list(self.pose_net.parameters())
        torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad)
        self.opt.step()
        self.sched.step()
        self.step += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    # ----------------------------------------------------------- run
    def fit(self, resume=False, stop_after=None):
        """Train to cfg.steps (or stop_after steps from here, for tests)."""
        cfg = self.cfg
        if resume and os.path.exists(self.ckpt_path):
            self.load_state(load_checkpoint(self.ckpt_path, self.device))
            self.log(f"resumed from {self.ckpt_path} at step {self.step}")
        target = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        per_epoch = max(1, len(self.dataset) // self.world // cfg.batch_size)
        bar = _progress(target, self.step, cfg.progress and self.rank == 0)
        log_file = None
        if self.rank == 0:
            os.makedirs(self.run_dir, exist_ok=True)
            new = not os.path.exists(os.path.join(self.run_dir, "log.csv"))
            log_file = open(os.path.join(self.run_dir, "log.csv"), "a", newline="")
            writer = csv.writer(log_file)
            if new:
                writer.writerow(["step", "loss", "photometric", "smoothness", "velocity", "lr",
                                 "images_per_s"])
        tb = _tensorboard(self.run_dir) if self.rank == 0 else None
        backend = "reference" if cfg.ops == "reference" else "auto"
        t0, seen = time.perf_counter(), 0
        try:
            with packops.use_backend(backend):
                while self.step < target:
                    epoch, skip = divmod(self.step, per_epoch)
                    for i, batch in enumerate(_batches(self.dataset, cfg, self.rank, self.world, epoch)):
                        if i < skip:
                            continue  # resumed mid-epoch: replay the epoch's order
                        terms = self.train_step(batch)
                        seen += cfg.batch_size * self.world
                        ips = seen / (time.perf_counter() - t0)
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(loss=f"{terms['loss']:.4f}", img_s=f"{ips:.1f}")
                        if self.rank == 0 and self.step % cfg.log_every == 0:
                            writer.writerow([self.step, terms["loss"], terms["photometric"],
                                             terms["smoothness"], terms.get("velocity", ""),
                                             self.sched.get_last_lr()[0], f"{ips:.2f}"])
                            log_file.flush()
                            if tb is not None:
                                for k, v in terms.items():
                                    tb.add_scalar(f"train/{k}", v, self.step)
                                tb.add_scalar("train/images_per_s", ips, self.step)
                        if self.rank == 0 and cfg.preview_every and self.step % cfg.preview_every == 0:
                            self.write_preview(batch)
                        if self.step % cfg.ckpt_every == 0:
                            self.save()
                        if self.step >= target:
                            break
        finally:
            self.train_seconds = time.perf_counter() - t0
            self.images_per_s = seen / max(self.train_seconds, 1e-9)
            if bar is not None:
                bar.close()
            if log_file is not None:
                log_file.close()
            if tb is not None:
                tb.close()
        self.save()
        return self


    @torch.no_grad()
    def write_preview(self, batch):
        """previews/step_<N>.png: the input, the colourised predicted depth and,
        when the batch has it, the ground truth."""
        from . import visualize
        was_training = self.depth_net.training
        self.depth_net.eval()
        try:
            rgb = batch["rgb"][:1].to(self.device)
            depth = geometry.inv2depth(self.depth_net(rgb).float())[0].cpu()
        finally:
            self.depth_net.train(was_training)
        gt = batch["depth"][0] if "depth" in batch else None
        path = os.path.join(self.run_dir, "previews", f"step_{self.step:07d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        visualize.save_png(path, visualize.preview(rgb[0].cpu(), depth, gt))
        return path


def _tensorboard(run_dir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: the CSV log has the same numbers
        return None
    return SummaryWriter(os.path.join(run_dir, "tensorboard"))


def _progress(total, initial, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="train", unit="step", file=sys.stderr)
