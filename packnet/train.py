"""Self-supervised training of a PackNet depth network and PoseNet.

One TrainConfig dataclass (packnet/config.py) holds every setting (a YAML
file or command-line flags fill it; it is printed at start and saved in
every checkpoint); packnet/checkpoint.py reads and writes a run's files.
Trainer runs: photometric (+ smoothness) loss, optional velocity loss (which
makes the scale metric) and optional supervised loss; Adam for both
networks (torch's fused Adam where available); StepLR(30 of 50 epochs, 0.5)
scaled to the run's length; gradient clipping; bf16 autocast on CUDA (`amp`);
`ops` picks packops' fused backends or the reference;
DistributedDataParallel when launched by torchrun.

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
import sys
import time

import torch

import packops

from . import geometry, models
from .checkpoint import (LOG_COLUMNS, TRAINING_KEYS, CheckpointError, RunLock,
                         UnsafeCheckpointError, check_run_dir, clean_stale_temporaries, clear_run,
                         first_line, load_checkpoint, rng_state, save_checkpoint, set_rng_state)
from .config import (ADJUSTABLE_ON_RESUME, ConfigError, TrainConfig, format_changes,
                     resume_changes, settings_help, show)
from .losses import MultiViewPhotometricLoss, SupervisedLoss, VelocityLoss

__all__ = ["TrainConfig", "ConfigError", "Trainer", "save_checkpoint", "load_checkpoint",
           "CheckpointError", "UnsafeCheckpointError", "check_run_dir", "resume_changes",
           "settings_help"]


# ------------------------------------------------------------ optimizer
def make_adam(params, lr):
    """(Adam, its implementation flags): torch's fused Adam where this torch
    has it for the parameters' device (CPU since torch 2.4, CUDA), else the
    multi-tensor (foreach) one, else the per-parameter loop. Same update to
    float tolerance (tests/test_train.py); measured on the 2-core CPU for
    PackNet01 + PoseNet (130M parameters): 124 ms a step fused, 533 ms
    foreach, 834 ms the loop."""
    for flags in ({"fused": True, "foreach": False}, {"foreach": True, "fused": False}):
        try:
            return torch.optim.Adam(params, lr=lr, **flags), flags
        except (RuntimeError, ValueError):  # not supported for this device or dtype
            continue
    return torch.optim.Adam(params, lr=lr, foreach=False, fused=False), {"foreach": False,
                                                                          "fused": False}


# ------------------------------------------------------------------ data
def make_dataset(cfg, split="train"):
    from . import data as data_pkg  # imported lazily: only training needs it
    return data_pkg.make_dataset(cfg.data, split=split, size=tuple(cfg.size), **cfg.data_kwargs)


def _sub_seed(multiplier, seed, *keys):
    """A generator seed derived from the run's seed and `keys`: each key folded
    in as x * multiplier + key, modulo 2**64 (the range manual_seed takes).
    Wrapping, not a hash: every seed that fitted before wrapping existed gives
    the batch order and augmentation it always gave (runs stay comparable and
    resumable), and a large seed (20240101 with augment) no longer overflows.
    multiplier is odd, so distinct seeds give distinct sub-seeds."""
    for key in keys:
        seed = seed * multiplier + key
    return seed % 2 ** 64


def _augment(item, cfg, epoch, j):
    """Colour jitter and flip drawn from (seed, epoch, item): resumable, and
    the same on every rank."""
    from .data import Augmentation
    g = torch.Generator().manual_seed(_sub_seed(1000003, cfg.seed, epoch, j))
    return Augmentation(size=None, generator=g)(item)


def _batches(dataset, cfg, rank, world, epoch):
    """A deterministic order per epoch (seed, epoch): resuming mid-epoch replays it."""
    g = torch.Generator().manual_seed(_sub_seed(100003, cfg.seed, epoch))
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
        self.device = cfg.resolved_device()
        self.backend = cfg.requested_backend()  # ops=reference, else PACKOPS_BACKEND's
        self.dataset = dataset if dataset is not None else make_dataset(cfg)
        self._check_dataset_size(custom=dataset is not None)
        torch.manual_seed(cfg.seed)
        self.depth_net = getattr(models, cfg.model)(**cfg.model_kwargs).to(self.device)
        self.pose_net = models.PoseNet(nb_ref_imgs=2, **cfg.pose_kwargs).to(self.device)
        params = list(self.depth_net.parameters()) + list(self.pose_net.parameters())
        self.opt, self.adam_flags = make_adam(params, cfg.lr)
        self.sched = torch.optim.lr_scheduler.StepLR(
            self.opt, step_size=max(1, round(cfg.steps * cfg.lr_step_fraction)), gamma=cfg.lr_gamma)
        self.photo = MultiViewPhotometricLoss(num_scales=cfg.num_scales,
                                              smooth_weight=cfg.smooth_weight,
                                              upsample_mode=cfg.upsample_mode,
                                              fused=cfg.ops == "fused")
        self.velocity = VelocityLoss(cfg.velocity_weight)
        self.supervised = SupervisedLoss("l1", cfg.supervised_weight)
        self.step = 0
        self.init_info = None   # where the weights came from, after init_from (cfg.init)
        self.bad_in_a_row = 0
        self.skipped_steps = 0
        # training time and images of the whole run (earlier processes' from the
        # checkpoint) and of this process's fit(); see run_seconds
        self.seconds_before, self.images_before = 0.0, 0
        self.train_seconds, self.images_per_s, self._images = 0.0, 0.0, 0
        self._t0 = None
        self.run_dir = os.path.join(cfg.out_dir, cfg.name)
        self.ckpt_path = os.path.join(self.run_dir, "checkpoint.pt")
        self._lock = None  # the run directory's RunLock while fit() runs (rank 0)
        if self.distributed:
            ddp = torch.nn.parallel.DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.depth_ddp, self.pose_ddp = ddp(self.depth_net, ids), ddp(self.pose_net, ids)
        else:
            self.depth_ddp, self.pose_ddp = self.depth_net, self.pose_net
        self.depth_net.checkpoint_activations = cfg.checkpoint_activations
        if cfg.compile:
            # one graph per net (fullgraph: a graph break would be a silent
            # slowdown); compiled at the first step
            self.depth_ddp = torch.compile(self.depth_ddp, fullgraph=True)
            self.pose_ddp = torch.compile(self.pose_ddp, fullgraph=True)

    def _check_dataset_size(self, custom):
        """No batch can be formed from fewer samples than batch_size: say so
        now (the epoch loop would otherwise find no batch, forever)."""
        cfg, n = self.cfg, len(self.dataset)
        per_rank = n // self.world
        if per_rank >= cfg.batch_size:
            return
        what = type(self.dataset).__name__ if custom else f"{cfg.data}, split train"
        procs = f", {per_rank} for each of {self.world} processes" if self.world > 1 else ""
        advice = (f"Lower --batch-size to {per_rank} or less (batch_size={per_rank}), or give "
                  f"more data" if per_rank else "Give more data")
        context = getattr(self.dataset, "context", None)
        if cfg.data == "folder" and not custom and context is not None:
            frames = len(getattr(self.dataset, "files", ()))
            need = ("its previous and next frame" if tuple(context) == (-1, 1) else
                    f"its context frames (offsets {', '.join(map(str, context))})")
            advice += (f" (a folder sample needs {need} in the folder, which has {frames} "
                       f"frame{'s' * (frames != 1)})")
        raise ValueError(f"the training data ({what}) has {n} usable sample{'s' * (n != 1)}"
                         f"{procs}, fewer than batch_size {cfg.batch_size}: no batch can be "
                         f"formed. {advice}")

    # --------------------------------------------------------- state
    def state(self):
        return {"model": {"depth_net": self.depth_net.state_dict(),
                          "pose_net": self.pose_net.state_dict()},
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "step": self.step, "skipped_steps": self.skipped_steps,
                "rng": rng_state(), "config": dataclasses.asdict(self.cfg),
                "train_seconds": self.run_seconds, "images": self.images_before + self._images}

    @property
    def run_seconds(self):
        """Seconds spent training this run, over every process that trained it."""
        now = time.perf_counter() - self._t0 if self._t0 is not None else self.train_seconds
        return self.seconds_before + now

    @property
    def run_images_per_s(self):
        """Images per second over the whole run (every process that trained it)."""
        return (self.images_before + self._images) / max(self.run_seconds, 1e-9)

    def load_state(self, s):
        self.depth_net.load_state_dict(s["model"]["depth_net"])
        self.pose_net.load_state_dict(s["model"]["pose_net"])
        self.opt.load_state_dict(s["optimizer"])
        for group in self.opt.param_groups:  # a checkpoint of another torch or version
            group.update(self.adam_flags)      # keeps this run's implementation
        self.sched.load_state_dict(s["scheduler"])
        self.step, self.skipped_steps = s["step"], s.get("skipped_steps", 0)
        self.seconds_before = float(s.get("train_seconds", 0.0))  # absent before issue 24
        self.images_before = int(s.get("images", 0))
        set_rng_state(s["rng"])

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
        try:
            terms = self.losses(batch)
            bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
            problem = f"non-finite {', '.join(bad)}"
        except FloatingPointError as e:  # the loss's own finiteness check (inverse depth)
            terms, bad, problem = None, ["loss"], str(e)
        if self.distributed:  # every process skips the step, or none (no hang in all-reduce)
            flag = torch.tensor([1.0 if bad else 0.0], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() and not bad:
                bad, problem = ["loss"], "non-finite loss in another process"
        if bad:
            self.bad_in_a_row += 1
            self.skipped_steps += 1
            files = batch.get("filename") if isinstance(batch, dict) else None
            where = f"; batch: {', '.join(map(str, files))}" if isinstance(files, list) else ""
            self.log(f"step {self.step}: {problem}; step skipped ({self.bad_in_a_row} in a row"
                     f"{where})")
            if self.bad_in_a_row >= self.cfg.max_bad_steps:
                raise FloatingPointError(
                    f"stopping at step {self.step}: {self.bad_in_a_row} steps in a row had a "
                    f"non-finite loss (last: {problem})")
            self.step += 1
            keys = terms if terms is not None else ("loss", "photometric", "smoothness")
            return {k: float("nan") for k in keys}
        self.bad_in_a_row = 0
        terms["loss"].backward()
        params = list(self.depth_net.parameters()) + list(self.pose_net.parameters())
        torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad)
        self.opt.step()
        self.sched.step()
        self.step += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    # ----------------------------------------------------------- run
    def fit(self, resume=False, stop_after=None, overwrite=False, trust=False, state=None,
            init_state=None):
        """Train to cfg.steps (or stop_after steps from here, for tests).

        The run directory is locked while this runs (RunLock: a second process
        training in it is refused, RunLockedError naming the holder's pid).
        An existing run (checkpoint.pt, log.csv or summary.json in the run
        directory) is continued with resume=True, replaced with overwrite=True,
        and otherwise refused (ValueError). resume=True loads checkpoint.pt
        (trust: see load_checkpoint), refuses changed settings other than
        ADJUSTABLE_ON_RESUME and applies those (the learning-rate schedule
        included). Temporary files of killed runs are removed, and log.csv rows
        after the step the run continues from are dropped (they are replayed).
        state: checkpoint.pt's contents when the caller has already loaded them.
        A run that does not continue a checkpoint starts from cfg.init's
        network weights when it names a file (init_from; init_state: its
        contents when already loaded).
        """
        try:
            return self._fit(resume, stop_after, overwrite, trust, state, init_state)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _fit(self, resume, stop_after, overwrite, trust, state, init_state):
        cfg = self.cfg
        if cfg.init and not (resume and os.path.isfile(self.ckpt_path)):
            # first: a file that does not fit leaves the run directory as it is
            self.init_from(cfg.init, trust=trust, state=init_state)
        init_state = None  # not kept alive during training
        self._prepare_run_dir(resume, overwrite)
        if resume and os.path.isfile(self.ckpt_path):
            self.resume_from(self.ckpt_path, trust=trust, state=state)
            state = None  # not kept alive during training
        elif resume:
            self.log(f"resume: no checkpoint in {self.run_dir}; starting at step 0")
        target = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        if self.step >= target:  # nothing to train: a run's files are not touched
            if not os.path.isfile(self.ckpt_path):
                self.save()  # a new run's starting point (an init file's weights)
            return self
        per_epoch = max(1, len(self.dataset) // self.world // cfg.batch_size)
        bar = _progress(target, self.step, cfg.progress and self.rank == 0)
        log_file = None
        if self.rank == 0:
            os.makedirs(self.run_dir, exist_ok=True)
            log_path = os.path.join(self.run_dir, "log.csv")
            self._trim_log(log_path)
            new = not os.path.exists(log_path) or os.path.getsize(log_path) == 0
            log_file = open(log_path, "a", newline="")
            writer = csv.writer(log_file)
            if new:
                writer.writerow(LOG_COLUMNS)
        tb = _tensorboard(self.run_dir, self.step) if self.rank == 0 else None
        t0, seen = time.perf_counter(), 0
        self._t0 = t0
        try:
            with packops.use_backend(self.backend):
                while self.step < target:
                    epoch, skip = divmod(self.step, per_epoch)
                    at_start = self.step
                    for i, batch in enumerate(_batches(self.dataset, cfg, self.rank, self.world, epoch)):
                        if i < skip:
                            continue  # resumed mid-epoch: replay the epoch's order
                        terms = self.train_step(batch)
                        seen += cfg.batch_size * self.world
                        self._images = seen
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
                    if self.step == at_start:  # never spin: an epoch must make progress
                        raise RuntimeError(f"packnet.train: epoch {epoch} gave no batch to train "
                                           f"on at step {self.step} ({len(self.dataset)} samples, "
                                           f"batch_size {cfg.batch_size}, {self.world} "
                                           f"process(es))")
        finally:
            self.train_seconds = time.perf_counter() - t0
            self.images_per_s = seen / max(self.train_seconds, 1e-9)
            self._t0 = None
            if bar is not None:
                bar.close()
            if log_file is not None:
                log_file.close()
            if tb is not None:
                tb.close()
        self.save()
        return self


    # ------------------------------------------------- run directory
    def _prepare_run_dir(self, resume, overwrite):
        """Lock the run directory, refuse to clobber an existing run, clear it for
        overwrite, remove temporaries of killed runs. Rank 0 decides; every rank
        gets its answer."""
        error = None
        if self.rank == 0:
            try:
                self._lock = RunLock(self.run_dir, log=self.log).acquire()
                check_run_dir(self.run_dir, resume, overwrite)
                if overwrite:
                    removed = clear_run(self.run_dir)
                    if removed:
                        self.log(f"overwrite: removed {', '.join(removed)} of {self.run_dir}")
                for path in clean_stale_temporaries(self.run_dir):
                    self.log(f"removed {path}: a temporary checkpoint left by a killed run")
            except (ValueError, OSError) as e:
                error = e
        if self.distributed:
            box = [None if error is None else str(error)]
            torch.distributed.broadcast_object_list(box, src=0)
            if box[0] is not None and error is None:
                error = ValueError(box[0])
        if error is not None:
            raise error

    def init_from(self, path, trust=False, state=None):
        """Start from the network weights of `path`, a packnet checkpoint or a
        PackNet-SfM release (packnet.release.init_networks): its depth network
        must be this run's model and version (CheckpointError naming both
        otherwise), its PoseNet is loaded when it has one; the optimizer and
        the learning-rate schedule stay fresh. Sets init_info (provenance).
        state: the file's contents when the caller has already loaded them."""
        from .release import init_networks
        version = getattr(self.depth_net, "config", {}).get("version", "1A")
        self.init_info = init_networks(path, self.depth_net, self.pose_net, self.cfg.model,
                                       version, trust=trust, ckpt=state)
        self.log(f"init: {self.cfg.model} version {version} from {path} "
                 f"({self.init_info['format']} checkpoint; PoseNet {self.init_info['pose']})")
        for note in self.init_info["notes"]:
            self.log(f"init: note: {note}")

    def resume_from(self, path, trust=False, state=None):
        """Load a training checkpoint (or take its loaded `state`): fixed settings
        must match the run's (ValueError naming them), adjustable ones are
        applied and printed."""
        s = state if state is not None else load_checkpoint(path, self.device, trust=trust,
                                                            require=TRAINING_KEYS)
        fixed, adjustable = resume_changes(s["config"], self.cfg)
        if isinstance(s.get("step"), int) and s["step"] > self.cfg.steps:
            raise ValueError(f"cannot resume {self.run_dir} with steps {self.cfg.steps}: the run "
                             f"is at step {s['step']} and does not go back; give steps "
                             f"{s['step']} or more (nothing was changed)")
        if fixed:
            raise ValueError(
                f"cannot resume {self.run_dir} with changed settings: {format_changes(fixed)}. "
                f"These are fixed for a run: drop them to continue it, or start a new run "
                f"with --name NEW. (Adjustable on resume: {', '.join(ADJUSTABLE_ON_RESUME)})")
        try:
            self.load_state(s)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(path, f"does not fit this run's networks and optimizer "
                                        f"({type(e).__name__}: {first_line(str(e))})") from None
        for name, old, new in adjustable:
            self.log(f"resume: {name} {show(old)} -> {show(new)}")
        if {"steps", "lr", "lr_step_fraction", "lr_gamma"} & {c[0] for c in adjustable}:
            self._apply_schedule()
        self.log(f"resumed from {path} at step {self.step}")
        if self.step >= self.cfg.steps:
            self.log(f"resume: the run is at step {self.step}, steps is {self.cfg.steps}: "
                     f"nothing to train (no file is rewritten)")

    def _apply_schedule(self):
        """The learning-rate schedule of the current settings, as if the run had
        used them from the start: StepLR(round(steps * lr_step_fraction),
        lr_gamma) from lr, at the number of optimizer steps taken so far."""
        cfg, sched = self.cfg, self.sched
        sched.step_size = max(1, round(cfg.steps * cfg.lr_step_fraction))
        sched.gamma = cfg.lr_gamma
        sched.base_lrs = [cfg.lr for _ in self.opt.param_groups]
        decays = sched.last_epoch // sched.step_size
        for g in self.opt.param_groups:
            g["initial_lr"] = cfg.lr
            g["lr"] = cfg.lr * cfg.lr_gamma ** decays
        sched._last_lr = [g["lr"] for g in self.opt.param_groups]
        self.log(f"resume: learning rate {show(sched._last_lr[0])} (lr {show(cfg.lr)}, StepLR "
                 f"every {sched.step_size} steps x {show(cfg.lr_gamma)}, {decays} decay(s) "
                 f"after {sched.last_epoch} optimizer steps)")

    def _trim_log(self, path):
        """Drop log.csv rows after the step this run continues from (a kill
        after logging them and before the next checkpoint: they are replayed)."""
        if not os.path.exists(path):
            return
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        if rows[0] != LOG_COLUMNS:  # rows under another header would be misread
            raise ValueError(f"{path}: its header is {','.join(rows[0])!r}, not packnet's "
                             f"{','.join(LOG_COLUMNS)!r} (edited, or written by another program "
                             f"or version): move the file aside (the run then starts a new "
                             f"log.csv) or restore its first line; nothing was changed")
        keep = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= self.step]
        if len(keep) == len(rows) - 1:
            return
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([rows[0]] + keep)
        os.replace(tmp, path)
        self.log(f"log.csv: dropped {len(rows) - 1 - len(keep)} row(s) after step {self.step} "
                 f"(logged after the last checkpoint; those steps run again)")

    def _drawing_failed(self, path, error):
        """A picture that could not be made is a warning: the run's results
        (checkpoint, log, summary) never depend on it. PACKNET_DEBUG=1 raises."""
        if os.environ.get("PACKNET_DEBUG"):
            raise error
        self.log(f"warning: could not write {path} ({type(error).__name__}: "
                 f"{first_line(str(error))}); training and its results are not affected")

    @torch.no_grad()
    def write_preview(self, batch):
        """previews/step_<N>.png: the input, the colourised predicted depth and,
        when the batch has it, the ground truth. Returns the path, or None when
        the picture could not be made (a warning; training goes on)."""
        from . import visualize
        from .image import write_image
        path = os.path.join(self.run_dir, "previews", f"step_{self.step:07d}.png")
        was_training = self.depth_net.training
        self.depth_net.eval()
        try:
            rgb = batch["rgb"][:1].to(self.device)
            depth = geometry.inv2depth(self.depth_net(rgb).float())[0].cpu()
            gt = batch["depth"][0] if "depth" in batch else None
            write_image(path, visualize.labelled_preview(rgb[0].cpu(), depth, gt))
        except Exception as e:  # noqa: BLE001 - any failure to draw only costs the picture
            self._drawing_failed(path, e)
            return None
        finally:
            self.depth_net.train(was_training)
        return path

    @torch.no_grad()
    def write_test_strip(self, dataset, frames=4):
        """test-strip.png in the run directory: `frames` test frames spread
        over `dataset` (input, predicted depth, ground truth, error), on one
        colour scale. Returns the path, or None when the data has no depth or
        the picture could not be made (a warning naming the error)."""
        from . import visualize
        from .image import write_image
        n = len(dataset)
        if n == 0:
            return None
        path = os.path.join(self.run_dir, "test-strip.png")
        picks = sorted({round(i * (n - 1) / max(frames - 1, 1)) for i in range(frames)})
        was_training = self.depth_net.training
        self.depth_net.eval()
        items = []
        try:
            for i in picks:
                sample = dataset[i]
                if "depth" not in sample:
                    return None
                rgb = sample["rgb"][None].to(self.device)
                depth = geometry.inv2depth(self.depth_net(rgb).float())[0].cpu()
                items.append((sample["rgb"], depth, sample["depth"]))
            write_image(path, visualize.test_strip(items))
        except Exception as e:  # noqa: BLE001 - any failure to draw only costs the picture
            self._drawing_failed(path, e)
            return None
        finally:
            self.depth_net.train(was_training)
        return path


def _tensorboard(run_dir, step=0):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: the CSV log has the same numbers
        return None
    # resuming: events after the checkpoint's step are replayed, drop the old ones
    return SummaryWriter(os.path.join(run_dir, "tensorboard"),
                         purge_step=step + 1 if step else None)


def _progress(total, initial, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="train", unit="step", file=sys.stderr)
