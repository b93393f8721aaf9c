"""What each data set and network takes from a config: one table per class,
every keyword argument with its type and range. TrainConfig.validate() reads
them, so a value the class cannot use (fps: 0, init_depth: ten, context:
[a, b]) is refused at start, naming the key, instead of ending in a
traceback at the first step or after training.

The tables are also the registry of names: DATASETS (the keys of
DATA_KWARGS) and DEPTH_MODELS (of MODEL_KWARGS) are the one list of data
sets and depth networks, read by TrainConfig, `packnet train/eval --data`,
make_dataset, packnet.release and the tests (tests/test_train.py checks
each name against its class and the docs).

A table lists every argument a config may give the class (the trainer sets
the others: split, size, transform, nb_ref_imgs); tests/test_train.py keeps
the tables in step with the signatures. A check converts the value (an
integral float to an int, "1e-3" to a float: YAML leaves some numbers
strings) or raises ValueError; `what` says what is allowed, for the message.
The tables live here, in one module without torch, rather than beside each
class, so that checking a config imports no data set or network code.
"""
import math

__all__ = ["DATA_KWARGS", "MODEL_KWARGS", "POSE_KWARGS", "DATASETS", "DEPTH_MODELS", "SPLITS",
           "check_kwargs"]

SPLITS = ("train", "val", "test")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class Number:
    """A finite number in a range; None too when optional."""

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False, optional=False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.optional = optional
        bounds = []
        if lo is not None:
            bounds.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            bounds.append(f"{'<' if hi_open else '<='} {hi:g}")
        self.what = ("a finite number" + (" " + " and ".join(bounds) if bounds else "")
                     + (", or null" if optional else ""))

    def convert(self, v):
        if v is None and self.optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError(self.what)
        try:
            x = float(v.strip()) if isinstance(v, str) else float(v)
        except (ValueError, OverflowError):
            raise ValueError(self.what) from None
        lo, hi = self.lo, self.hi
        if (not math.isfinite(x) or lo is not None and (x <= lo if self.lo_open else x < lo)
                or hi is not None and (x >= hi if self.hi_open else x > hi)):
            raise ValueError(self.what)
        return x


class Integer:
    """An integer >= lo (an integral float or a digit string converts); None too
    when optional."""

    def __init__(self, lo=None, optional=False):
        self.lo, self.optional = lo, optional
        self.what = ("an integer" + (f" >= {lo}" if lo is not None else "")
                     + (", or null" if optional else ""))

    def convert(self, v):
        if v is None and self.optional:
            return None
        x = _integer(v)
        if x is None or self.lo is not None and x < self.lo:
            raise ValueError(self.what)
        return x


def _integer(v):
    """v as an int, or None when it is not one (True is not 1 here)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return None
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return None


class Boolean:
    what = "true or false"

    def convert(self, v):
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
            return v.strip().lower() in _TRUE
        raise ValueError(self.what)


class Choice:
    def __init__(self, *choices):
        self.choices = choices
        self.what = "one of " + ", ".join(map(repr, choices))

    def convert(self, v):
        if v not in self.choices:
            raise ValueError(self.what)
        return v


class Path:
    """A file or directory name (text); None too when optional."""

    def __init__(self, optional=False):
        self.optional = optional
        self.what = "a path (text)" + (", or null" if optional else "")

    def convert(self, v):
        if v is None and self.optional:
            return None
        if not isinstance(v, str) or not v.strip():
            raise ValueError(self.what)
        return v


class Offsets:
    """Context frame offsets: a list of non-zero integers (0 would make the
    target its own context)."""
    what = "a list of non-zero integer frame offsets such as [-1, 1]"

    def convert(self, v):
        if not isinstance(v, (list, tuple)) or not v:
            raise ValueError(self.what)
        out = [_integer(x) for x in v]
        if any(x is None or x == 0 for x in out):
            raise ValueError(self.what)
        return out


class SplitFiles:
    """KITTI split files by split name: {train: FILE, val: FILE, test: FILE}."""
    what = "a mapping of split name to split file, e.g. {train: FILE, val: FILE, test: FILE}"

    def convert(self, v):
        if not isinstance(v, dict) or not v:
            raise ValueError(self.what)
        unknown = [k for k in v if k not in SPLITS]
        if unknown:
            raise ValueError(f"{self.what}; split names are {', '.join(SPLITS)}, not "
                             f"{', '.join(map(repr, unknown))}")
        bad = [k for k, f in v.items() if not isinstance(f, str) or not f.strip()]
        if bad:
            raise ValueError(f"{self.what}; the file of {', '.join(bad)} is not a path")
        return dict(v)


# --------------------------------------------------------------- the tables
# SyntheticDriving (packnet/data/synthetic.py); split, size and transform come
# from the trainer. seed feeds numpy's SeedSequence (>= 0).
SYNTHETIC = {"num_sequences": Integer(1, optional=True), "frames_per_sequence": Integer(2),
             "seed": Integer(0), "context": Offsets(), "cache_frames": Integer(0, optional=True),
             "fps": Number(0, lo_open=True)}
# KITTIRaw (packnet/data/kitti.py), with make_dataset's split_files.
KITTI = {"root": Path(), "split_file": Path(), "split_files": SplitFiles(),
         "context": Offsets(), "depth_gt": Boolean(), "skip_bad": Boolean()}
# FolderDataset (packnet/data/folder.py); make_dataset finds intrinsics.txt,
# speed.txt and depth/ in root when they are not given.
FOLDER = {"root": Path(), "intrinsics_file": Path(optional=True),
          "speed_file": Path(optional=True), "depth_dir": Path(optional=True),
          "context": Offsets(), "skip_bad": Boolean(), "fps": Number(0, lo_open=True)}
DATA_KWARGS = {"synthetic": SYNTHETIC, "kitti": KITTI, "folder": FOLDER}

# PackNet01 / PackNetSlim01 / PackNetTiny (packnet/models/packnet01.py): the
# prediction heads bottom out at min_depth 0.5 m, so init_depth must exceed it.
_PACKNET = {"version": Choice("1A", "1B"), "dropout": Number(0, 1, optional=True),
            "init_depth": Number(0.5, lo_open=True, optional=True)}
MODEL_KWARGS = {"PackNet01": _PACKNET, "PackNetSlim01": _PACKNET, "PackNetTiny": _PACKNET}
DATASETS = tuple(DATA_KWARGS)       # the data sets by name: synthetic, kitti, folder
DEPTH_MODELS = tuple(MODEL_KWARGS)  # the depth networks, classes of packnet.models
# PoseNet (packnet/models/posenet.py); nb_ref_imgs is the trainer's (2).
POSE_KWARGS = {"rotation_mode": Choice("euler"),
               "translation_scale": Number(0, lo_open=True),
               "rotation_scale": Number(0, lo_open=True)}


def check_kwargs(table, kwargs, setting, label):
    """(kwargs converted by `table`, problems): one message per bad key, naming
    the setting, the key, the value and what `label` takes."""
    from .config import show  # the one way values are shown in messages
    problems, out = [], {}
    unknown = [k for k in kwargs if k not in table]
    if unknown:
        problems.append(f"{setting} = {show(kwargs)}: {label} takes no argument "
                        f"{', '.join(map(repr, unknown))} (it takes "
                        f"{', '.join(sorted(table))})")
    for k, v in kwargs.items():
        if k not in table:
            continue
        try:
            out[k] = table[k].convert(v)
        except ValueError as e:
            problems.append(f"{setting} {k} = {show(v)}: {label} takes {k} as {e}")
    return out, problems
