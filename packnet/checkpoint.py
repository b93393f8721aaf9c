"""The files of a run: checkpoints (written atomically, read without the
full unpickler unless trusted), RNG states stored as tensors and lists, and
the run directory's hygiene (no silent overwrite, no stale temporaries)."""
import os
import pickle
import random
import re
import shutil
import sys
import time
import warnings
from collections import OrderedDict

try:
    import fcntl
except ImportError:  # Windows: no flock, runs are not locked
    fcntl = None

import numpy as np
import torch

__all__ = ["CheckpointError", "CheckpointNotFoundError", "UnsafeCheckpointError",
           "save_checkpoint", "load_checkpoint", "plain_config", "CONFIG_CLASSES",
           "check_run_dir", "clear_run", "clean_stale_temporaries", "rng_state", "set_rng_state",
           "first_line", "TRAINING_KEYS", "LOG_COLUMNS", "RunLock", "RunLockedError", "LOCK_FILE"]


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


# ---------------------------------------------------------- run directory
LOG_COLUMNS = ["step", "loss", "photometric", "smoothness", "velocity", "lr", "images_per_s"]
RUN_FILES = ("checkpoint.pt", "log.csv", "summary.json")
RUN_DIRS = ("previews", "tensorboard")
RUN_PICTURES = ("test-strip.png",)  # removed with the run, not a sign of one


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
    """Remove a run's files (checkpoint, log, summary, pictures, TensorBoard
    events) and nothing else; returns what was removed."""
    removed = []
    for f in RUN_FILES + RUN_PICTURES:
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




# ------------------------------------------------------------- run lock
LOCK_FILE = "train.lock"
_held = {}  # real path of a run directory -> [lock file descriptor, depth]: this process's


class RunLockedError(ValueError):
    """Another process is training in the run directory."""


class RunLock:
    """One writer per run directory: an exclusive flock on OUT_DIR/NAME/train.lock
    while a process trains in it. The kernel drops a flock when its process
    ends however it ends (exit, exception, SIGKILL), so a lock can never
    outlive its holder; the file holds the holder's pid, for the message a
    second writer gets. A file left by a killed process (its pid inside, no
    flock on it) is taken over with a note. Re-entrant within a process
    (packnet train holds it, Trainer.fit takes it again). Local file systems
    only: flock over NFS depends on the server."""

    def __init__(self, run_dir, log=print):
        self.run_dir, self.log = str(run_dir), log
        self.path = os.path.join(self.run_dir, LOCK_FILE)
        self._active = False

    def acquire(self):
        """Take the lock (RunLockedError naming the run and the holder's pid when
        another process has it); a no-op when this object already holds it."""
        if self._active:
            return self
        key = os.path.realpath(self.run_dir)
        if key in _held:
            _held[key][1] += 1
        else:
            os.makedirs(self.run_dir, exist_ok=True)
            _held[key] = [self._lock_file(), 1]
        self._key, self._active = key, True
        return self

    def release(self):
        if not self._active:
            return
        self._active = False
        held = _held[self._key]
        held[1] -= 1
        if held[1] == 0:
            del _held[self._key]
            if held[0] is not None:
                try:  # removed while still locked: an opener of the old file sees it is gone
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                os.close(held[0])

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()

    def _lock_file(self):
        if fcntl is None:
            return None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _flock(fd):
                holder = _read_pid(fd)
                os.close(fd)
                name = os.path.basename(os.path.normpath(self.run_dir))
                who = f"process {holder}" if holder else "another process"
                raise RunLockedError(
                    f"run {name!r} in {self.run_dir} is in use: {who} is training it (it holds "
                    f"{self.path}). Wait for it to finish or stop it, or start another run "
                    f"with --name NEW")
            try:
                mine = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                mine = False
            if mine:
                break
            os.close(fd)  # its holder removed the file as we opened it: lock the new one
        previous = _read_pid(fd)
        if previous and previous != os.getpid():
            self.log(f"{self.path}: process {previous} no longer holds this run (it was killed "
                     f"or crashed); its lock is taken over")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd


def _flock(fd, tries=20):
    """Exclusive flock without blocking, retried for half a second (a holder
    that is finishing lets go a moment later)."""
    for i in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if i + 1 < tries:
                time.sleep(0.025)
    return False


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
