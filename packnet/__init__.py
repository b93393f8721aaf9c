"""packnet: the PackNet-SfM model zoo, geometry and losses on packops, and
the trainer built on them.

packnet.train_and_evaluate(cfg) -> summary: a whole training run, as
`packnet train` does it (packnet/run.py; cfg: a packnet.TrainConfig).
packnet.load_release(path) -> (depth_net, pose_net, info): a released
PackNet-SfM .ckpt file as ready networks (packnet/release.py).
"""
from . import models  # cheap: ~0.1 s beyond importing torch and packops

__all__ = ["models", "load_release", "train_and_evaluate", "TrainConfig", "Trainer"]

_LAZY = {"load_release": ("release", "load_release"),
         "train_and_evaluate": ("run", "train_and_evaluate"),
         "TrainConfig": ("config", "TrainConfig"), "Trainer": ("train", "Trainer")}


def __getattr__(name):
    # imported on first use, so `import packnet` stays cheap
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'packnet' has no attribute {name!r}")
