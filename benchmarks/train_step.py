"""The headline benchmark: the trainer's real training step, per provider.

    python -m benchmarks.train_step [--device cpu|cuda] [--preset main packnet01]
        [--providers reference fused fused+compile] [--reps N] [--warmup N]
        [--profile-steps N] [--amp] [--quick] [--out benchmarks/results]

What is timed is `packnet.train.Trainer.train_step(batch)` itself (zero_grad,
depth and pose nets, photometric + smoothness + velocity loss, backward,
gradient clipping, Adam, LR scheduler), on a Trainer built from a TrainConfig
and one fixed batch of real synthetic samples (packnet.data "synthetic",
collated once, on the CPU as the data loader gives it), under the backend
`Trainer.fit` picks. So an optimisation of the trainer counts here.

Presets (TrainConfig fields):
  main       the TrainConfig defaults: the main job (PackNetTiny, batch 4, 64x192,
             velocity loss)
  packnet01  PackNet01 (model_kwargs {}, pose_kwargs {}), 192x640, batch 1 on CPU
             (4 on a GPU)
  --quick: main-quick only (main at batch 1, 32x64), a smoke test
Providers:
  reference      cfg.ops = "reference" (plain PyTorch ops, per-call loss)
  fused          cfg.ops = "fused" (packops' fused ops, batched loss)
  fused+compile  fused, and torch.compile of the depth and pose nets: through
                 cfg.compile when TrainConfig has that field, else by wrapping
                 trainer.depth_ddp and trainer.pose_ddp here. The first step
                 (compilation) is reported apart ("first step s") and never timed.
  fused+ckpt-decoder, fused+ckpt-encoder, fused+ckpt-all
                 fused with cfg.checkpoint_activations (recompute that part of
                 the depth net in backward): the memory/time trade-off. Only
                 when named in --providers.

Columns: images/s (batch / median step), median and p20/p80 step ms, peak MB
(as benchmarks/README.md says), speedup vs reference, and the time breakdown:
a few steps under torch.profiler, each op's self time put into a category by
benchmarks/breakdown.py (conv fwd, conv bwd, norm + act, packing, loss,
optimizer, copy/fill, other), in % of the profiled step (they sum to 100).

Writes benchmarks/results/<device>/train-step.json and .md (train-step-quick.*
for --quick). The same cases run under pytest-benchmark:
`pytest benchmarks/ --benchmark-only -k test_train_step`.
"""
import argparse
import contextlib
import dataclasses
import importlib
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import packops

from . import breakdown, harness

PRESETS = ("main", "packnet01")
QUICK_PRESETS = ("main-quick",)
OPS = PRESETS + QUICK_PRESETS  # what --ops / --preset can select
PROVIDERS = ("reference", "fused", "fused+compile")  # the default
CHECKPOINT_PROVIDERS = ("fused+ckpt-decoder", "fused+ckpt-encoder", "fused+ckpt-all")
SUITE = "train-step"
# command-line settings for the cases (pytest runs the defaults)
OPTIONS = {"profile_steps": 2,  # steps under the profiler for the breakdown (--profile-steps)
           "amp": False,        # TrainConfig.amp: bf16 autocast of the nets on CUDA (--amp)
           "checkpoint": False}  # the fused+ckpt-* providers too (named in --providers)


def make_config(preset, provider, device, amp=False):
    """The TrainConfig of a preset and provider."""
    from packnet.train import TrainConfig
    device = torch.device(device)
    kw = {"device": str(device), "progress": False}
    if preset == "packnet01":
        kw.update(model="PackNet01", model_kwargs={}, pose_kwargs={}, size=(192, 640),
                  batch_size=4 if device.type == "cuda" else 1)
    elif preset == "main-quick":
        kw.update(batch_size=1, size=(32, 64))
    elif preset != "main":
        raise ValueError(f"train_step: unknown preset {preset!r}; presets: {OPS}")
    kw["ops"] = "reference" if provider == "reference" else "fused"
    kw["amp"] = bool(amp)
    cfg = TrainConfig(**kw)
    if provider == "fused+compile" and _has_compile_field(cfg):
        cfg = dataclasses.replace(cfg, compile=True)
    if provider.startswith("fused+ckpt-"):
        cfg = dataclasses.replace(cfg, checkpoint_activations=provider[len("fused+ckpt-"):])
    return cfg


def _has_compile_field(cfg):
    return any(f.name == "compile" for f in dataclasses.fields(cfg))


def make_batch(cfg):
    """(dataset, batch): cfg.batch_size synthetic samples collated once."""
    from packnet.data import make_dataset
    ds = make_dataset("synthetic", split="train", size=tuple(cfg.size), num_sequences=1,
                      frames_per_sequence=cfg.batch_size + 2)
    return ds, torch.utils.data.default_collate([ds[i] for i in range(cfg.batch_size)])


def backend_of(cfg):
    """The packops backend Trainer.fit runs cfg under."""
    return "reference" if cfg.ops == "reference" else "auto"


@contextlib.contextmanager
def instrument(trainer):
    """Profiler ranges for the breakdown on this trainer: the loss modules'
    forward (breakdown.LOSS), gradient clipping and the LR scheduler
    (breakdown.OPTIMIZER; Adam's step has torch's own range). Only for the
    profiled steps; everything is restored on exit."""
    handles, open_ranges = [], []

    def pre(module, args):
        rf = record_function(breakdown.LOSS)
        rf.__enter__()
        open_ranges.append(rf)

    def post(module, args, out):
        if open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    for name in ("photo", "velocity", "supervised"):
        module = getattr(trainer, name, None)
        if isinstance(module, torch.nn.Module):
            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def ranged(fn):
        def wrapper(*args, **kwargs):
            with record_function(breakdown.OPTIMIZER):
                return fn(*args, **kwargs)
        return wrapper

    clip = torch.nn.utils.clip_grad_norm_
    torch.nn.utils.clip_grad_norm_ = ranged(clip)
    sched = getattr(trainer, "sched", None)
    if sched is not None:
        sched.step = ranged(sched.step)  # instance attribute, deleted on exit
    try:
        yield
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
        if sched is not None:
            del sched.step
        for h in handles:
            h.remove()
        while open_ranges:
            open_ranges.pop().__exit__(None, None, None)


def profile_breakdown(step, trainer, device, steps=2):
    """breakdown.breakdown() of `steps` calls of step() under torch.profiler."""
    device = torch.device(device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with instrument(trainer), profile(activities=activities) as prof:
        for _ in range(steps):
            with record_function(breakdown.ROOT):
                step()
            harness._sync(device)
    return breakdown.breakdown(prof.events(), device=device.type == "cuda")


class TrainStepItem:
    """One provider of one preset: Trainer.train_step on a fixed batch."""
    suite = SUITE

    def __init__(self, preset, provider, profile_steps=None, amp=False):
        self.preset, self.provider = preset, provider
        self.group = preset + ("-amp" if amp else "")
        self.op = self.group  # what --merge keeps rows by
        self.id = f"{self.group}-{provider}"
        self.profile_steps = OPTIONS["profile_steps"] if profile_steps is None else profile_steps
        self.amp = amp

    def params(self):
        return {"preset": self.group}

    def prepare(self, device, copy_gbps=None):
        from packnet.train import Trainer
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise harness.Skip("no CUDA device")
        cfg = make_config(self.preset, self.provider, device, self.amp)
        dataset, batch = make_batch(cfg)
        if self.provider == "fused+compile":
            torch._dynamo.reset()
        trainer = Trainer(cfg, dataset=dataset, log=lambda msg: None)
        if self.provider == "fused+compile" and not _has_compile_field(cfg):
            trainer.depth_ddp = torch.compile(trainer.depth_ddp)
            trainer.pose_ddp = torch.compile(trainer.pose_ddp)
        backend = backend_of(cfg)

        def context():
            return packops.use_backend(backend)

        def step():
            return trainer.train_step(batch)

        with context():
            t0 = time.perf_counter()
            step()  # compiles under fused+compile; creates Adam's state
            harness._sync(device)
            first_s = time.perf_counter() - t0
        params = {"model": cfg.model, "batch": cfg.batch_size,
                  "size": f"{cfg.size[0]}x{cfg.size[1]}", "ops": cfg.ops, "amp": cfg.amp}

        def extras(median_ms):
            with context():
                mem = harness.peak_memory(step, device)
                steps = self.profile_steps
                b = profile_breakdown(step, trainer, device, steps) if steps > 0 else None
            out = dict(params)
            out.update({
                "images_per_s": cfg.batch_size / (median_ms * 1e-3) if median_ms else None,
                "peak_mem_mb": mem / 1e6, "first_step_s": first_s,
                "compile": ("cfg.compile" if _has_compile_field(cfg) else "torch.compile(nets)")
                           if self.provider == "fused+compile" else None})
            if b is not None:
                out.update({
                    "breakdown_pct": breakdown.percentages(b),
                    "breakdown_ms": {c: v / 1e3 / b["steps"] for c, v in b["us"].items()},
                    "profiled_step_ms": b["total_us"] / 1e3 / b["steps"],
                    "other_top": [[n, v / 1e3 / b["steps"]] for n, v in b["other_top"]],
                    "other_threads_ms": b["other_threads_us"] / 1e3 / b["steps"]})
            return out

        def close():
            trainer.depth_ddp = trainer.pose_ddp = None
        # one more untimed step after the first is warm-up enough (a PackNet01 step on
        # CPU takes seconds); --warmup overrides
        return harness.Run(fn=step, context=context, first_s=first_s, extras=extras, close=close,
                           warmup=1)


def cases(device, quick=False, ops=OPS):
    """The training-step items: every provider of every selected preset (the
    checkpointing ones when --providers names one)."""
    presets = QUICK_PRESETS if quick else PRESETS
    providers = PROVIDERS + (CHECKPOINT_PROVIDERS if OPTIONS["checkpoint"] else ())
    return [TrainStepItem(p, prov, amp=OPTIONS["amp"])
            for p in presets if p in ops for prov in providers]


def table(rows, head=None):
    """Markdown lines: one table per preset."""
    lines = []
    cats = breakdown.CATEGORIES
    for preset in dict.fromkeys(r["preset"] for r in rows):
        rs = [r for r in rows if r["preset"] == preset]
        r0 = rs[0]
        amp = ", bf16 autocast" if r0.get("amp") else ""
        lines += [f"### {preset}: {r0.get('model')}, batch {r0.get('batch')}, {r0.get('size')}{amp}", "",
                  "| provider | images/s | median ms | p20/p80 ms | speedup | peak MB | first step s | "
                  + " | ".join(f"{breakdown.LABELS[c]} %" for c in cats) + " |",
                  "|---|--:|--:|--:|--:|--:|--:|" + "--:|" * len(cats)]
        for r in rs:
            pct = r.get("breakdown_pct") or {}
            lines.append(
                f"| {r['provider']} | {_f(r.get('images_per_s'), '.2f')} | {r['median_ms']:.1f} | "
                f"{r['p20_ms']:.1f}/{r['p80_ms']:.1f} | {_f(r.get('speedup'), '.2f', 'x')} | "
                f"{r['peak_mem_mb']:.0f} | {_f(r.get('first_step_s'), '.1f')} | "
                + " | ".join(_f(pct.get(c), '.1f') for c in cats) + " |")
        lines.append("")
    lines += ["Breakdown: self time of each op in a few profiled steps (self device time on a GPU, "
              "where other includes the GPU's idle time), by benchmarks/breakdown.py; "
              "% of the profiled step, which the profiler itself slows down. "
              "first step s: the untimed first step (compilation under fused+compile)."]
    return lines


def _f(x, spec, unit=""):
    return "-" if x is None else format(x, spec) + unit


def main(argv=None):
    from . import report
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"),
                    help="default: cuda when available, else cpu")
    ap.add_argument("--preset", nargs="+", choices=OPS, metavar="NAME",
                    help=f"default: {' '.join(PRESETS)} ({' '.join(QUICK_PRESETS)} with --quick)")
    ap.add_argument("--providers", nargs="+", choices=PROVIDERS + CHECKPOINT_PROVIDERS,
                    metavar="NAME", help=f"default: {' '.join(PROVIDERS)}; also "
                                         f"{' '.join(CHECKPOINT_PROVIDERS)}")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps after the first")
    ap.add_argument("--reps", type=int, default=None,
                    help="timed steps (default: as many as fit in ~1.5 s on CPU, at least 5)")
    ap.add_argument("--profile-steps", type=int, default=OPTIONS["profile_steps"],
                    help="steps under the profiler for the breakdown (0: no breakdown)")
    ap.add_argument("--amp", action="store_true",
                    help="TrainConfig.amp: bf16 autocast of the networks (CUDA)")
    ap.add_argument("--quick", action="store_true", help="main-quick only, 1-2 reps: a smoke test")
    ap.add_argument("--out", default=report.DEFAULT_OUT)
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of presets this run does not measure")
    args = ap.parse_args(argv)
    options = dict(profile_steps=args.profile_steps, amp=args.amp,
                   checkpoint=bool(set(args.providers or ()) & set(CHECKPOINT_PROVIDERS)))
    # under `python -m` this file is __main__, and benchmarks.cases imports
    # it again as benchmarks.train_step: set the options the cases read there
    OPTIONS.update(options)
    importlib.import_module(f"{__package__}.train_step").OPTIONS.update(options)
    presets = args.preset or (QUICK_PRESETS if args.quick else PRESETS)
    if args.quick and not set(presets) & set(QUICK_PRESETS):
        ap.error(f"--quick runs {' '.join(QUICK_PRESETS)}")
    return report.run(device=args.device, suites=[SUITE], ops=presets,
                      providers=args.providers or list(PROVIDERS),
                      quick=args.quick, out=args.out, merge=args.merge, warmup=args.warmup,
                      reps=args.reps, copy_bw=False)


if __name__ == "__main__":
    sys.exit(main())
