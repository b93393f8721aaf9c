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
import copy
import csv
import dataclasses
import inspect
import math
import os
import pickle
import random
import re
import shutil
import sys
import time
import warnings

import numpy as np
import torch

import packops

from . import geometry, models
from .losses import MultiViewPhotometricLoss, SupervisedLoss, VelocityLoss

__all__ = ["TrainConfig", "ConfigError", "Trainer", "save_checkpoint", "load_checkpoint",
           "CheckpointError", "UnsafeCheckpointError", "check_run_dir", "resume_changes",
           "settings_help"]


def _setting(default, help):
    """A TrainConfig field with its one-line help (packnet train --list-settings)."""
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d),
                                 metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


DEPTH_MODELS = ("PackNet01", "PackNetSlim01", "PackNetTiny")
DATASETS = ("synthetic", "kitti", "folder")
# Settings that may change when a run is resumed (applied and printed); every
# other setting (except name and out_dir, which locate the run) is fixed.
ADJUSTABLE_ON_RESUME = ("steps", "lr", "lr_step_fraction", "lr_gamma", "clip_grad", "ops", "amp",
                        "device", "num_workers", "max_bad_steps", "log_every", "ckpt_every",
                        "preview_every", "progress")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclasses.dataclass
class TrainConfig:
    """Every training setting. The defaults are the main job's preset: about
    10 minutes on a 2-core CPU (1500 steps of 4 synthetic 64x192 frames).
    `packnet train --list-settings` prints every field with its default and
    its help; values from YAML or `--set` are converted to the field's type
    (`lr=1e-3` is a float, `size=64x192` a pair) and validate() checks every
    one, naming the setting, the value and what is allowed.

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
    name: str = _setting("synthetic-tiny", "run name: the run's files go to OUT_DIR/NAME/")
    out_dir: str = _setting("runs", "directory that holds the runs")
    # data
    data: str = _setting("synthetic", "data set: synthetic (built in), kitti (KITTI raw) or "
                         "folder (frames + intrinsics.txt); see packnet.data.make_dataset")
    data_kwargs: dict = _setting({}, "the data set's keyword arguments, e.g. {root: DIR} "
                                 "(--data-root), {num_sequences: 4}, {skip_bad: true}")
    size: tuple = _setting((64, 192), "(H, W) of the training images, multiples of 32; "
                           "--set size=64x192")
    augment: bool = _setting(False, "colour jitter + horizontal flip (the paper's recipe)")
    # model
    model: str = _setting("PackNetTiny", "depth network: " + ", ".join(DEPTH_MODELS))
    model_kwargs: dict = _setting({"init_depth": 10.0}, "the depth network's keyword arguments "
                                  "(version, dropout, init_depth; the preset starts at 10 m)")
    pose_kwargs: dict = _setting({"translation_scale": 0.1}, "PoseNet's keyword arguments "
                                 "(translation_scale, rotation_scale)")
    # optimisation
    batch_size: int = _setting(4, "samples per step (per process under torchrun)")
    steps: int = _setting(1500, "training steps (optimizer updates, skipped ones included)")
    lr: float = _setting(5e-4, "Adam learning rate (the paper's 2e-4 is for PackNet01 over "
                         "50 epochs)")
    lr_step_fraction: float = _setting(0.6, "StepLR period as a fraction of steps (the paper's "
                                       "30 of 50 epochs)")
    lr_gamma: float = _setting(0.5, "StepLR factor")
    clip_grad: float = _setting(10.0, "gradient norm clipping threshold")
    # losses
    num_scales: int = _setting(4, "depth scales in the photometric loss, 1 to 4")
    velocity_weight: float = _setting(0.05, "velocity loss weight (metric scale); 0 turns it off")
    velocity_warmup: int = _setting(200, "steps over which the velocity weight ramps up from 0")
    supervised_weight: float = _setting(0.0, "supervised L1 weight on inverse depth (data with "
                                        "depth); 0 = off")
    smooth_weight: float = _setting(0.001, "edge-aware smoothness weight")
    # execution
    ops: str = _setting("fused", "fused (packops' kernels) or reference (plain PyTorch)")
    amp: bool = _setting(False, "bf16 autocast (CUDA only)")
    device: str = _setting("auto", "auto (CUDA when available), cpu, cuda or cuda:N")
    seed: int = _setting(0, "seed of the initialisation, the batch order and augmentation")
    num_workers: int = _setting(0, "reserved: batches are loaded in the training process")
    max_bad_steps: int = _setting(10, "stop after this many non-finite steps in a row")
    log_every: int = _setting(10, "steps between log.csv / TensorBoard rows")
    ckpt_every: int = _setting(100, "steps between checkpoints (a kill loses at most these)")
    preview_every: int = _setting(250, "steps between depth previews; 0 = none")
    progress: bool = _setting(True, "tqdm progress bar")

    @classmethod
    def from_dict(cls, d, validate=False):
        """A TrainConfig from a mapping (YAML, a checkpoint's config); values
        are converted to each field's type (ValueError naming the setting).
        validate=True also checks the ranges, reporting every bad setting at once."""
        if not isinstance(d, dict):
            raise ValueError(f"TrainConfig: settings must be a mapping of name: value, got "
                             f"{type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"TrainConfig: unknown setting(s) {unknown}; known: {sorted(fields)} "
                             f"(packnet train --list-settings)")
        problems, values = [], {}
        for k, v in d.items():
            try:
                values[k] = _coerce(k, fields[k].type, v)
            except ValueError as e:
                problems.append(str(e))
        if problems and validate:  # the other settings' problems too, in one message
            try:
                cls(**values).validate()
            except ConfigError as e:
                problems += e.problems
        _raise_problems(problems)
        cfg = cls(**values)
        return cfg.validate() if validate else cfg

    def validate(self):
        """Convert every value to its field's type and check its range; raises
        ValueError listing each bad setting with its value and what is allowed."""
        problems = []
        for f in dataclasses.fields(self):
            try:
                setattr(self, f.name, _coerce(f.name, f.type, getattr(self, f.name)))
            except ValueError as e:
                problems.append(str(e))
        _raise_problems(problems)

        def bad(name, what):
            problems.append(f"{name} = {_show(getattr(self, name))}: {what}")

        if not self.name or self.name in (".", "..") or "/" in self.name or os.sep in self.name:
            bad("name", "must be a plain directory name (no '/', not '.' or '..')")
        if not self.out_dir:
            bad("out_dir", "must be a directory")
        H, W = self.size
        if H < 32 or W < 32 or H % 32 or W % 32:
            bad("size", "H and W must be positive multiples of 32 (divisible by 32: the network "
                        "halves them 5 times), e.g. 64x192")
        if self.model not in DEPTH_MODELS:
            bad("model", f"choose {', '.join(DEPTH_MODELS)}")
        else:
            _check_kwargs(problems, "model_kwargs", self.model_kwargs,
                          getattr(models, self.model), self.model)
        if "nb_ref_imgs" in self.pose_kwargs:
            bad("pose_kwargs", "nb_ref_imgs is set by the trainer (2 context frames)")
        else:
            _check_kwargs(problems, "pose_kwargs", self.pose_kwargs, models.PoseNet, "PoseNet")
        if self.data not in DATASETS:
            bad("data", f"choose {', '.join(DATASETS)}")
        else:
            problems.extend(_data_kwargs_problems(self.data, self.data_kwargs))
        for name in ("batch_size", "steps", "max_bad_steps", "log_every", "ckpt_every"):
            if getattr(self, name) < 1:
                bad(name, "must be an integer >= 1")
        for name in ("velocity_warmup", "preview_every", "seed", "num_workers"):
            if getattr(self, name) < 0:
                bad(name, "must be an integer >= 0")
        if not 1 <= self.num_scales <= 4:
            bad("num_scales", "must be 1 to 4 (the depth network returns 4 scales)")
        for name in ("lr", "lr_step_fraction", "lr_gamma", "clip_grad"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                bad(name, "must be a finite number > 0")
        for name in ("velocity_weight", "supervised_weight", "smooth_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                bad(name, "must be a finite number >= 0")
        if self.ops not in ("fused", "reference"):
            bad("ops", "choose fused or reference")
        device = None
        try:
            device = self.resolved_device()
        except ValueError as e:
            bad("device", str(e))
        if self.amp and device is not None and device.type != "cuda":
            bad("amp", f"bf16 autocast needs a CUDA device (device is {str(device)!r}); "
                       f"set amp=false")
        _raise_problems(problems)
        return self

    def resolved_device(self):
        """torch.device for `device` ("auto": cuda:LOCAL_RANK when CUDA is there,
        else cpu); ValueError for a name torch does not know or a missing GPU."""
        if self.device == "auto":
            if torch.cuda.is_available():
                return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
            return torch.device("cpu")
        try:
            dev = torch.device(self.device)
        except (RuntimeError, ValueError, TypeError):
            raise ValueError("not a device; use auto, cpu, cuda or cuda:N") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("no CUDA device is available here; use auto or cpu")
        if dev.type not in ("cpu", "cuda"):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return dev


def settings_help():
    """Every TrainConfig field: name, type, default and help (one line each)."""
    lines = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"{f.name} ({f.type.__name__}, default {_show(default)}): "
                     f"{f.metadata.get('help', '')}")
    return "\n".join(lines)


def _show(v):
    """A value as a message shows it: 0.0005, (64, 192), 'text', {'a': 1}."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)) and not isinstance(v, str):
        inner = ", ".join(_show(x) for x in v)
        return f"({inner})" if isinstance(v, tuple) else f"[{inner}]"
    return repr(v)


class ConfigError(ValueError):
    """Bad settings; `.problems` lists one message per setting."""

    def __init__(self, problems):
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(f"TrainConfig: {self.problems[0]}")
        else:
            super().__init__(f"TrainConfig: {len(self.problems)} bad settings: "
                             + "; ".join(self.problems))


def _raise_problems(problems):
    if problems:
        raise ConfigError(problems)


def _as_int(name, value):
    if isinstance(value, bool):
        raise ValueError(f"{name} = {value!r}: expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{name} = {value!r}: expected an integer") from None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise ValueError(f"{name} = {_show(value)}: expected an integer")


def _coerce(name, ftype, value):
    """A setting's value (from YAML, a flag or Python) as the field's type:
    int (integral floats and digit strings too), float (numbers and strings
    such as '1e-3', which YAML leaves a string), bool (true/false, yes/no,
    on/off, 1/0), str, dict, and for size a pair of ints from [H, W] or 'HxW'."""
    if ftype is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{name} = {value!r}: expected true or false")
    if ftype is int:
        return _as_int(name, value)
    if ftype is float:
        if isinstance(value, bool):
            raise ValueError(f"{name} = {value!r}: expected a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{name} = {value!r}: expected a number")
    if ftype is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)   # a run named 2024
        raise ValueError(f"{name} = {value!r}: expected a string")
    if ftype is dict:
        if value is None:
            return {}
        if isinstance(value, dict):
            return copy.deepcopy(value)
        raise ValueError(f"{name} = {value!r}: expected a mapping such as {{key: value}}")
    if ftype is tuple:
        parts = value
        if isinstance(value, str):
            parts = [p for p in re.split(r"[x,\s]+", value.strip().lower()) if p]
        if not isinstance(parts, (list, tuple)) or len(parts) != 2:
            raise ValueError(f"{name} = {value!r}: expected HxW such as 64x192 (or [H, W])")
        try:
            return tuple(_as_int(name, p) for p in parts)
        except ValueError:
            raise ValueError(f"{name} = {value!r}: expected HxW such as 64x192 (or [H, W]), "
                             f"two integers") from None
    return value


def _accepted(cls, drop=()):
    """(keyword names cls() accepts, whether it takes **kwargs)."""
    params = inspect.signature(cls).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - set(drop), any(p.kind == p.VAR_KEYWORD for p in params)


def _check_kwargs(problems, name, kwargs, cls, label, drop=(), extra=()):
    names, var = _accepted(cls, drop)
    names |= set(extra)
    unknown = [k for k in kwargs if not isinstance(k, str) or (k not in names and not var)]
    if unknown:
        problems.append(f"{name} = {_show(kwargs)}: {label} takes no argument "
                        f"{', '.join(map(repr, unknown))} (it takes {', '.join(sorted(names))})")


def _data_kwargs_problems(data, kw):
    from . import data as data_pkg  # lazily: only training needs the data sets
    problems = []
    if data == "synthetic":
        _check_kwargs(problems, "data_kwargs", kw, data_pkg.SyntheticDriving, "synthetic data",
                      drop=("split", "size", "transform"))
    elif data == "folder":
        _check_kwargs(problems, "data_kwargs", kw, data_pkg.FolderDataset, "folder data",
                      drop=("size", "transform"))
    else:
        _check_kwargs(problems, "data_kwargs", kw, data_pkg.KITTIRaw, "kitti data",
                      drop=("size", "transform"), extra=("split_files",))
    if data in ("folder", "kitti") and not kw.get("root"):
        problems.append(f"data_kwargs = {_show(kw)}: data {data!r} needs root, the data "
                        f"directory (--data-root DIR)")
    if data == "kitti" and not (kw.get("split_files") or kw.get("split_file")):
        problems.append(f"data_kwargs = {_show(kw)}: kitti data needs split_files "
                        f"({{train: FILE, val: FILE, test: FILE}}) or split_file")
    ctx = kw.get("context")
    if ctx is not None and (not isinstance(ctx, (list, tuple)) or len(ctx) != 2):
        problems.append(f"data_kwargs context = {_show(ctx)}: the trainer's PoseNet takes 2 "
                        f"context frames, e.g. [-1, 1]")
    return problems


def resume_changes(saved, cfg):
    """Settings that differ between a checkpoint's config (a dict) and cfg:
    (fixed, adjustable), each a list of (name, saved value, new value).
    name and out_dir locate the run and are not compared; settings the
    checkpoint does not have (an older version) are not compared either."""
    fixed, adjustable = [], []
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("name", "out_dir") or f.name not in saved:
            continue
        try:
            old = _coerce(f.name, f.type, saved[f.name])
        except ValueError:
            old = saved[f.name]
        new = getattr(cfg, f.name)
        if f.name == "data_kwargs":
            same = _norm_paths(old) == _norm_paths(new)
        else:
            same = old == new
        if not same:
            (adjustable if f.name in ADJUSTABLE_ON_RESUME else fixed).append((f.name, old, new))
    return fixed, adjustable


def _norm_paths(kw):
    if not isinstance(kw, dict):
        return kw
    kw = dict(kw)
    for k in ("root", "intrinsics_file", "speed_file", "depth_dir"):
        if isinstance(kw.get(k), str):
            kw[k] = os.path.abspath(os.path.expanduser(kw[k]))
    return kw


def format_changes(changes):
    return ", ".join(f"{n} {_show(a)} -> {_show(b)}" for n, a, b in changes)


# ------------------------------------------------------------ checkpoints
class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, not a packnet
    checkpoint, or unsafe to load. The message names the file; `.path` is it."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


class UnsafeCheckpointError(CheckpointError):
    """Loading the file would need Python's full unpickler (it can run code)."""


TRAINING_KEYS = ("model", "optimizer", "scheduler", "step", "rng", "config")


def save_checkpoint(path, state):
    """Atomic: a reader sees the old file or the new one, never a partial one."""
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def _numpy_globals():
    """What a numpy array needs to unpickle (and nothing else): checkpoints
    written before the RNG states became tensors and lists hold one."""
    core = getattr(np, "_core", None) or np.core
    rec = core.multiarray._reconstruct
    return [(rec, "numpy.core.multiarray._reconstruct"),
            (rec, "numpy._core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path, map_location="cpu", trust=False, require=("model", "config")):
    """Read a checkpoint with torch.load(weights_only=True): tensors, numbers,
    strings, lists, tuples and dicts only (plus numpy arrays, for checkpoints
    of earlier versions), so a file cannot run code. A file that needs the
    full unpickler raises UnsafeCheckpointError unless trust=True (then it is
    loaded with a warning on stderr; only for files you made or trust).
    Missing, unreadable or foreign files raise CheckpointError naming the file;
    `require`: the keys the checkpoint dict must have."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(path, "checkpoint not found")
    if os.path.isdir(path):
        raise CheckpointError(path, "is a directory, not a checkpoint file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # torch's notes on pickle protocols
            with torch.serialization.safe_globals(_numpy_globals()):
                ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" not in msg:
            raise CheckpointError(path, f"cannot read it: not a (complete) PyTorch checkpoint "
                                        f"({_first_line(msg)})") from None
        found = re.search(r"GLOBAL ([\w.]+)", msg) or re.search(r"(Unsupported [^\n.]*)", msg)
        wants = f" (it asks for {found.group(1)})" if found else ""
        if not trust:
            raise UnsafeCheckpointError(
                path, f"refused: loading it needs Python's full unpickler, which can run code "
                      f"stored in the file{wants}. Only if you made the file or trust where it "
                      f"came from, load it with --trust-checkpoint (trust=True)") from None
        print(f"warning: loading {path} with the full unpickler (--trust-checkpoint): code in "
              f"the file runs{wants}", file=sys.stderr)
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as e2:  # noqa: BLE001 - any unpickling failure names the file
            raise CheckpointError(path, f"cannot read it ({type(e2).__name__}: "
                                        f"{_first_line(str(e2))})") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(path, f"cannot read it: not a (complete) PyTorch checkpoint "
                                    f"({type(e).__name__}: {_first_line(str(e))})") from None
    missing = [k for k in require if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        got = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(path, f"not a packnet checkpoint: expected a dict with "
                                    f"{', '.join(require)}; got {got}")
    if "config" in require and not isinstance(ckpt["config"], dict):
        raise CheckpointError(path, "not a packnet checkpoint: 'config' is not a mapping")
    return ckpt


def _first_line(text):
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else "no detail"


def _rng_state():
    """Every RNG state as tensors and plain lists (loadable with weights_only)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(gauss)},
            "python": [version, list(internal), gauss_next],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s):
    torch.set_rng_state(s["torch"].cpu())
    n = s["numpy"]
    if isinstance(n, dict):
        keys = n["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    else:  # a checkpoint of an earlier version: numpy's own tuple
        np.random.set_state(n)
    version, internal, gauss_next = s["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in s["cuda"]])


# ---------------------------------------------------------- run directory
LOG_COLUMNS = ["step", "loss", "photometric", "smoothness", "velocity", "lr", "images_per_s"]
RUN_FILES = ("checkpoint.pt", "log.csv", "summary.json")
RUN_DIRS = ("previews", "tensorboard")


def check_run_dir(run_dir, resume=False, overwrite=False):
    """ValueError when a new run would write over an existing one (its
    checkpoint, log or summary): it is continued with resume, replaced with
    overwrite, never silently."""
    if resume and overwrite:
        raise ValueError(f"--resume continues {run_dir}, --overwrite replaces it: give one")
    if resume or overwrite:
        return
    existing = [f for f in RUN_FILES if os.path.exists(os.path.join(run_dir, f))
                and (f != "log.csv" or _log_has_rows(os.path.join(run_dir, f)))]
    if existing:
        raise ValueError(f"run {os.path.basename(os.path.normpath(run_dir))!r} already exists in "
                         f"{run_dir} ({', '.join(existing)}): continue it with --resume, start "
                         f"another with --name NEW, or replace it with --overwrite")


def _log_has_rows(path):
    """A log.csv with only its header (a run that failed at its first step)
    holds nothing to lose."""
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip()) > 1
    except OSError:
        return True


def clear_run(run_dir):
    """Remove a run's files (checkpoint, log, summary, previews, TensorBoard
    events) and nothing else; returns what was removed."""
    removed = []
    for f in RUN_FILES:
        p = os.path.join(run_dir, f)
        if os.path.isfile(p):
            os.remove(p)
            removed.append(f)
    for d in RUN_DIRS:
        p = os.path.join(run_dir, d)
        if os.path.isdir(p):
            shutil.rmtree(p)
            removed.append(d + "/")
    return removed


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(run_dir):
    """Remove checkpoint.pt.tmp.<pid> files whose process is gone (a kill
    during a save); returns their paths."""
    removed = []
    if not os.path.isdir(run_dir):
        return removed
    for f in sorted(os.listdir(run_dir)):
        head, _, pid = f.rpartition(".tmp.")
        if head in ("checkpoint.pt", "log.csv") and pid.isdigit() and not _pid_alive(int(pid)):
            path = os.path.join(run_dir, f)
            os.remove(path)
            removed.append(path)
    return removed


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
        self.device = cfg.resolved_device()
        self.dataset = dataset if dataset is not None else make_dataset(cfg)
        self._check_dataset_size(custom=dataset is not None)
        torch.manual_seed(cfg.seed)
        self.depth_net = getattr(models, cfg.model)(**cfg.model_kwargs).to(self.device)
        self.pose_net = models.PoseNet(nb_ref_imgs=2, **cfg.pose_kwargs).to(self.device)
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
    def fit(self, resume=False, stop_after=None, overwrite=False, trust=False, state=None):
        """Train to cfg.steps (or stop_after steps from here, for tests).

        An existing run (checkpoint.pt, log.csv or summary.json in the run
        directory) is continued with resume=True, replaced with overwrite=True,
        and otherwise refused (ValueError). resume=True loads checkpoint.pt
        (trust: see load_checkpoint), refuses changed settings other than
        ADJUSTABLE_ON_RESUME and applies those (the learning-rate schedule
        included). Temporary files of killed runs are removed, and log.csv rows
        after the step the run continues from are dropped (they are replayed).
        state: checkpoint.pt's contents when the caller has already loaded them.
        """
        cfg = self.cfg
        self._prepare_run_dir(resume, overwrite)
        if resume and os.path.isfile(self.ckpt_path):
            self.resume_from(self.ckpt_path, trust=trust, state=state)
            state = None  # not kept alive during training
        elif resume:
            self.log(f"resume: no checkpoint in {self.run_dir}; starting at step 0")
        target = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        per_epoch = max(1, len(self.dataset) // self.world // cfg.batch_size)
        bar = _progress(target, self.step, cfg.progress and self.rank == 0)
        log_file = None
        if self.rank == 0:
            os.makedirs(self.run_dir, exist_ok=True)
            log_path = os.path.join(self.run_dir, "log.csv")
            self._trim_log(log_path)
            new = not os.path.exists(log_path)
            log_file = open(log_path, "a", newline="")
            writer = csv.writer(log_file)
            if new:
                writer.writerow(LOG_COLUMNS)
        tb = _tensorboard(self.run_dir, self.step) if self.rank == 0 else None
        backend = "reference" if cfg.ops == "reference" else "auto"
        t0, seen = time.perf_counter(), 0
        try:
            with packops.use_backend(backend):
                while self.step < target:
                    epoch, skip = divmod(self.step, per_epoch)
                    at_start = self.step
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
                    if self.step == at_start:  # never spin: an epoch must make progress
                        raise RuntimeError(f"packnet.train: epoch {epoch} gave no batch to train "
                                           f"on at step {self.step} ({len(self.dataset)} samples, "
                                           f"batch_size {cfg.batch_size}, {self.world} "
                                           f"process(es))")
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


    # ------------------------------------------------- run directory
    def _prepare_run_dir(self, resume, overwrite):
        """Refuse to clobber an existing run, clear it for overwrite, remove
        temporaries of killed runs. Rank 0 decides; every rank gets its answer."""
        error = None
        if self.rank == 0:
            try:
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

    def resume_from(self, path, trust=False, state=None):
        """Load a training checkpoint (or take its loaded `state`): fixed settings
        must match the run's (ValueError naming them), adjustable ones are
        applied and printed."""
        s = state if state is not None else load_checkpoint(path, self.device, trust=trust,
                                                            require=TRAINING_KEYS)
        fixed, adjustable = resume_changes(s["config"], self.cfg)
        if fixed:
            raise ValueError(
                f"cannot resume {self.run_dir} with changed settings: {format_changes(fixed)}. "
                f"These are fixed for a run: drop them to continue it, or start a new run "
                f"with --name NEW. (Adjustable on resume: {', '.join(ADJUSTABLE_ON_RESUME)})")
        try:
            self.load_state(s)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(path, f"does not fit this run's networks and optimizer "
                                        f"({type(e).__name__}: {_first_line(str(e))})") from None
        for name, old, new in adjustable:
            self.log(f"resume: {name} {_show(old)} -> {_show(new)}")
        if {"steps", "lr", "lr_step_fraction", "lr_gamma"} & {c[0] for c in adjustable}:
            self._apply_schedule()
        self.log(f"resumed from {path} at step {self.step}")
        if self.step >= self.cfg.steps:
            self.log(f"resume: the run is at step {self.step}, steps is {self.cfg.steps}: "
                     f"nothing to train")

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
        self.log(f"resume: learning rate {_show(sched._last_lr[0])} (lr {_show(cfg.lr)}, StepLR "
                 f"every {sched.step_size} steps x {_show(cfg.lr_gamma)}, {decays} decay(s) "
                 f"after {sched.last_epoch} optimizer steps)")

    def _trim_log(self, path):
        """Drop log.csv rows after the step this run continues from (a kill
        after logging them and before the next checkpoint: they are replayed)."""
        if not os.path.exists(path):
            return
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or not rows[0] or rows[0][0] != "step":
            return
        keep = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= self.step]
        if len(keep) == len(rows) - 1:
            return
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([rows[0]] + keep)
        os.replace(tmp, path)
        self.log(f"log.csv: dropped {len(rows) - 1 - len(keep)} row(s) after step {self.step} "
                 f"(logged after the last checkpoint; those steps run again)")

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
