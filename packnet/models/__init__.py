"""PackNet-SfM model zoo on packops: PackNet01 (1A, 1B), PackNetSlim01, PoseNet.

Module names and parameter shapes are the original release's, so its
checkpoints load with `model.load_state_dict(state_dict)`. The released
.ckpt files keep both networks in one dict ('state_dict') under
'model.depth_net.' and 'model.pose_net.'; strip the prefix first, either with
the one-liner (which, like the release's loader, finds the prefix anywhere)

    sd = {k.split('depth_net.', 1)[1]: v for k, v in sd.items() if 'depth_net.' in k}

or with the helper: `strip_prefix(sd, 'model.depth_net.')` (keeps only keys
that start with the prefix). Older .pth.tar files say 'disp_network' and
'pose_network' instead, and their dropout shortcuts 'conv3.0.*', which the
release renames to 'conv3.*' (load them into a model built without dropout).

Differences from the release: forward returns the inverse depths bare (a list
of 4 in train mode, one [B,1,H,W] tensor in eval mode) instead of
{'inv_depths': ...}; inputs are shape-checked (ValueError); PackNetSlim01
refuses version '1B', which cannot run in the release either; initialisation
has the release's distribution (xavier_uniform_ conv weights, zero conv
biases, GroupNorm 1/0) but not its exact random draws for a given seed: each
conv is initialised once, as it is built (layers.release_init), where the
release makes a pass over the built network.

The layers (Conv2D, PackLayerConv3d, UnpackLayerConv3d, ResidualConv,
InvDepth, ...) are in packnet.models.layers.

Costs: `count_flops_and_params(model, H, W)` -> dict, `summary(model, H, W)` -> str.
"""
from .packnet01 import PackNet01, PackNetSlim01, PackNetTiny
from .posenet import PoseNet
from .utils import count_flops_and_params, count_params, strip_prefix, summary

__all__ = ["PackNet01", "PackNetSlim01", "PackNetTiny", "PoseNet", "strip_prefix", "count_params",
           "count_flops_and_params", "summary"]
