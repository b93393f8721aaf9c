"""Checkpoint key handling and model cost (parameters, multiply-accumulates)."""
import contextlib

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

import packops

__all__ = ["strip_prefix", "count_params", "count_flops_and_params", "summary"]


def strip_prefix(state_dict, prefix):
    """The entries of `state_dict` whose key starts with `prefix`, with the prefix
    removed; others are dropped. A PackNet-SfM checkpoint holds both networks
    under 'depth_net.' / 'pose_net.' (after a 'model.' prefix in the Lightning
    checkpoints), so e.g. strip_prefix(ckpt['state_dict'], 'model.depth_net.')."""
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"strip_prefix: prefix must be a non-empty str, got {prefix!r}")
    return type(state_dict)((k[len(prefix):], v) for k, v in state_dict.items()
                            if k.startswith(prefix))


def count_params(model, trainable_only=False):
    """Number of parameters (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _fake_twin(model, mode):
    # Costs do not depend on the weights: a twin of fake tensors (shapes only,
    # device "cpu" so packops' dispatch accepts them) runs the forward without
    # allocating or computing anything, at any resolution.
    config = getattr(model, "config", None)
    if config is None:
        return None
    with mode:
        twin = type(model)(**config)
    return twin.train(model.training)


@torch.no_grad()
def count_flops_and_params(model, height, width, batch=1):
    """Cost of one forward pass of a packnet model on [batch, 3, height, width] images.

    Returns {'params', 'macs', 'flops', 'height', 'width', 'batch'}: macs counts the
    multiply-accumulates of convolutions and matrix products (what
    torch.utils.flop_counter sees of the packops reference backend, i.e. the
    original layers' 2D and 3D convolutions; normalisation and activations
    are not counted), flops = 2 * macs. The fused packops backends do fewer
    multiply-adds than this (pack_conv folds the 3D conv into the 2D one), so
    this is the network's nominal cost, independent of the backend.
    `model` needs `example_inputs(batch, height, width, device)` (all packnet
    models have it); models with `config` (constructor arguments) are measured
    on a fake-tensor twin, others by a real forward pass.
    """
    mode = FakeTensorMode()
    twin = _fake_twin(model, mode)
    runner = twin if twin is not None else model
    ctx = mode if twin is not None else contextlib.nullcontext()
    counter = FlopCounterMode(display=False)
    with packops.use_backend("reference"), ctx:
        args = runner.example_inputs(batch, height, width,
                                     device=next(runner.parameters()).device)
        with counter:
            runner(*args)
    flops = counter.get_total_flops()
    return dict(params=count_params(model), macs=flops // 2, flops=flops, height=height,
                width=width, batch=batch)


def summary(model, height=192, width=640, batch=1):
    """One readable line: '<Name>: 128.29M parameters, 205.10 GMACs (410.20 GFLOPs) at 192x640'."""
    c = count_flops_and_params(model, height, width, batch)
    return (f"{type(model).__name__}: {c['params'] / 1e6:.2f}M parameters, "
            f"{c['macs'] / 1e9:.2f} GMACs ({c['flops'] / 1e9:.2f} GFLOPs) at "
            f"{batch}x3x{height}x{width}")
