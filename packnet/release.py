"""PackNet-SfM's released models (PackNet01_MR_selfsup_K.ckpt,
PackNet01_MR_velsup_CStoK.ckpt, PackNetSlim01_..., ...) as packnet networks,
read without running code from the file and without yacs.

A release file is torch.save of {"config": a yacs CfgNode, "epoch",
"state_dict": {"model.depth_net.*", "model.pose_net.*"}, "optimizer",
"scheduler"}. packnet.checkpoint.load_checkpoint reads it through torch's
weights_only unpickler, with yacs.config.CfgNode read as plain dicts (any
other class the file asks for is refused, naming it); this module builds the
networks the config names from the state_dict:

    depth_net, pose_net, info = packnet.load_release("PackNet01_MR_velsup_CStoK.ckpt")

The depth network is the release's, output for output: the same modules and
inverse-depth heads (sigmoid / 0.5), built with the release's version and
loaded with every weight, so `init_depth` (an initial bias of our models)
plays no part. Its depth (1 / output) is metric for the velocity- and
semi-supervised models (config model.name VelSupModel / SemiSupModel), up to
scale for the self-supervised ones (info["metric"]).
"""
import hashlib
import os

import torch

from . import models
from .checkpoint import CheckpointError, load_checkpoint
from .specs import DEPTH_MODELS
from .models import strip_prefix

__all__ = ["load_release", "is_release", "checkpoint_format", "checkpoint_info", "describe",
           "release_depth_net", "release_pose_net", "load_weights", "check_init", "init_networks",
           "POSE_NETS"]

POSE_NETS = ("PoseNet",)
METRIC_MODELS = ("VelSupModel", "SemiSupModel")   # trained with a metric signal


def is_release(ckpt):
    """Whether a loaded checkpoint is in PackNet-SfM's release format."""
    return (isinstance(ckpt, dict) and "state_dict" in ckpt and "model" not in ckpt
            and isinstance(ckpt.get("config"), dict))


def checkpoint_format(ckpt, path="<checkpoint>"):
    """"release" (PackNet-SfM's) or "packnet" (packnet train's) for a loaded
    checkpoint; CheckpointError naming the file for anything else."""
    if is_release(ckpt):
        return "release"
    if isinstance(ckpt, dict) and "model" in ckpt and "config" in ckpt:
        if not isinstance(ckpt["config"], dict):
            raise CheckpointError(path, "not a packnet checkpoint: 'config' is not a mapping")
        return "packnet"
    got = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
    raise CheckpointError(path, f"not a packnet checkpoint (a dict with model and config) nor a "
                                f"PackNet-SfM release (config and state_dict); got {got}")


def _get(config, dotted):
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _image_shape(value):
    """(H, W) when the release gives two positive multiples of 32, else None."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % 32 == 0
            for v in value):
        return tuple(value)
    return None


def checkpoint_info(ckpt, path="<checkpoint>"):
    """What a loaded checkpoint holds: {"format": "release" | "packnet",
    "depth_net", "version", "pose_net" (None: none), "image_shape" ((H, W)
    the release trained and ran at; None for packnet checkpoints), "model"
    (the release's model class), "metric" (True / False / None: unknown),
    "epoch", "step"}. CheckpointError, one line naming the file, for a
    release whose depth network packnet does not have."""
    if checkpoint_format(ckpt, path) == "packnet":
        cfg = ckpt["config"]
        kwargs = cfg.get("model_kwargs") if isinstance(cfg.get("model_kwargs"), dict) else {}
        nets = ckpt["model"] if isinstance(ckpt["model"], dict) else {}
        weights = [cfg.get("velocity_weight"), cfg.get("supervised_weight")]
        metric = (any(w > 0 for w in weights if isinstance(w, (int, float)))
                  if any(isinstance(w, (int, float)) for w in weights) else None)
        return {"format": "packnet", "depth_net": cfg.get("model"),
                "version": kwargs.get("version", "1A"),
                "pose_net": "PoseNet" if nets.get("pose_net") else None, "image_shape": None,
                "model": None, "metric": metric, "epoch": None, "step": ckpt.get("step")}
    cfg = ckpt["config"]
    name = _get(cfg, "model.depth_net.name")
    if not isinstance(name, str) or not name:
        raise CheckpointError(path, "a PackNet-SfM release without a depth network: its config "
                                    "has no model.depth_net.name")
    if name not in DEPTH_MODELS:  # the release's PackNet01, PackNetSlim01, and our PackNetTiny
        raise CheckpointError(path, f"the release's depth network {name} is not one packnet "
                                    f"has (supported: {', '.join(DEPTH_MODELS)})")
    version = _get(cfg, "model.depth_net.version")
    if not isinstance(version, str) or not version:
        raise CheckpointError(path, f"the release's config gives no model.depth_net.version; "
                                    f"{name} needs '1A' or '1B'")
    model = _get(cfg, "model.name") or None
    return {"format": "release", "depth_net": name, "version": version,
            "pose_net": _get(cfg, "model.pose_net.name") or None,
            "image_shape": _image_shape(_get(cfg, "datasets.augmentation.image_shape")),
            "model": model, "metric": (model in METRIC_MODELS) if model else None,
            "epoch": ckpt.get("epoch"), "step": None}


def describe(info, size=None):
    """One line about a release file for the commands: its network, where it
    came from, the input size (`size`, else its image_shape) and the scale."""
    shape = tuple(size) if size else info["image_shape"]
    if shape:
        run = f"input {shape[0]}x{shape[1]}" + (" (its image_shape)"
                                                if shape == info["image_shape"] else "")
    else:
        run = "input: each image's size rounded to multiples of 32"
    scale = {True: "depth in metres",
             False: "depth up to scale (self-supervised; eval also gives median-scaled "
                    "metrics)",
             None: "depth scale unknown"}[info["metric"]]
    origin = ", ".join(str(x) for x in (info["model"], info["epoch"] is not None
                                        and f"epoch {info['epoch']}") if x)
    return (f"PackNet-SfM release: {info['depth_net']} version {info['version']}"
            f"{f' ({origin})' if origin else ''}; {run}; {scale}")


def _release_weights(ckpt, net, path):
    """The `net` ("depth_net" / "pose_net") part of a release state_dict,
    prefix removed; {} when it has none."""
    sd = ckpt["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointError(path, f"the release's state_dict is a {type(sd).__name__}, not a "
                                    f"mapping of weights")
    return strip_prefix(sd, f"model.{net}.") or strip_prefix(sd, f"{net}.")


def _few(items, n=3):
    items = list(items)
    return ", ".join(map(str, items[:n])) + (f", ... ({len(items)} in all)" if len(items) > n
                                             else "")


def _shape(v):
    return tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__


def _match_shortcut_names(state, own):
    """The release names a residual shortcut conv3.* and, in networks built
    with dropout (Sequential(conv, Dropout2d)), conv3.0.*: the file's names
    become the network's (dropout holds no weights)."""
    out = {}
    for k, v in state.items():
        if k not in own:
            for a, b in ((".conv3.0.", ".conv3."), (".conv3.", ".conv3.0.")):
                if a in k and k.replace(a, b) in own:
                    k = k.replace(a, b)
                    break
        out[k] = v
    return out


def load_weights(net, state, path, what):
    """Load a state_dict into `net`, every weight or none: CheckpointError,
    one line naming the file, what was built (`what`) and which keys are
    missing, unexpected or of another shape."""
    own = net.state_dict()
    state = _match_shortcut_names(state, own)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {_shape(state[k])} vs {tuple(own[k].shape)}" for k in own
             if k in state and _shape(state[k]) != tuple(own[k].shape)]
    problems = [f"{len(keys)} {kind} ({_few(keys)})" for kind, keys in
                (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong))
                if keys]
    if problems:
        raise CheckpointError(path, f"{what} does not fit the file's weights: "
                                    f"{'; '.join(problems)}")
    net.load_state_dict(state)


def _build(cls, path, what, **kwargs):
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"cannot build {what}: {e}") from None


def release_depth_net(ckpt, path="<checkpoint>"):
    """The depth network of a loaded release checkpoint, in eval mode."""
    info = checkpoint_info(ckpt, path)
    name, version = info["depth_net"], info["version"]
    what = f"the release's {name} version {version}"
    net = _build(getattr(models, name), path, what, version=version)
    weights = _release_weights(ckpt, "depth_net", path)
    if not weights:
        raise CheckpointError(path, "the release's state_dict has no depth network weights "
                                    "(no model.depth_net.* keys)")
    load_weights(net, weights, path, what)
    return net.eval()


def release_pose_net(ckpt, path="<checkpoint>", required=True):
    """The pose network of a loaded release checkpoint (eval mode), or None
    when it has none. A pose network packnet does not have raises
    CheckpointError, or gives None when required=False."""
    name = checkpoint_info(ckpt, path)["pose_net"]
    weights = _release_weights(ckpt, "pose_net", path)
    if not name and not weights:
        return None
    if name not in POSE_NETS:
        if not required:
            return None
        raise CheckpointError(path, f"the release's pose network {name or '(unnamed)'} is not "
                                    f"one packnet has (supported: {', '.join(POSE_NETS)}); "
                                    f"load the depth network alone with pose=False")
    w = weights.get("pose_pred.weight")   # [6 * nb_ref_imgs, 256, 1, 1]
    n = 2   # the release's default; the weights say otherwise when they can
    if isinstance(w, torch.Tensor) and w.dim() and w.shape[0] and w.shape[0] % 6 == 0:
        n = w.shape[0] // 6
    net = _build(models.PoseNet, path, f"the release's PoseNet(nb_ref_imgs={n})", nb_ref_imgs=n)
    load_weights(net, weights, path, f"the release's PoseNet(nb_ref_imgs={n})")
    return net.eval()


def load_release(path, map_location="cpu", pose=True, trust=False):
    """A released PackNet-SfM .ckpt (or a packnet checkpoint) -> (depth_net,
    pose_net, info), both networks in eval mode.

    The file is read by packnet.checkpoint.load_checkpoint: tensors through
    torch.load(weights_only=True), the config's yacs CfgNode as plain dicts,
    so yacs need not be installed and nothing in the file runs; any other
    class it asks for is refused (UnsafeCheckpointError naming it; trust=True
    opts in to Python's full unpickler, only for files you trust).
    depth_net: the config's model.depth_net.name (PackNet01, PackNetSlim01)
    at its model.depth_net.version, every weight of model.depth_net.*;
    forward(rgb [B,3,H,W] in [0, 1], H and W multiples of 32) -> inverse depth
    [B,1,H,W], the release's output. pose_net: PoseNet from model.pose_net.*,
    or None when the file has none or pose=False. info: checkpoint_info's
    dict (format, depth_net, version, pose_net, image_shape: the size the
    release ran at, model, metric: whether 1 / inverse depth is in metres,
    epoch) plus "file".

    Errors are CheckpointError (a ValueError) naming the file: missing,
    truncated or not a checkpoint; a depth or pose network packnet does not
    have (naming it and listing what is supported); weights that do not fit.
    """
    from .infer import depth_net_from_checkpoint, pose_net_from_checkpoint
    path = os.fspath(path)
    ckpt = load_checkpoint(path, map_location=map_location, trust=trust, require=())
    info = {**checkpoint_info(ckpt, path), "file": path}
    depth_net = depth_net_from_checkpoint(ckpt, path, trust=trust)
    pose_net = None
    if pose:
        pose_net = (release_pose_net(ckpt, path) if info["format"] == "release"
                    else pose_net_from_checkpoint(ckpt, path))
    return depth_net, pose_net, info


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_init(ckpt, path, model, version):
    """The checkpoint info of a loaded `ckpt` that is to start a run of
    `model` at `version`; CheckpointError, one line naming the file, both
    architectures and the setting to change, when they differ or the file's
    pose network is not PoseNet."""
    info = checkpoint_info(ckpt, path)
    have = (info["depth_net"], info["version"])
    if have != (model, version):
        fix = (f"--model {have[0]}" if have[0] != model else
               f"--set 'model_kwargs={{version: {have[1]}}}'")
        raise CheckpointError(path, f"its depth network is {have[0]} version {have[1]}, this "
                                    f"run's is {model} version {version}: start the run with "
                                    f"{fix} to use this file, or --init another file")
    if info["pose_net"] not in (None,) + POSE_NETS:
        raise CheckpointError(path, f"its pose network {info['pose_net']} is not one packnet "
                                    f"has (supported: {', '.join(POSE_NETS)})")
    return info


def init_networks(path, depth_net, pose_net, model, version, trust=False, ckpt=None):
    """Copy the network weights of `path` (a packnet checkpoint or a
    PackNet-SfM release; `ckpt`: its contents when already loaded) into a new
    run's depth_net and pose_net (PoseNet). The file's depth network must be
    `model` at `version` (check_init); a file without pose weights leaves
    pose_net as it is. Returns the provenance: checkpoint_info's dict plus
    "file", "sha256", "pose" ("loaded" / "not in the file: freshly
    initialised") and "notes" (e.g. PoseNet output scales that differ from
    the file's: the release's are 0.01, the default preset's translation 0.1)."""
    path = os.fspath(path)
    if ckpt is None:
        ckpt = load_checkpoint(path, trust=trust, require=())
    info = check_init(ckpt, path, model, version)
    if info["format"] == "release":
        depth_w = _release_weights(ckpt, "depth_net", path)
        pose_w = _release_weights(ckpt, "pose_net", path)
    else:
        nets = ckpt["model"] if isinstance(ckpt["model"], dict) else {}
        depth_w, pose_w = nets.get("depth_net"), nets.get("pose_net")
    if not isinstance(depth_w, dict) or not depth_w:
        raise CheckpointError(path, "it holds no depth network weights")
    load_weights(depth_net, depth_w, path, f"this run's {model} version {version}")
    notes = []
    if isinstance(pose_w, dict) and pose_w:
        load_weights(pose_net, pose_w, path, "this run's PoseNet")
        pose = "loaded"
        # PoseNet multiplies its raw outputs by these (no parameter holds them)
        kw = {} if info["format"] == "release" else (ckpt["config"].get("pose_kwargs") or {})
        theirs = (kw.get("translation_scale", 0.01), kw.get("rotation_scale", 0.01))
        ours = (pose_net.translation_scale, pose_net.rotation_scale)
        if tuple(map(float, theirs)) != ours:
            notes.append(f"the file's PoseNet was trained with translation_scale, "
                         f"rotation_scale {theirs[0]:g}, {theirs[1]:g}, this run's are "
                         f"{ours[0]:g}, {ours[1]:g}: its poses start scaled by that ratio "
                         f"(--set 'pose_kwargs={{translation_scale: {theirs[0]:g}, "
                         f"rotation_scale: {theirs[1]:g}}}' keeps them)")
    else:
        pose = "not in the file: freshly initialised"
    return {**info, "file": os.path.abspath(path), "sha256": _sha256(path), "pose": pose,
            "notes": notes}
