"""Training settings: TrainConfig (every setting, with its one-line help),
their conversion from YAML / --set text to each field's type, validation
that names the setting, the value and what is allowed, and what may change
when a run is resumed."""
import copy
import dataclasses
import functools
import math
import os
import re

import torch

from . import specs
from .specs import _FALSE, _TRUE, DATASETS, DEPTH_MODELS

__all__ = ["TrainConfig", "ConfigError", "settings_help", "resume_changes", "format_changes",
           "ADJUSTABLE_ON_RESUME", "RETIRED", "show", "packops_backend", "yaml_loader"]


def _setting(default, help, adjustable=False):
    """A TrainConfig field with its help (--list-settings); adjustable: a resume may change it."""
    metadata = {"help": help, "adjustable": adjustable}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d),
                                 metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_adjustable = functools.partial(_setting, adjustable=True)  # ADJUSTABLE_ON_RESUME
# Settings of earlier versions, ignored when read (old runs still resume): why each went.
RETIRED = {"num_workers": "reserved, never used: batches are loaded in the training process"}
CHECKPOINT_PARTS = ("none", "decoder", "encoder", "all")
CUDA_GRAPH = ("auto", "on", "off")


@dataclasses.dataclass
class TrainConfig:
    """Every training setting. The defaults are the main job's preset: 1900
    steps of 4 synthetic 64x192 frames, 10-15 minutes on a 2-core CPU (the
    main job's measured times are in docs/results.md).
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
    data: str = _setting("synthetic", "data set: " + ", ".join(DATASETS) + " (built-in synthetic, "
                         "KITTI raw, frames + intrinsics.txt; packnet.data.make_dataset)")
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
    init: str = _setting("", "checkpoint whose network weights start the run (--init): a "
                         "packnet checkpoint or a PackNet-SfM release .ckpt, its depth network "
                         "this run's model and version; optimizer and schedule start fresh; "
                         "'' = random initialisation")
    # optimisation
    batch_size: int = _setting(4, "samples per step (per process under torchrun)")
    steps: int = _adjustable(1900, "training steps (optimizer updates, skipped ones included)")
    lr: float = _adjustable(5e-4, "Adam learning rate (the paper's 2e-4 is for PackNet01 over "
                            "50 epochs)")
    lr_step_fraction: float = _adjustable(0.6, "StepLR period as a fraction of steps (the "
                                          "paper's 30 of 50 epochs)")
    lr_gamma: float = _adjustable(0.5, "StepLR factor")
    clip_grad: float = _adjustable(10.0, "gradient norm clipping threshold")
    # losses
    num_scales: int = _setting(4, "depth scales in the photometric loss, 1 to 4")
    velocity_weight: float = _setting(0.05, "velocity loss weight (metric scale); 0 turns it off")
    velocity_warmup: int = _setting(200, "steps over which the velocity weight ramps up from 0")
    supervised_weight: float = _setting(0.0, "supervised L1 weight on inverse depth (data with "
                                        "depth); 0 = off")
    smooth_weight: float = _setting(0.001, "edge-aware smoothness weight")
    automask: bool = _setting(True, "the unwarped context frames are min-reprojection "
                              "candidates too (monodepth2's auto-masking of pixels that do not "
                              "move between frames)")
    mask_out_of_view: bool = _setting(True, "a warped context frame is a candidate of the "
                                      "min-reprojection only where its warp lands inside it "
                                      "(runs that predate the setting: off)")
    upsample_mode: str = _setting("nearest", "how each inverse-depth scale is upsampled to full "
                                  "resolution before warping: nearest (the original) or "
                                  "bilinear")
    # execution
    ops: str = _adjustable("fused", "fused (packops' kernels) or reference (plain PyTorch)")
    amp: bool = _adjustable(False, "bf16 autocast (CUDA only)")
    compile: bool = _adjustable(False, "torch.compile the depth and pose nets (packops' ops "
                                "inside the graph); costs a compile at the first step")
    checkpoint_activations: str = _adjustable("none", "recompute activations in backward: none, "
                                              "decoder, encoder or all (less memory, more time)")
    cuda_graph: str = _adjustable("auto", "capture the whole training step once as a CUDA "
                                  "graph and replay it: auto (on for CUDA in one process), on, off")
    cudnn_benchmark: bool = _adjustable(True, "let cuDNN time its algorithms for training's "
                                        "fixed shapes (CUDA)")
    device: str = _adjustable("auto", "auto (CUDA when available), cpu, cuda or cuda:N")
    seed: int = _setting(0, "seed of the initialisation, the batch order and augmentation")
    max_bad_steps: int = _adjustable(10, "stop after this many non-finite steps in a row")
    log_every: int = _adjustable(10, "steps between log.csv / TensorBoard rows")
    ckpt_every: int = _adjustable(100, "steps between checkpoints (a kill loses at most these)")
    eval_every_minutes: float = _adjustable(0.0, "evaluate on the test split every this many "
                                            "minutes of training into curve.csv; 0 = off")
    preview_every: int = _adjustable(250, "steps between depth previews; 0 = none")
    progress: bool = _adjustable(True, "tqdm progress bar")

    @classmethod
    def from_dict(cls, d, validate=False):
        """A TrainConfig from a mapping (YAML, a checkpoint's config; RETIRED settings
        are ignored); values are converted to each field's type (ValueError naming the
        setting). validate=True also checks the ranges, reporting every bad setting at once."""
        if not isinstance(d, dict):
            raise ValueError(f"TrainConfig: settings must be a mapping of name: value, got "
                             f"{type(d).__name__}")
        d = {k: v for k, v in d.items() if k not in RETIRED}
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
            problems.append(f"{name} = {show(getattr(self, name))}: {what}")

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
            self.model_kwargs = _checked(problems, specs.MODEL_KWARGS[self.model],
                                         self.model_kwargs, "model_kwargs", self.model)
        if "nb_ref_imgs" in self.pose_kwargs:
            bad("pose_kwargs", "nb_ref_imgs is set by the trainer (2 context frames)")
        else:
            self.pose_kwargs = _checked(problems, specs.POSE_KWARGS, self.pose_kwargs,
                                        "pose_kwargs", "PoseNet")
        if self.data not in DATASETS:
            bad("data", f"choose {', '.join(DATASETS)}")
        else:
            self.data_kwargs = _checked(problems, specs.DATA_KWARGS[self.data], self.data_kwargs,
                                        "data_kwargs", f"{self.data} data")
            problems.extend(_data_kwargs_problems(self.data, self.data_kwargs))
        for name in ("batch_size", "steps", "max_bad_steps", "log_every", "ckpt_every"):
            if getattr(self, name) < 1:
                bad(name, "must be an integer >= 1")
        for name in ("velocity_warmup", "preview_every"):
            if getattr(self, name) < 0:
                bad(name, "must be an integer >= 0")
        if not 0 <= self.seed < 2 ** 64:  # what torch.manual_seed takes
            bad("seed", "must be an integer from 0 to 2**64 - 1")
        if not 1 <= self.num_scales <= 4:
            bad("num_scales", "must be 1 to 4 (the depth network returns 4 scales)")
        for name in ("lr", "lr_step_fraction", "lr_gamma", "clip_grad"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                bad(name, "must be a finite number > 0")
        for name in ("velocity_weight", "supervised_weight", "smooth_weight", "eval_every_minutes"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                bad(name, "must be a finite number >= 0")
        if self.ops not in ("fused", "reference"):
            bad("ops", "choose fused or reference")
        if self.upsample_mode not in ("nearest", "bilinear"):
            bad("upsample_mode", "choose nearest or bilinear")
        if self.checkpoint_activations not in CHECKPOINT_PARTS:
            bad("checkpoint_activations", f"choose {', '.join(CHECKPOINT_PARTS)}")
        device = None
        try:
            device = self.resolved_device()
        except ValueError as e:
            bad("device", str(e))
        if self.amp and device is not None and device.type != "cuda":
            bad("amp", f"bf16 autocast needs a CUDA device (device is {str(device)!r}); "
                       f"set amp=false")
        if self.cuda_graph not in CUDA_GRAPH:
            bad("cuda_graph", f"choose {', '.join(CUDA_GRAPH)}")
        elif self.cuda_graph == "on" and device is not None and device.type != "cuda":
            bad("cuda_graph", f"a CUDA graph needs a CUDA device (device is {str(device)!r}); "
                              f"set cuda_graph=auto or off")
        if self.ops in ("fused", "reference"):
            try:
                packops_backend(self.ops, device)
            except ValueError as e:
                problems.append(str(e))
        _raise_problems(problems)
        return self

    def requested_backend(self):
        """The packops backend this run asks for (see packops_backend)."""
        return packops_backend(self.ops, self.resolved_device())

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


# What a resume may change (applied, printed); the rest is fixed (name, out_dir locate the run).
ADJUSTABLE_ON_RESUME = tuple(f.name for f in dataclasses.fields(TrainConfig)
                             if f.metadata["adjustable"])


def packops_backend(ops="fused", device=None):
    """The packops backend a run asks for. ops=reference: "reference" (the
    setting wins over the environment); ops=fused: the one PACKOPS_BACKEND
    (or packops.set_backend) requests, "auto" by default, so training runs on
    any backend through that variable. ValueError for a name packops does not
    know (also with ops=reference: the variable is wrong either way), or for a
    backend that cannot run on `device` here."""
    import packops
    requested = str(packops.get_backend())
    env = os.environ.get("PACKOPS_BACKEND")
    source = (f"PACKOPS_BACKEND={env!r}" if env is not None and env.strip().lower() == requested
              else f"packops backend {requested!r} (packops.set_backend)")
    if requested != "auto" and requested not in packops.BACKENDS:
        raise ValueError(f"{source}: not a packops backend; choose auto, "
                         f"{', '.join(packops.BACKENDS)}, or unset it")
    if ops == "reference" or requested == "auto":
        return "reference" if ops == "reference" else "auto"
    info = packops.backends()[requested]
    if not info.available:
        raise ValueError(f"{source}: the {requested} backend is not available here "
                         f"({info.reason}); choose another or unset it")
    if device is not None and torch.device(device).type not in info.devices:
        raise ValueError(f"{source}: the {requested} backend runs on "
                         f"{' and '.join(info.devices)} tensors here, and the device is "
                         f"{str(device)!r}; choose another backend or device")
    return requested


def yaml_loader():
    """yaml's SafeLoader, refusing a key given twice in one mapping (SafeLoader
    keeps the last silently: `lr: 1e-3` further down would win unseen). Keys
    merged in with `<<:` may still be overridden, as YAML intends."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=deep)
                    try:
                        first = seen.get(key)
                    except TypeError:  # an unhashable key: SafeLoader says so
                        break
                    if first is not None:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r} on line "
                            f"{key_node.start_mark.line + 1} (first on line {first + 1}): give "
                            f"each setting once", key_node.start_mark)
                    seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def settings_help():
    """Every TrainConfig field: name, type, default and help (one line each)."""
    lines = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"{f.name} ({f.type.__name__}, default {show(default)}): "
                     f"{f.metadata.get('help', '')}")
    return "\n".join(lines)


def show(v):
    """A value as a message shows it: 0.0005, (64, 192), 'text', {'a': 1}."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)) and not isinstance(v, str):
        inner = ", ".join(show(x) for x in v)
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
    raise ValueError(f"{name} = {show(value)}: expected an integer")


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


def _checked(problems, table, kwargs, setting, label):
    """kwargs converted by its table in packnet/specs.py (as given when a key is
    bad: the problems then stop the run)."""
    converted, found = specs.check_kwargs(table, kwargs, setting, label)
    problems.extend(found)
    return kwargs if found else converted


def _data_kwargs_problems(data, kw):
    """What the data set needs beyond each key's own type and range."""
    problems = []
    if data in ("folder", "kitti") and not kw.get("root"):
        problems.append(f"data_kwargs = {show(kw)}: data {data!r} needs root, the data "
                        f"directory (--data-root DIR)")
    if data == "kitti":
        files = kw.get("split_files")
        if not (files or kw.get("split_file")):
            problems.append(f"data_kwargs = {show(kw)}: kitti data needs split_files "
                            f"({{train: FILE, val: FILE, test: FILE}}) or split_file")
        elif files and kw.get("split_file"):
            problems.append(f"data_kwargs = {show(kw)}: kitti data takes split_files (one file "
                            f"per split) or split_file (one file for every split), not both")
        elif isinstance(files, dict):
            if "train" not in files:
                problems.append(f"data_kwargs split_files = {show(files)}: needs a train entry, "
                                f"the split file to train on")
            for split, f in files.items():
                if isinstance(f, str) and not _split_file_exists(f, kw.get("root")):
                    problems.append(f"data_kwargs split_files {split} = {f!r}: split file not "
                                    f"found (looked for it as given and in root)")
    ctx = kw.get("context")
    if isinstance(ctx, (list, tuple)) and len(ctx) != 2:
        problems.append(f"data_kwargs context = {show(ctx)}: the trainer's PoseNet takes 2 "
                        f"context frames, e.g. [-1, 1]")
    return problems


def _split_file_exists(path, root):
    """Where KITTIRaw looks for a split file: as given, else relative to root."""
    return os.path.isfile(path) or (isinstance(root, str)
                                    and os.path.isfile(os.path.join(root, path)))


# Settings whose default changed after they were introduced: the value a run
# ran with when its checkpoint does not record the setting (written before
# the setting existed). mask_out_of_view became the default after the lever
# runs in docs/results.md.
PREVIOUS_DEFAULTS = {"mask_out_of_view": False}


def saved_settings(saved):
    """A checkpoint's config (a dict) with PREVIOUS_DEFAULTS for the settings
    it predates: the settings its run trained with."""
    return {**PREVIOUS_DEFAULTS, **saved}


def resume_changes(saved, cfg):
    """Settings that differ between a checkpoint's config (a dict) and cfg:
    (fixed, adjustable), each a list of (name, saved value, new value).
    name and out_dir locate the run and are not compared; settings the
    checkpoint does not have (an older version) are not compared either,
    except those in PREVIOUS_DEFAULTS, which it ran with."""
    saved = saved_settings(saved)
    fixed, adjustable = [], []
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("name", "out_dir") or f.name not in saved:
            continue
        try:
            old = _coerce(f.name, f.type, saved[f.name])
        except ValueError:
            old = saved[f.name]
        new = getattr(cfg, f.name)
        if f.name in ("data_kwargs", "model_kwargs", "pose_kwargs"):
            same = _comparable(f.name, cfg, old) == _comparable(f.name, cfg, new)
        else:
            same = old == new
        if not same:
            (adjustable if f.name in ADJUSTABLE_ON_RESUME else fixed).append((f.name, old, new))
    return fixed, adjustable


def _comparable(name, cfg, kw):
    """A run's keyword arguments as its table converts them (context (-1, 1) and
    [-1, 1] are one setting; a checkpoint of an earlier version may hold
    either), data paths made absolute."""
    if not isinstance(kw, dict):
        return kw
    table = {"data_kwargs": specs.DATA_KWARGS.get(cfg.data),
             "model_kwargs": specs.MODEL_KWARGS.get(cfg.model),
             "pose_kwargs": specs.POSE_KWARGS}[name] or {}
    out = {}
    for k, v in kw.items():
        try:
            out[k] = table[k].convert(v) if k in table else v
        except ValueError:
            out[k] = v
        if name == "data_kwargs" and isinstance(out[k], str) and k in (
                "root", "intrinsics_file", "speed_file", "depth_dir"):
            out[k] = os.path.abspath(os.path.expanduser(out[k]))
    return out


def format_changes(changes):
    return ", ".join(f"{n} {show(a)} -> {show(b)}" for n, a, b in changes)


