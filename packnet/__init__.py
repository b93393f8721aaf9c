"""packnet: the PackNet-SfM model zoo, geometry and losses on packops.

packnet.load_release(path) -> (depth_net, pose_net, info): a released
PackNet-SfM .ckpt file as ready networks (packnet/release.py).
"""
from . import models  # cheap: ~0.1 s beyond importing torch and packops

__all__ = ["models", "load_release"]


def __getattr__(name):
    # imported on first use, so `import packnet` stays cheap
    if name == "load_release":
        from .release import load_release
        return load_release
    raise AttributeError(f"module 'packnet' has no attribute {name!r}")
