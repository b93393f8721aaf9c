"""Suite "train-step", the headline: the trainer's real training step, per provider.

What is timed is `packnet.train.Trainer.train_step(batch)` itself (zero_grad,
depth and pose nets, photometric + smoothness + velocity loss, backward,
gradient clipping, Adam, LR scheduler) on a Trainer built from a TrainConfig
and one fixed batch of synthetic samples (collated once, on the CPU as the
data loader gives it), under the backend `Trainer.fit` picks. So an
optimisation of the trainer counts here.

Presets (TrainConfig fields; "-amp": the same with amp=True, bf16 autocast, CUDA only):
  main        the TrainConfig defaults: the main job (PackNetTiny, batch 4, 64x192)
  packnet01   PackNet01 (model_kwargs {}, pose_kwargs {}), 192x640, batch 1 on
              the CPU, 4 on a GPU
  main-quick  (--bench-quick) main at batch 1, 32x64: a smoke test
Providers: `PROVIDERS`, the TrainConfig settings each makes. A provider whose
setting TrainConfig does not have (yet) is skipped, saying so.

Metrics: images/s (batch / median step), peak MB of one step, first call s
(compilation under fused+compile), and from `profile_steps` steps under
torch.profiler (benchmarks/breakdown.py; the profiler slows the step, so the
shares are the result, not the profiled times): the time breakdown by
category, the host time of the trainer's phases (its record_function ranges
packnet.forward/loss/backward/clip/optimizer), and on CUDA launches and host
syncs per step and GPU busy %. On CUDA also achieved TFLOP/s: the preset's
model FLOPs (torch.utils.flop_counter over one step with the reference
ops, whose convolutions it counts; packops' kernels it cannot see, so once
per preset, the same work for every provider) over the median step, and its
share of the device's dense peak (bf16 under amp, else TF32 when cuDNN may
use it, as by default, else FP32).
"""
import dataclasses
import functools

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import packops

from . import breakdown, measure
from .cases import OPTIONS, Case, Run, Skip

PROVIDERS = {
    "reference": {"ops": "reference"},
    "fused": {"ops": "fused"},
    "fused+compile": {"ops": "fused", "compile": True},
    "fused+graph": {"ops": "fused", "cuda_graph": "on"},  # the step captured as a CUDA graph
    "fused+ckpt-decoder": {"ops": "fused", "checkpoint_activations": "decoder"},
    "fused+ckpt-encoder": {"ops": "fused", "checkpoint_activations": "encoder"},
    "fused+ckpt-all": {"ops": "fused", "checkpoint_activations": "all"},
}
# what every provider that does not name them sets, where TrainConfig has the
# field: cuda_graph "auto" would capture a graph on CUDA for every provider
DEFAULTS = {"cuda_graph": "off"}


def _preset(preset, device):
    base = preset.removesuffix("-amp")
    kw = {"amp": preset.endswith("-amp")}
    if base == "packnet01":
        kw.update(model="PackNet01", model_kwargs={}, pose_kwargs={}, size=(192, 640),
                  batch_size=4 if device.type == "cuda" else 1)
    elif base == "main-quick":
        kw.update(batch_size=1, size=(32, 64))
    elif base != "main":
        raise ValueError(f"train-step: unknown preset {preset!r}")
    return kw


def make_config(preset, provider, device):
    """The TrainConfig of a preset and provider (Skip: a setting TrainConfig lacks)."""
    from packnet.train import TrainConfig
    device = torch.device(device)
    if PROVIDERS[provider].get("cuda_graph") == "on" and device.type != "cuda":
        raise Skip("a CUDA graph needs a CUDA device")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {"device": str(device), "progress": False, **_preset(preset, device)}
    for key, value in {**DEFAULTS, **PROVIDERS[provider]}.items():
        if key in fields:
            kw[key] = value
        elif key in PROVIDERS[provider]:
            raise Skip(f"TrainConfig has no {key!r} setting (yet)")
    return TrainConfig(**kw)


def make_trainer(cfg):
    """(Trainer, batch): cfg.batch_size synthetic samples collated once."""
    from packnet.data import make_dataset
    from packnet.train import Trainer
    ds = make_dataset("synthetic", split="train", size=tuple(cfg.size), num_sequences=1,
                      frames_per_sequence=cfg.batch_size + 2)
    batch = torch.utils.data.default_collate([ds[i] for i in range(cfg.batch_size)])
    return Trainer(cfg, dataset=ds, log=lambda msg: None), batch


_flops = {}


def step_flops(preset, device):
    """Model FLOPs of one step of a preset (amp or not: the same work),
    counted once over a reference-ops step."""
    from torch.utils.flop_counter import FlopCounterMode
    key = (preset.removesuffix("-amp"), str(device))
    if key not in _flops:
        trainer, batch = make_trainer(make_config(key[0], "reference", device))
        counter = FlopCounterMode(display=False)
        with packops.use_backend("reference"), counter:
            trainer.train_step(batch)
        _flops[key] = counter.get_total_flops()
    return _flops[key]


def profile_breakdown(step, device, steps):
    """breakdown.breakdown() of `steps` calls of step() under torch.profiler."""
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            with record_function(breakdown.ROOT):
                step()
                if cuda:  # the window ends with the step's last kernel; not the step's sync
                    with record_function(breakdown.SYNC):
                        torch.cuda.synchronize(device)
    return breakdown.breakdown(prof.events(), device=cuda)


def profile_metrics(b):
    """The per-step columns of a breakdown() result."""
    n = b["steps"]
    out = {"breakdown_pct": breakdown.percentages(b),
           "breakdown_ms": {c: v / 1e3 / n for c, v in b["us"].items()},
           "profiled_step_ms": b["total_us"] / 1e3 / n,
           "phase_ms": {p: v / 1e3 / n for p, v in b["phase_us"].items()},
           "other_top": [[name, v / 1e3 / n] for name, v in b["other_top"]]}
    if "busy_us" in b:
        out.update(launches_per_step=b["launches"] / n, kernels_per_step=b["kernels"] / n,
                   syncs_per_step=b["syncs"] / n, gpu_busy_pct=100 * b["busy_us"] / b["total_us"])
    return out


def _setup(preset, provider, device):
    cfg = make_config(preset, provider, device)
    if provider == "fused+compile":
        torch._dynamo.reset()
    trainer, batch = make_trainer(cfg)
    backend = getattr(trainer, "backend", "reference" if cfg.ops == "reference" else "auto")

    def step():
        return trainer.train_step(batch)

    def metrics(median_s, first):
        out = {"images_per_s": cfg.batch_size / median_s if median_s else None,
               "peak_mem_mb": measure.memory(step, device)[0] / 1e6}
        if OPTIONS["profile_steps"] > 0:
            out.update(profile_metrics(profile_breakdown(step, device, OPTIONS["profile_steps"])))
        if device.type == "cuda" and median_s:
            tf32 = torch.backends.cudnn.allow_tf32  # the convolutions dominate the FLOPs
            precision = "bf16" if cfg.amp else ("tf32" if tf32 else "fp32")
            flops = step_flops(preset, device)
            peak = breakdown.peak_tflops(measure.device_name(device), precision)
            out.update(flops=flops, peak_precision=precision, peak_tflops=peak)
            out["tflops"], out["pct_peak"] = breakdown.achieved(flops, median_s, peak)
        return out

    def close():
        trainer.step_fn = trainer.depth_net = trainer.pose_net = trainer.opt = None
    # one untimed step after the first is warm-up enough (a PackNet01 step takes
    # seconds on the CPU); the first created Adam's state (and compiled). With a
    # CUDA graph: the eager warm-up steps, the capture, and one replay
    import packnet.train
    graph = getattr(trainer, "graph", False)  # an earlier packnet (benchmarks.compare) has none
    warmup = getattr(packnet.train, "GRAPH_WARMUP", 0) + 2 if graph else 1
    return Run(fn=step, metrics=metrics, context=lambda: packops.use_backend(backend),
               warmup=warmup, close=close)


def cases(device, quick=False):
    presets = ("main-quick",) if quick else ("main", "packnet01") + (
        ("main-amp", "packnet01-amp") if device.type == "cuda" else ())
    out = []
    for preset in presets:
        cfg = make_config(preset, "fused", device)
        params = {"preset": preset, "model": cfg.model, "batch": cfg.batch_size,
                  "size": f"{cfg.size[0]}x{cfg.size[1]}", "amp": cfg.amp}
        out += [Case("train-step", preset, p, params, functools.partial(_setup, preset, p))
                for p in PROVIDERS]
    return out
