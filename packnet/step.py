"""One training step as a function of device tensors, with no host sync.

TrainStep(inputs) runs forward, the losses, backward, gradient clipping and
the Adam update, and returns the loss terms and a flag as device tensors.
Nothing in it waits for the device: a GPU step is queued as fast as Python
can issue it, and the same function can be captured once as a CUDA graph
and replayed (Trainer, `cuda_graph`). What used to need the host is kept on
the device:

- a step whose loss terms, inverse depth or gradient norm are not finite is
  skipped on the device: `bad` holds one bit per culprit (BITS), and fused
  Adam's `found_inf` leaves the parameters and the optimizer state exactly
  as they were (the step counters included);
- the learning rate (StepLR's `lr * gamma ** (updates // step_size)`, over
  the updates actually made) and the velocity warm-up (`min(1, steps /
  velocity_warmup)`, over all steps) are computed from device counters;
- the counters (steps, updates, skipped, non-finite steps in a row, the step
  at which `max_bad_steps` in a row was reached, after which every update is
  skipped) and a ring of the last steps' `bad` bits stay on the device until
  the host reads them (Trainer.sync, every log_every steps and before a
  checkpoint).

The state the host needs for a checkpoint or a resume goes through
`counters()` / `load_counters()` and `StepSchedule` (the learning-rate
schedule's settings, changeable on resume through public methods).
"""
import contextlib

import torch

from . import geometry

__all__ = ["TrainStep", "StepSchedule", "DeviceInputs", "BITS", "describe_bits", "make_adam"]

# bits of TrainStep's `bad` flag: what was not finite
BITS = {"loss": 1, "photometric": 2, "smoothness": 4, "velocity": 8, "supervised": 16,
        "gradient norm": 32, "another process": 64}
_INV_DEPTH = 128  # + scale i: bit 128 << i


def describe_bits(bits):
    """'non-finite loss, photometric, inverse depth (scales 0, 1)' for a `bad` value."""
    names = [name for name, bit in BITS.items() if bits & bit and name != "another process"]
    scales = [i for i in range(8) if bits & (_INV_DEPTH << i)]
    if scales:
        names.append(f"inverse depth (scale{'s' * (len(scales) > 1)} "
                     f"{', '.join(map(str, scales))})")
    if not names and bits & BITS["another process"]:
        return "non-finite loss in another process"
    return f"non-finite {', '.join(names)}"


def make_adam(params, lr):
    """torch's fused Adam with a device-tensor learning rate (`lr`, a 0-dim
    tensor on the parameters' device) and capturable=True: its update
    reads the LR from the device and honours `found_inf` (the step is then
    skipped, its state untouched), so no step waits for the host, and it can
    be captured in a CUDA graph. Fused Adam exists for CPU and CUDA float32
    parameters (torch >= 2.4); measured on the 2-core CPU for PackNet01 +
    PoseNet: 124 ms a step, against 533 ms foreach and 834 ms the loop."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, capturable=True)
    except (RuntimeError, ValueError) as e:
        raise RuntimeError(f"packnet.train needs torch's fused Adam for its parameters "
                           f"(torch >= 2.4, float32 parameters on cpu or cuda): {e}") from None


class StepSchedule:
    """StepLR's schedule as device scalars: lr * gamma ** (updates // step_size),
    updates being the optimizer updates made so far. `state_dict()` has
    StepLR's keys (last_epoch = updates), so checkpoints of either load."""

    def __init__(self, lr, step_size, gamma, device):
        f64 = dict(dtype=torch.float64, device=device)
        self.base_lr = torch.tensor(float(lr), **f64)
        self.step_size = torch.tensor(float(step_size), **f64)
        self.gamma = torch.tensor(float(gamma), **f64)

    def set(self, lr, step_size, gamma):
        """New settings (a resume that changes steps, lr or the decay), in place
        (a captured graph reads these tensors)."""
        self.base_lr.fill_(float(lr))
        self.step_size.fill_(float(max(1, step_size)))
        self.gamma.fill_(float(gamma))

    def lr(self, updates):
        """The learning rate after `updates` optimizer updates (float64 device scalar)."""
        return self.base_lr * self.gamma ** torch.div(updates, self.step_size,
                                                      rounding_mode="floor")

    def settings(self):
        """(lr, step_size, gamma) as Python numbers (a host read)."""
        lr, size, gamma = torch.stack([self.base_lr, self.step_size, self.gamma]).tolist()
        return lr, int(size), gamma

    def state_dict(self, updates):
        lr, size, gamma = self.settings()
        return {"step_size": size, "gamma": gamma, "base_lrs": [lr], "last_epoch": int(updates)}


class TrainStep:
    """The device side of a training step (module docstring).

    nets: (depth_fwd, pose_fwd), the callables the forward runs (the
    networks, or their DDP / compiled wrappers); params: every parameter, in
    the optimizer's order; losses: (photometric, velocity, supervised)
    modules. ring: how many steps' `bad` bits are kept between host reads.
    """

    def __init__(self, cfg, device, nets, params, losses, opt, schedule, ring, distributed=False,
                 autocast_cache=True):
        self.cfg, self.device = cfg, device
        self.depth_fwd, self.pose_fwd = nets
        self.params = list(params)
        self.photo, self.velocity, self.supervised = losses
        self.opt, self.schedule = opt, schedule
        self.distributed, self.autocast_cache = distributed, autocast_cache
        self.lr = opt.param_groups[0]["lr"]  # the 0-dim tensor every group shares
        f64 = dict(dtype=torch.float64, device=device)
        # counters as float64 scalars: exact integers, and no dtype casts in the arithmetic
        self.steps = torch.zeros((), **f64)       # steps taken, skipped ones included
        self.updates = torch.zeros((), **f64)     # optimizer updates made
        self.skipped = torch.zeros((), **f64)
        self.bad_run = torch.zeros((), **f64)     # non-finite steps in a row
        self.stop_at = torch.full((), -1.0, **f64)
        self.ring = max(1, int(ring))
        self.bad_log = torch.zeros(self.ring, dtype=torch.int64, device=device)
        self.max_bad = float(cfg.max_bad_steps)
        self.warmup = float(cfg.velocity_warmup)
        self._weights = {}
        self.opt.found_inf = torch.zeros((), dtype=torch.float32, device=device)

    # ------------------------------------------------------ host side
    def counters(self):
        """{steps, updates, skipped, bad_run, stop_at} as Python numbers (one host read)."""
        names = ("steps", "updates", "skipped", "bad_run", "stop_at")
        values = torch.stack([getattr(self, n) for n in names]).tolist()
        return {n: int(v) for n, v in zip(names, values)}

    def load_counters(self, steps, updates, skipped):
        """A resumed run's counters (in place: a captured graph reads these tensors)."""
        self.steps.fill_(float(steps))
        self.updates.fill_(float(updates))
        self.skipped.fill_(float(skipped))
        self.bad_run.zero_()
        self.stop_at.fill_(-1.0)
        self.bad_log.zero_()
        self.lr.copy_(self.schedule.lr(self.updates))

    def bad_bits(self, first_step, last_step):
        """[(step, bits)] of the steps first_step..last_step-1 (at most `ring`
        steps back) whose update was skipped; one host read."""
        if last_step <= first_step:
            return []
        log = self.bad_log.tolist()
        return [(s, log[s % self.ring]) for s in range(max(first_step, last_step - self.ring),
                                                      last_step) if log[s % self.ring]]

    # ---------------------------------------------------- device side
    def _autocast(self):
        if not self.cfg.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              cache_enabled=self.autocast_cache)

    def _weight(self, n):
        """[n] int64 device constant (1, 2, 4, ...), made once (outside any graph)."""
        if n not in self._weights:
            self._weights[n] = torch.tensor([1 << i for i in range(n)], dtype=torch.int64,
                                            device=self.device)
        return self._weights[n]

    def terms(self, inputs):
        """The loss terms of `inputs` (device tensors): {loss, photometric,
        smoothness[, velocity][, supervised]} and the inverse depths."""
        cfg = self.cfg
        rgb, ctx, K = inputs["rgb"], inputs["rgb_context"], inputs["intrinsics"]
        with self._autocast(), torch.profiler.record_function("packnet.forward"):
            inv_depths = self.depth_fwd(rgb)
            vec = self.pose_fwd(rgb, ctx)
        inv_depths = [d.float() for d in inv_depths]
        poses = [geometry.pose_vec2mat(vec[:, j].float()) for j in range(vec.shape[1])]
        with torch.profiler.record_function("packnet.loss"):
            photo = self.photo(rgb, ctx, inv_depths, K, poses)
        total = photo["loss"]
        out = {"photometric": photo["photometric"].detach(),
               "smoothness": photo["smoothness"].detach()}
        if cfg.velocity_weight > 0:
            with torch.profiler.record_function("packnet.loss"):
                v = self.velocity(poses, inputs["translation_norms"])
            if self.warmup > 0:  # the weight ramps over the first velocity_warmup steps
                v = v * torch.clamp(self.steps / self.warmup, max=1.0).to(v.dtype)
            total = total + v
            out["velocity"] = v.detach()
        if "depth" in inputs:
            with torch.profiler.record_function("packnet.loss"):
                s = self.supervised(inv_depths, inputs["depth"])
            total = total + s
            out["supervised"] = s.detach()
        out["loss"] = total
        return out, inv_depths

    def __call__(self, inputs):
        """One step on device `inputs` -> {loss terms..., "bad"} (device tensors;
        bad = 0: the update was made). Gradients must be None or zero on entry."""
        out, inv_depths = self.terms(inputs)
        names = [k for k in BITS if k in out]
        values = torch.stack([out[k].detach().float() for k in names])
        bad = ((~torch.isfinite(values)).long() * self._bits(names)).sum()
        finite_depth = torch.stack([torch.isfinite(d).all() for d in inv_depths])
        bad = bad + ((~finite_depth).long() * self._weight(len(inv_depths))).sum() * _INV_DEPTH
        with torch.profiler.record_function("packnet.backward"):
            out["loss"].backward()
        with torch.profiler.record_function("packnet.clip"):
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_grad)
        # a non-finite loss makes non-finite gradients: named only when the loss was finite
        bad = bad + ((bad == 0) & ~torch.isfinite(norm)).long() * BITS["gradient norm"]
        if self.distributed:  # every process skips the step, or none
            anywhere = (bad > 0).float()
            torch.distributed.all_reduce(anywhere, op=torch.distributed.ReduceOp.MAX)
            bad = bad + ((anywhere > 0) & (bad == 0)).long() * BITS["another process"]
        skip = (bad > 0) | (self.stop_at >= 0)  # after a stop, nothing is updated
        with torch.profiler.record_function("packnet.optimizer"):
            self.lr.copy_(self.schedule.lr(self.updates))
            self.opt.found_inf.copy_(skip)
            self.opt.step()
        skip = skip.double()
        self.updates.add_(1 - skip)
        self.skipped.add_(skip)
        self.bad_run.copy_((self.bad_run + 1) * (bad > 0).double())
        reached = (self.stop_at < 0) & (self.bad_run >= self.max_bad)
        self.stop_at.copy_(torch.where(reached, self.steps, self.stop_at))
        self.bad_log.index_copy_(0, torch.remainder(self.steps, self.ring).long().view(1),
                                 bad.view(1))
        self.steps.add_(1)
        out["loss"] = out["loss"].detach()
        out["bad"] = bad
        return out

    def _bits(self, names):
        key = tuple(names)
        if key not in self._weights:
            self._weights[key] = torch.tensor([BITS[k] for k in names], dtype=torch.int64,
                                              device=self.device)
        return self._weights[key]


class DeviceInputs:
    """A host batch as the step's device inputs: rgb [B,3,H,W], rgb_context
    (a list of [B,3,H,W]), intrinsics [B,3,3] float32, and when the losses
    need them translation_norms [B,n] (speed x |time to each context frame|,
    the velocity loss's target) and depth [B,1,H,W] (supervised). On CUDA the
    copies are non-blocking, from pinned memory; static=True copies into the
    same device buffers every step (a captured graph reads them)."""

    def __init__(self, cfg, device, static=False):
        self.cfg, self.device, self.static = cfg, device, static
        self.buffers = None

    def host(self, batch):
        """The batch's tensors the step reads, on the host."""
        cfg = self.cfg
        out = {"rgb": batch["rgb"], "intrinsics": batch["intrinsics"].float()}
        for j, c in enumerate(batch["rgb_context"]):
            out[f"rgb_context.{j}"] = c
        if cfg.velocity_weight > 0:
            if "speed" not in batch:
                raise ValueError("packnet.train: the velocity loss needs each sample's speed "
                                 "(KITTI oxts, a folder's speed.txt); give it, or turn the "
                                 "loss off with --no-velocity (velocity_weight=0)")
            ts = batch["timestamps_context"]
            ts = torch.stack(list(ts), 1) if isinstance(ts, (list, tuple)) else ts  # [B, n]
            dt = ts.float() - batch["timestamp"].float()[:, None]
            out["translation_norms"] = batch["speed"].float()[:, None] * dt.abs()
        if cfg.supervised_weight > 0 and "depth" in batch:
            out["depth"] = batch["depth"]
        return out

    def __call__(self, batch):
        host = self.host(batch)
        cuda = self.device.type == "cuda"
        if self.static:
            if self.buffers is None or self.buffers.keys() != host.keys():
                self.buffers = {k: torch.empty(v.shape, dtype=v.dtype, device=self.device)
                                for k, v in host.items()}
            for k, v in host.items():  # the caching host allocator keeps a pinned block
                self.buffers[k].copy_(v.pin_memory() if cuda else v, non_blocking=cuda)
            dev = self.buffers
        else:
            dev = {k: (v.pin_memory() if cuda else v).to(self.device, non_blocking=cuda)
                   for k, v in host.items()}
        n = sum(k.startswith("rgb_context.") for k in dev)
        out = {k: v for k, v in dev.items() if not k.startswith("rgb_context.")}
        out["rgb_context"] = [dev[f"rgb_context.{j}"] for j in range(n)]
        return out
