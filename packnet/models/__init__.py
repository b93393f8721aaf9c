"""PackNet-SfM model zoo on packops: PackNet01 (1A, 1B), PackNetSlim01, PoseNet.

Module names and parameter shapes are the original release's, so its
checkpoints load with `model.load_state_dict(state_dict)`. Released
checkpoints keep both networks in one dict under 'depth_net.' and
'pose_net.' (Lightning ones under 'model.depth_net.'); strip the prefix
first, either with the one-liner

    sd = {k.split('depth_net.', 1)[1]: v for k, v in sd.items() if 'depth_net.' in k}

or with the helper: `strip_prefix(sd, 'depth_net.')` (keeps only keys that
start with the prefix). Differences from the release: forward returns the
inverse depths bare (a list of 4 in train mode, one [B,1,H,W] tensor in eval
mode) instead of {'inv_depths': ...}; inputs are shape-checked (ValueError);
PackNetSlim01 refuses version '1B', which cannot run in the release either.

Costs: `count_flops_and_params(model, H, W)` -> dict, `summary(model, H, W)` -> str.
"""
from .layers import InvDepth, ResidualBlock, ResidualConv
from .packnet01 import PackNet01, PackNetSlim01
from .posenet import PoseNet
from .utils import count_flops_and_params, count_params, strip_prefix, summary

__all__ = ["PackNet01", "PackNetSlim01", "PoseNet", "ResidualConv", "ResidualBlock",
           "InvDepth", "strip_prefix", "count_params", "count_flops_and_params", "summary"]
