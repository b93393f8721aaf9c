"""Self-supervised training of a PackNet depth network and PoseNet.

One TrainConfig dataclass (packnet/config.py) holds every setting (a YAML
file or command-line flags fill it; it is printed at start and saved in
every checkpoint). Trainer runs: photometric (+ smoothness) loss, optional
velocity loss (which makes the scale metric) and optional supervised loss;
torch's fused Adam for both networks; StepLR(60% of the run, 0.5) over the
updates made; gradient clipping; bf16 autocast on CUDA (`amp`); `ops` picks
packops' fused backends or the reference; DistributedDataParallel when
launched by torchrun.

The layers of a run:
  packnet/step.py       the step: device tensors in, device tensors out, no
                        host sync (a non-finite step is skipped on the device)
  Trainer.train_step    a host batch -> the step (eager, or a captured CUDA
                        graph replayed: cuda_graph)
  Trainer.fit           the loop: steps, a host read every log_every steps
                        (sync: counts and reports skipped steps, stops after
                        max_bad_steps in a row) and the callbacks
  packnet/callbacks.py  log.csv, TensorBoard, progress bar, previews, checkpoints
  packnet/run.py        train_and_evaluate: fit, evaluation, test strip,
                        pose evaluation and summary.json (what `packnet train` runs)
  packnet/rundir.py     every file name of the run directory and its rules

Checkpoints are written atomically with the networks, optimizer, learning-rate
schedule, step counters and RNG states, so killing the process at any moment
loses at most the steps since the last checkpoint and never leaves a broken
file; `resume` continues exactly (same batches, same random draws).
"""
import collections
import dataclasses
import os

import torch

import packops

from . import geometry, models
from .callbacks import default_callbacks
from .checkpoint import (TRAINING_KEYS, CheckpointError, UnsafeCheckpointError, first_line,
                         load_checkpoint, rng_state, save_checkpoint, set_rng_state)
from .config import (ADJUSTABLE_ON_RESUME, ConfigError, TrainConfig, format_changes,
                     resume_changes, settings_help, show)
from .losses import MultiViewPhotometricLoss, SupervisedLoss, VelocityLoss
from .rundir import RunDir
from .step import DeviceInputs, StepSchedule, TrainStep, describe_bits, make_adam

__all__ = ["TrainConfig", "ConfigError", "Trainer", "save_checkpoint", "load_checkpoint",
           "CheckpointError", "UnsafeCheckpointError", "resume_changes", "settings_help",
           "make_adam"]

# eager steps before a CUDA graph is captured (on a side stream, as capture
# wants): Triton compiles its kernels, cudnn.benchmark picks its algorithms
# and Adam makes its state there, none of which may happen inside a capture
GRAPH_WARMUP = 3


# ------------------------------------------------------------------ data
# The synthetic val and test splits evaluate the frames that have both
# neighbours, whatever context the run trains with, so that runs with other
# context offsets are scored on the same frames.
EVAL_CONTEXT = (-1, 1)


def make_dataset(cfg, split="train"):
    from . import data as data_pkg  # imported lazily: only training needs it
    kwargs = dict(cfg.data_kwargs)
    if cfg.data == "synthetic" and split != "train":
        kwargs["context"] = EVAL_CONTEXT
    return data_pkg.make_dataset(cfg.data, split=split, size=tuple(cfg.size), **kwargs)


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


def lr_step_size(cfg):
    """StepLR's period in optimizer updates: round(steps * lr_step_fraction), >= 1."""
    return max(1, round(cfg.steps * cfg.lr_step_fraction))


class Trainer:
    """Builds the networks, losses, optimizer and the step for a TrainConfig;
    fit() trains (module docstring). callbacks: what runs around the steps
    (default: packnet.callbacks.default_callbacks(cfg), the log, progress
    bar, previews and checkpoints of `packnet train`)."""

    def __init__(self, cfg, dataset=None, log=print, callbacks=None):
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
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        torch.manual_seed(cfg.seed)
        self.depth_net = getattr(models, cfg.model)(**cfg.model_kwargs).to(self.device)
        self.pose_net = models.PoseNet(nb_ref_imgs=2, **cfg.pose_kwargs).to(self.device)
        self.depth_net.checkpoint_activations = cfg.checkpoint_activations
        params = list(self.depth_net.parameters()) + list(self.pose_net.parameters())
        self.schedule = StepSchedule(cfg.lr, lr_step_size(cfg), cfg.lr_gamma, self.device)
        # the LR as a device tensor: float64 on the CPU, whose fused Adam then
        # computes as with a Python float; float32 on CUDA, whose kernel reads
        # a float (and rounds a Python float's LR to float the same way)
        lr_dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        self.opt = make_adam(params, torch.tensor(cfg.lr, dtype=lr_dtype, device=self.device))
        # the trainer checks finiteness on the device (step.py), not by raising
        photo = MultiViewPhotometricLoss(num_scales=cfg.num_scales,
                                         smooth_weight=cfg.smooth_weight,
                                         upsample_mode=cfg.upsample_mode,
                                         mask_out_of_view=cfg.mask_out_of_view,
                                         automask=cfg.automask,
                                         fused=cfg.ops == "fused", check_finite=False)
        losses = (photo, VelocityLoss(cfg.velocity_weight),
                  SupervisedLoss("l1", cfg.supervised_weight))
        depth_fwd, pose_fwd = self.depth_net, self.pose_net
        if self.distributed:
            ddp = torch.nn.parallel.DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            depth_fwd, pose_fwd = ddp(self.depth_net, ids), ddp(self.pose_net, ids)
        if cfg.compile:
            # one graph per net (fullgraph: a graph break would be a silent
            # slowdown); compiled at the first step
            depth_fwd = torch.compile(depth_fwd, fullgraph=True)
            pose_fwd = torch.compile(pose_fwd, fullgraph=True)
        self.graph = self._graph_mode()
        self.step_fn = TrainStep(cfg, self.device, (depth_fwd, pose_fwd), params, losses,
                                 self.opt, self.schedule, ring=cfg.log_every,
                                 distributed=self.distributed, autocast_cache=not self.graph)
        self.inputs = DeviceInputs(cfg, self.device, static=self.graph)
        self._captured = None       # (CUDAGraph, its output tensors) once captured
        self._eager_steps = 0
        self.step = 0               # steps taken (host count; skipped ones included)
        self.skipped_steps = 0      # as of the last sync()
        self._synced, self._run_at_sync = 0, 0
        self._recent = collections.deque(maxlen=self.step_fn.ring)  # (step, filenames)
        self.init_info = None       # where the weights came from, after init_from (cfg.init)
        # training time and images of the whole run (earlier processes' from the
        # checkpoint) and of this process's fit(); see run_seconds
        self.seconds_before, self.images_before = 0.0, 0
        self.train_seconds, self.images_per_s, self._images = 0.0, 0.0, 0
        self._t0 = None
        self.run = RunDir.of(cfg)
        self.run_dir, self.ckpt_path = self.run.path, self.run.checkpoint
        self._lock = None  # the run directory's RunLock while fit() runs (rank 0)
        self.callbacks = (default_callbacks(cfg, self.rank) if callbacks is None
                          else list(callbacks))
        self.target = cfg.steps

    def _graph_mode(self):
        """Whether steps run as a captured CUDA graph (cuda_graph: auto = on
        for CUDA in a single process)."""
        want = self.cfg.cuda_graph
        if want == "off" or (want == "auto" and self.device.type != "cuda"):
            return False
        if self.distributed:
            self.log("cuda_graph: off under DistributedDataParallel (not yet measured on "
                     "several GPUs); the steps run eagerly")
            return False
        return True

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
        c = self.step_fn.counters()
        return {"model": {"depth_net": self.depth_net.state_dict(),
                          "pose_net": self.pose_net.state_dict()},
                "optimizer": self.opt.state_dict(),
                "scheduler": self.schedule.state_dict(c["updates"]),
                "step": self.step, "skipped_steps": self.skipped_steps,
                "rng": rng_state(), "config": dataclasses.asdict(self.cfg),
                "train_seconds": self.run_seconds, "images": self.images_before + self._images}

    @property
    def run_seconds(self):
        """Seconds spent training this run, over every process that trained it."""
        import time
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
        for group in self.opt.param_groups:  # a checkpoint of another torch or version:
            group.update(fused=True, foreach=False, capturable=True)  # this run's Adam,
            group["lr"] = self.step_fn.lr                             # the device LR
        sched = s["scheduler"]  # this schedule's or StepLR's state_dict
        self.schedule.set(sched["base_lrs"][0], sched["step_size"], sched["gamma"])
        self.step, self.skipped_steps = s["step"], s.get("skipped_steps", 0)
        self.step_fn.load_counters(self.step, sched["last_epoch"], self.skipped_steps)
        self._synced, self._run_at_sync = self.step, 0
        self.seconds_before = float(s.get("train_seconds", 0.0))  # absent before issue 24
        self.images_before = int(s.get("images", 0))
        set_rng_state(s["rng"])

    def save(self):
        """checkpoint.pt (rank 0), after sync(): a run that has to stop stops
        before it writes a checkpoint."""
        self.sync()
        if self.rank == 0:
            os.makedirs(self.run_dir, exist_ok=True)
            save_checkpoint(self.ckpt_path, self.state())

    # ---------------------------------------------------------- step
    def loss_terms(self, batch):
        """The loss terms of a host batch at the current step, without a
        backward or an update (device tensors; for inspection and tests)."""
        with torch.no_grad(), packops.use_backend(self.backend):
            return self.step_fn.terms(self.inputs(batch))[0]

    def train_step(self, batch):
        """One step on a host batch -> its device tensors {loss terms..., bad}
        (bad = 0: the update was made). Nothing here waits for the device: a
        skipped step is reported, counted and acted on by sync(). With
        cuda_graph, the first GRAPH_WARMUP steps run eagerly, the next one is
        captured, and from then on each step replays the graph (`out` then
        holds the same tensors every step: read them before the next one)."""
        inputs = self.inputs(batch)
        if self._captured is not None:
            self._captured[0].replay()
            out = self._captured[1]
        elif self.graph and self._eager_steps >= GRAPH_WARMUP:
            out = self._capture(inputs)
        else:
            out = self._eager(inputs)
        files = batch.get("filename") if isinstance(batch, dict) else None
        self._recent.append((self.step, files))
        self.step += 1
        return out

    def _eager(self, inputs):
        self.opt.zero_grad(set_to_none=True)
        self._eager_steps += 1
        if not self.graph:
            return self.step_fn(inputs)
        side = torch.cuda.Stream()  # warm-up before a capture runs on a side stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.step_fn(inputs)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self, inputs):
        """Capture the whole step once (forward, losses, backward, clipping,
        the Adam update, the counters) and replay it for this step; if the
        capture fails, say why in one line and go on eagerly."""
        self.opt.zero_grad(set_to_none=True)  # the captured backward makes the gradients
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = self.step_fn(inputs)
        except Exception as e:  # noqa: BLE001 - any capture failure falls back to eager
            self.log(f"cuda_graph: the step could not be captured ({type(e).__name__}: "
                     f"{first_line(str(e))}); training goes on eagerly")
            self.graph, self.inputs.static = False, False
            torch.cuda.synchronize()
            return self._eager(inputs)
        self._captured = (graph, out)
        graph.replay()
        return out

    def sync(self):
        """Read the device's counters (one host sync): log each step skipped
        since the last read ("step N: non-finite loss, photometric; step
        skipped (K in a row; batch: ...)"), count them (skipped_steps), and
        raise FloatingPointError naming the step when max_bad_steps steps in
        a row were not finite (the device has made no update since)."""
        if self._synced >= self.step:
            return
        c = self.step_fn.counters()
        files = dict(self._recent)
        bits_of = dict(self.step_fn.bad_bits(self._synced, self.step))
        run, last = self._run_at_sync, ""
        stop = c["stop_at"]
        for s in range(self._synced, self.step if stop < 0 else stop + 1):
            bits = bits_of.get(s, 0)
            if not bits:
                run = 0
                continue
            run += 1
            last = describe_bits(bits)
            names = files.get(s)
            where = f"; batch: {', '.join(map(str, names))}" if isinstance(names, list) else ""
            self.log(f"step {s}: {last}; step skipped ({run} in a row{where})")
        if stop >= 0:  # every step after it was skipped too, without being counted
            self.skipped_steps = c["skipped"] - (c["steps"] - 1 - stop)
            self.step, self._synced = stop, stop
            raise FloatingPointError(f"stopping at step {stop}: {self.cfg.max_bad_steps} steps "
                                     f"in a row had a non-finite loss (last: {last})")
        self.skipped_steps = c["skipped"]
        self._synced, self._run_at_sync = self.step, c["bad_run"]

    def read(self, out):
        """The host values of a step's `out` (after sync(), which may stop the
        run): the loss terms (NaN for a skipped step, whose update was not
        made) and the learning rate."""
        self.sync()
        keys = [k for k in out if k != "bad"]
        values = torch.stack([out[k].double() for k in keys] + [out["bad"].double()] + [
            self.schedule.lr(self.step_fn.updates)]).tolist()
        lr, bad = values.pop(), values.pop()
        terms = {k: (float("nan") if bad else v) for k, v in zip(keys, values)}
        return {**terms, "lr": lr}

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
        import time
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
        self.target = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        if self.step >= self.target:  # nothing to train: a run's files are not touched
            if not os.path.isfile(self.ckpt_path):
                self.save()  # a new run's starting point (an init file's weights)
            return self
        per_epoch = max(1, len(self.dataset) // self.world // cfg.batch_size)
        if self.rank == 0:
            os.makedirs(self.run_dir, exist_ok=True)
        started = []
        t0, seen = time.perf_counter(), 0
        self._t0 = t0
        try:
            for cb in self.callbacks:
                cb.on_fit_start(self)
                started.append(cb)
            with packops.use_backend(self.backend):
                while self.step < self.target:
                    epoch, skip = divmod(self.step, per_epoch)
                    at_start = self.step
                    for i, batch in enumerate(_batches(self.dataset, cfg, self.rank, self.world,
                                                       epoch)):
                        if i < skip:
                            continue  # resumed mid-epoch: replay the epoch's order
                        out = self.train_step(batch)
                        seen += cfg.batch_size * self.world
                        self._images = seen
                        values = None
                        if self.step % cfg.log_every == 0:  # the only host reads of a step
                            values = self.read(out)
                            values["images_per_s"] = seen / (time.perf_counter() - t0)
                        for cb in self.callbacks:
                            cb.on_step_end(self, batch, out, values)
                        if self.step >= self.target:
                            break
                    if self.step == at_start:  # never spin: an epoch must make progress
                        raise RuntimeError(f"packnet.train: epoch {epoch} gave no batch to train "
                                           f"on at step {self.step} ({len(self.dataset)} samples, "
                                           f"batch_size {cfg.batch_size}, {self.world} "
                                           f"process(es))")
            self.sync()
        finally:
            self.train_seconds = time.perf_counter() - t0
            self.images_per_s = seen / max(self.train_seconds, 1e-9)
            self._t0 = None
            for cb in started:
                cb.on_fit_end(self)
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
                self._lock = self.run.lock(log=self.log).acquire()
                self.run.check(resume, overwrite)
                if overwrite:
                    removed = self.run.clear()
                    if removed:
                        self.log(f"overwrite: removed {', '.join(removed)} of {self.run_dir}")
                for path in self.run.clean_stale_temporaries():
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
            self.apply_schedule()
        self.log(f"resumed from {path} at step {self.step}")
        if self.step >= self.cfg.steps:
            self.log(f"resume: the run is at step {self.step}, steps is {self.cfg.steps}: "
                     f"nothing to train (no file is rewritten)")

    def apply_schedule(self):
        """The learning-rate schedule of the current settings, as if the run had
        used them from the start: StepLR(round(steps * lr_step_fraction),
        lr_gamma) from lr, at the number of optimizer updates made so far."""
        cfg = self.cfg
        self.schedule.set(cfg.lr, lr_step_size(cfg), cfg.lr_gamma)
        updates = self.step_fn.counters()["updates"]
        size = lr_step_size(cfg)
        lr = float(self.schedule.lr(self.step_fn.updates))
        self.step_fn.lr.copy_(self.schedule.lr(self.step_fn.updates))
        self.log(f"resume: learning rate {show(lr)} (lr {show(cfg.lr)}, StepLR every {size} "
                 f"steps x {show(cfg.lr_gamma)}, {updates // size} decay(s) after {updates} "
                 f"optimizer steps)")
