"""Depth from images on disk: load a checkpoint, run the depth net, write
`<name>_depth.png` (colourised inverse depth) and `<name>_depth.npy` (depth,
float32 [H,W], at the image's own resolution) per image.

A checkpoint is what packnet.train saves: a dict with at least
{"model": {"depth_net": state_dict, ...}, "config": {"model": "PackNet01", ...
"model_kwargs": {...}}}. config["model"] names a class of packnet.models, or
"package.module:Class" for a model defined elsewhere. A released PackNet-SfM
.ckpt file loads too (packnet.release: the network its config names).
"""
import importlib
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import models
from .geometry import inv2depth
from .data.io import IMAGE_EXTS, _decode_rgb
from .visualize import _have_pillow, colorize_depth, save_png

__all__ = ["IMAGE_EXTENSIONS", "InferenceError", "load_depth_net", "depth_net_from_checkpoint",
           "pose_net_from_checkpoint", "load_image", "list_images", "infer"]

IMAGE_EXTENSIONS = IMAGE_EXTS   # the data loaders' list: .png .jpg .jpeg .bmp .ppm
DIVISOR = 32  # PackNet packs five times by 2


class InferenceError(ValueError):
    """Some images could not be read; the others were written. `.written`:
    the files written, `.failed`: [(image path, reason)]."""

    def __init__(self, written, failed):
        names = "; ".join(f"{p} ({why})" for p, why in failed)
        super().__init__(f"could not read {len(failed)} image(s), the others were written: "
                         f"{names}")
        self.written, self.failed = written, failed


def _model_class(name, path, trust=False):
    if not isinstance(name, str) or not name:
        raise ValueError(f"load_depth_net: {path}: config['model'] must be a class name, "
                         f"got {name!r}")
    if ":" in name:
        if not trust:  # importing a module named by a file runs that module's code
            raise ValueError(f"load_depth_net: {path}: model {name!r} is defined outside "
                             f"packnet.models and importing it runs code; only if you trust the "
                             f"checkpoint, load it with --trust-checkpoint (trust=True)")
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"load_depth_net: {path}: cannot find model {name!r} ({e})") from None
    else:
        cls = getattr(models, name, None)
        if cls is None:
            raise ValueError(f"load_depth_net: {path}: unknown model {name!r}; packnet.models "
                             f"has {', '.join(models.__all__)} (or give 'module:Class')")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"load_depth_net: {path}: {name!r} is not an nn.Module class")
    return cls


def load_depth_net(checkpoint_path, map_location="cpu", trust=False):
    """Build config["model"](**config.get("model_kwargs", {})) and load
    checkpoint["model"]["depth_net"] into it (a PackNet-SfM release file:
    see packnet.release); returns the net in eval mode.

    The file is read with packnet.checkpoint.load_checkpoint: torch.load with
    weights_only=True, so it cannot run code; a file that needs the full
    unpickler, or a config["model"] of the form "module:Class" (importing
    runs code), is refused with a ValueError unless trust=True. Every error
    names the file.
    """
    from .checkpoint import load_checkpoint
    path = os.fspath(checkpoint_path)
    ckpt = load_checkpoint(path, map_location=map_location, trust=trust, require=())
    return depth_net_from_checkpoint(ckpt, path, trust=trust)


def depth_net_from_checkpoint(ckpt, path="<checkpoint>", trust=False):
    """The depth network of an already loaded checkpoint dict (eval mode):
    a packnet checkpoint or a PackNet-SfM release."""
    from .release import checkpoint_format, release_depth_net
    if checkpoint_format(ckpt, path) == "release":
        return release_depth_net(ckpt, path)
    if not isinstance(ckpt["model"], dict) or "depth_net" not in ckpt["model"]:
        raise ValueError(f"load_depth_net: {path}: checkpoint['model'] has no 'depth_net' "
                         f"state_dict")
    config = ckpt["config"]
    if not isinstance(config, dict):
        raise ValueError(f"load_depth_net: {path}: checkpoint['config'] is not a mapping")
    cls = _model_class(config.get("model"), path, trust=trust)
    kwargs = config.get("model_kwargs") or {}
    try:
        net = cls(**kwargs)
        net.load_state_dict(ckpt["model"]["depth_net"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"load_depth_net: {path}: the depth network "
                         f"{config.get('model')}({kwargs}) does not fit the checkpoint "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") \
            from None
    return net.eval()


def pose_net_from_checkpoint(ckpt, path="<checkpoint>"):
    """The pose network of an already loaded training checkpoint (eval mode),
    or None when the checkpoint has none (an exported depth-only file). A
    PackNet-SfM release: its PoseNet, or None when it has none or another
    pose network (packnet.release.release_pose_net)."""
    from .models import PoseNet
    from .release import is_release, release_pose_net
    if is_release(ckpt):
        return release_pose_net(ckpt, path, required=False)
    model = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(model, dict) or "pose_net" not in model:
        return None
    kwargs = (ckpt.get("config") or {}).get("pose_kwargs") or {}
    try:
        net = PoseNet(nb_ref_imgs=2, **kwargs)
        net.load_state_dict(model["pose_net"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"pose network: {path}: PoseNet({kwargs}) does not fit the checkpoint "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") \
            from None
    return net.eval()


def list_images(paths):
    """A file, a directory (its image files, sorted, not recursive) or a list
    of either -> list of image paths. Raises FileNotFoundError naming the path."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p)
                           if f.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(p, f)))
            if not found:
                raise FileNotFoundError(f"infer: no {' '.join(IMAGE_EXTENSIONS)} images in "
                                        f"directory {p}")
            out.extend(found)
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise FileNotFoundError(f"infer: no such image file or directory: {p}")
    return out


def load_image(path):
    """Image file -> float32 [3,H,W] in [0,1] (grey is repeated, alpha dropped,
    16-bit grey scaled to 8 bits as the data loaders do). Pillow reads every
    IMAGE_EXTENSIONS format; without it only PNG (built-in reader)."""
    path = os.fspath(path)
    try:
        img = _decode_rgb(path, use_pil=_have_pillow())     # the data loaders' decoder
    except FileNotFoundError:
        raise FileNotFoundError(f"infer: image not found: {path}") from None
    except Exception as e:  # noqa: BLE001 - PIL / the PNG reader raise various types
        raise ValueError(f"infer: cannot read image {path}: {e}") from None
    return torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1) / 255.0


def _network_size(H, W, size):
    if size is not None:
        h, w = (int(s) for s in size)
        if h % DIVISOR or w % DIVISOR or h < DIVISOR or w < DIVISOR:
            raise ValueError(f"infer: size must be positive multiples of {DIVISOR}, got {size}")
        return h, w
    # nearest multiple of 32 (halves round up), at least 32
    return (max(DIVISOR, int(H / DIVISOR + 0.5) * DIVISOR),
            max(DIVISOR, int(W / DIVISOR + 0.5) * DIVISOR))


def _warn(message):
    import sys
    print(f"infer: {message}", file=sys.stderr)


def infer(paths, checkpoint_or_model, out_dir, size=None, device="cpu", trust=False, log=_warn):
    """Predict depth for each image; returns the written files
    [<name>_depth.png, <name>_depth.npy, ...] in input order.

    paths: image file, directory or list of them. checkpoint_or_model: a
    checkpoint path (see load_depth_net; trust as there) or an nn.Module
    returning inverse depth [B,1,h,w] in eval mode. size: (H, W) for the
    network (multiples of 32) or None for each image's size rounded to the
    nearest multiple of 32. The inverse depth is resized back to the image's
    size (bilinear) before it becomes depth (1 / inverse depth: metric if the
    net was trained with the velocity loss, else up to scale).

    An image that cannot be read is skipped (log(message) names it) and the
    rest are written; then InferenceError lists what failed (`.written` has
    what was written).
    """
    if size is not None:
        _network_size(DIVISOR, DIVISOR, size)  # check it before any work
    files = list_images(paths)
    if isinstance(checkpoint_or_model, nn.Module):
        net = checkpoint_or_model
    else:
        net = load_depth_net(checkpoint_or_model, trust=trust)
    device = torch.device(device)
    was_training = net.training
    net.eval().to(device)
    os.makedirs(out_dir, exist_ok=True)

    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    written, failed = [], []
    try:
        with torch.no_grad():
            for f, stem in zip(files, stems):
                if stems.count(stem) > 1:  # a.png and a.jpg: keep both apart
                    stem = f"{stem}_{os.path.splitext(f)[1][1:].lower()}"
                try:
                    rgb = load_image(f)
                except (ValueError, OSError) as e:
                    failed.append((f, str(e).replace(f"infer: cannot read image {f}: ", "")))
                    log(f"skipping {f}: {failed[-1][1]}")
                    continue
                H, W = rgb.shape[-2:]
                x = rgb[None].to(device)
                h, w = _network_size(H, W, size)
                if (h, w) != (H, W):
                    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                                      antialias=h < H or w < W)
                inv = net(x)
                if isinstance(inv, (list, tuple)):
                    inv = inv[0]
                inv = inv.float()
                if inv.shape[-2:] != (H, W):
                    inv = F.interpolate(inv, size=(H, W), mode="bilinear", align_corners=False)
                depth = inv2depth(inv)[0, 0].cpu()
                png = os.path.join(out_dir, f"{stem}_depth.png")
                npy = os.path.join(out_dir, f"{stem}_depth.npy")
                save_png(png, colorize_depth(inv[0, 0].cpu()))
                np.save(npy, depth.numpy().astype(np.float32))
                written += [png, npy]
    finally:
        net.train(was_training)
    if failed:
        raise InferenceError(written, failed)
    return written
