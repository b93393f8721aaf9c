"""Checkpoints: written atomically, read without the full unpickler unless
trusted (a release's yacs config read as plain dicts), RNG states stored as
tensors and lists. The run directory around them: packnet/rundir.py."""
import os
import pickle
import random
import re
import sys
import warnings
from collections import OrderedDict

import numpy as np
import torch

__all__ = ["CheckpointError", "CheckpointNotFoundError", "UnsafeCheckpointError",
           "save_checkpoint", "load_checkpoint", "plain_config", "CONFIG_CLASSES",
           "rng_state", "set_rng_state", "first_line", "TRAINING_KEYS"]


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


class _ConfigNode:
    """What a known config class of a checkpoint (CONFIG_CLASSES: yacs'
    CfgNode, a dict subclass of plain values, in PackNet-SfM's released
    .ckpt files) unpickles to under weights_only: an OrderedDict, the only
    dict torch's safe unpickler lets a pickle fill with SETITEMS and give
    attributes with BUILD (yacs' bookkeeping: a frozen flag, sets and dicts of
    key names). Calling it with any arguments gives an empty OrderedDict and
    nothing else; none of the config class's code is imported or run.
    load_checkpoint then turns the config into plain dicts (plain_config)."""

    def __new__(cls, *args, **kwargs):
        return OrderedDict()


# Full names a pickle may give a harmless config class by; each reads as
# _ConfigNode. Only classes that hold plain data belong here.
CONFIG_CLASSES = ("yacs.config.CfgNode",)


def _numpy_globals():
    """What a numpy array needs to unpickle (and nothing else): checkpoints
    written before the RNG states became tensors and lists hold one."""
    core = getattr(np, "_core", None) or np.core
    rec = core.multiarray._reconstruct
    return [(rec, "numpy.core.multiarray._reconstruct"),
            (rec, "numpy._core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _safe_globals():
    return _numpy_globals() + [(_ConfigNode, name) for name in CONFIG_CLASSES]


def plain_config(value):
    """A config as plain Python: every mapping a dict (a CfgNode's
    OrderedDict, or a real CfgNode from the full unpickler, included), lists
    and tuples kept, their items converted too."""
    if isinstance(value, dict):
        return {k: plain_config(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(plain_config(v) for v in value)
    return value


def load_checkpoint(path, map_location="cpu", trust=False, require=("model", "config")):
    """Read a checkpoint with torch.load(weights_only=True): tensors, numbers,
    strings, lists, tuples and dicts only (plus numpy arrays, for checkpoints
    of earlier versions, and the config classes of CONFIG_CLASSES, read as
    dicts: PackNet-SfM's released .ckpt files), so a file cannot run code;
    checkpoint["config"] comes back as plain dicts. A file that needs the
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
            with torch.serialization.safe_globals(_safe_globals()):
                ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" not in msg:
            raise CheckpointError(path, f"cannot read it: not a (complete) PyTorch checkpoint "
                                        f"({first_line(msg)})") from None
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
                                        f"{first_line(str(e2))})") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(path, f"cannot read it: not a (complete) PyTorch checkpoint "
                                    f"({type(e).__name__}: {first_line(str(e))})") from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict):
        ckpt["config"] = plain_config(ckpt["config"])
    missing = [k for k in require if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        got = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(path, f"not a packnet checkpoint: expected a dict with "
                                    f"{', '.join(require)}; got {got}")
    if "config" in require and not isinstance(ckpt["config"], dict):
        raise CheckpointError(path, "not a packnet checkpoint: 'config' is not a mapping")
    return ckpt


def first_line(text):
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else "no detail"


def rng_state():
    """Every RNG state as tensors and plain lists (loadable with weights_only)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(gauss)},
            "python": [version, list(internal), gauss_next],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s):
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
