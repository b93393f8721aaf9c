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
from .image import IMAGE_EXTS, read_rgb8, write_image
from .visualize import colorize_depth

__all__ = ["IMAGE_EXTENSIONS", "InferenceError", "load_depth_net", "depth_net_from_checkpoint",
           "pose_net_from_checkpoint", "load_image", "list_images", "output_stems", "infer"]

IMAGE_EXTENSIONS = IMAGE_EXTS   # packnet.image's (the data loaders'): .png .jpg .jpeg .bmp .ppm
DIVISOR = 32  # PackNet packs five times by 2


class InferenceError(ValueError):
    """Some images could not be read or processed; the others were written.
    `.written`: the files written, `.failed`: [(image path, reason)]."""

    def __init__(self, written, failed):
        names = "; ".join(f"{p} ({why})" for p, why in failed)
        super().__init__(f"{len(failed)} image(s) failed, the others were written: {names}")
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


OUTPUT_SUFFIX = "_depth.png"   # what infer writes per image (and _depth.npy)


def list_images(paths, out_dir=None):
    """A file, a directory (its image files, sorted, not recursive) or a list
    of either -> list of image paths. Raises FileNotFoundError naming the path.
    out_dir: the output directory; in a listed directory that is out_dir, the
    files named *_depth.png are earlier outputs and are left out."""
    return _list_images(paths, out_dir)[0]


def _same_dir(a, b):
    return b is not None and os.path.isdir(b) and os.path.samefile(a, b)


def _list_images(paths, out_dir):
    """(image paths, [(directory, outputs left out)]); see list_images."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out, left_out = [], []
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p)
                           if f.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(p, f)))
            if _same_dir(p, out_dir):  # writing in place: don't take our outputs for photos
                ours = [f for f in found if f.lower().endswith(OUTPUT_SUFFIX)]
                found = [f for f in found if f not in ours]
                if ours:
                    left_out.append((p, len(ours)))
                if ours and not found:
                    raise FileNotFoundError(
                        f"infer: directory {p} has no images other than {len(ours)} earlier "
                        f"output(s) of infer (*{OUTPUT_SUFFIX}, left out since --out is this "
                        f"directory)")
            if not found:
                raise FileNotFoundError(f"infer: no {' '.join(IMAGE_EXTENSIONS)} images in "
                                        f"directory {p}")
            out.extend(found)
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise FileNotFoundError(f"infer: no such image file or directory: {p}")
    unique = {}  # one file named twice (a.png ./a.png) is read once
    for f in out:
        unique.setdefault(os.path.realpath(f), f)
    return list(unique.values()), left_out


def output_stems(files, out_dir):
    """The output name of each input, <stem> -> <stem>_depth.png/.npy: the
    file's stem, or <stem>_<ext> when inputs share a stem (a.png, a.jpg ->
    a_png, a_jpg). Names are compared ignoring case (they are one file on
    macOS and Windows). Two inputs that would still write one output (a.png
    and a.PNG, dir1/a.png and dir2/a.png), or an input that an output would
    replace, raise ValueError naming both, before anything is written."""
    split = [os.path.splitext(os.path.basename(f)) for f in files]
    shared = {}
    for stem, _ in split:
        shared[stem.casefold()] = shared.get(stem.casefold(), 0) + 1
    stems = [stem if shared[stem.casefold()] == 1 else f"{stem}_{ext[1:].lower()}"
             for stem, ext in split]
    first = {}
    for f, stem in zip(files, stems):
        if stem.casefold() in first:
            raise ValueError(f"infer: {first[stem.casefold()]} and {f} would both be written "
                             f"as {os.path.join(out_dir, stem + OUTPUT_SUFFIX)} (and .npy); "
                             f"rename one of them, or run infer on them separately")
        first[stem.casefold()] = f
    inputs = {os.path.realpath(f): f for f in files}
    for f, stem in zip(files, stems):
        target = os.path.realpath(os.path.join(out_dir, stem + OUTPUT_SUFFIX))
        if target in inputs:
            raise ValueError(f"infer: the output of {f} would replace the input "
                             f"{inputs[target]}; give another --out directory")
    return stems


def load_image(path):
    """Image file (any IMAGE_EXTENSIONS format) -> float32 [3,H,W] in [0,1],
    decoded as the data loaders do (packnet.image.read_rgb8: grey is repeated,
    alpha dropped, 16-bit grey scaled to 8 bits)."""
    path = os.fspath(path)
    try:
        img = read_rgb8(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"infer: image not found: {path}") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises various types
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

    Output names: see output_stems (clashing outputs are refused before any
    work). In a listed directory that is also out_dir, files named
    *_depth.png are earlier outputs and are left out (log says how many).
    An image that cannot be read or processed (any error: decoding, the
    network, memory, writing) is skipped (log(message) names it and why) and
    the rest are written; then InferenceError lists what failed (`.written`
    has what was written).
    """
    if size is not None:
        _network_size(DIVISOR, DIVISOR, size)  # check it before any work
    files, left_out = _list_images(paths, out_dir)
    stems = output_stems(files, out_dir)      # refuses clashing outputs before any work
    if isinstance(checkpoint_or_model, nn.Module):
        net = checkpoint_or_model
    else:
        net = load_depth_net(checkpoint_or_model, trust=trust)
    for d, n in left_out:
        log(f"left out {n} file(s) named *{OUTPUT_SUFFIX} in {d}: earlier outputs of infer "
            f"(--out is that directory)")
    device = torch.device(device)
    was_training = net.training
    net.eval().to(device)
    os.makedirs(out_dir, exist_ok=True)

    written, failed = [], []
    try:
        with torch.no_grad():
            for f, stem in zip(files, stems):
                try:
                    rgb = load_image(f)
                    written += _write_depth(net, rgb, os.path.join(out_dir, stem), size, device)
                except Exception as e:  # noqa: BLE001 - one image never stops the others
                    failed.append((f, _reason(f, e)))
                    log(f"skipping {f}: {failed[-1][1]}")
    finally:
        net.train(was_training)
    if failed:
        raise InferenceError(written, failed)
    return written


def _reason(path, error):
    """Why an image failed, in one line: the reader's message, or the error's
    type and first line (a network or memory error is not a reading problem)."""
    text = str(error).replace(f"infer: cannot read image {path}: ", "").strip()
    text = text.splitlines()[0] if text else ""
    if not isinstance(error, (ValueError, OSError)):
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text or type(error).__name__


def _write_depth(net, rgb, prefix, size, device):
    """Depth of one image [3,H,W] -> <prefix>_depth.png and .npy; both or
    neither (a half-written pair is removed)."""
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
    inv = inv[0, 0].cpu()
    picture, depth = colorize_depth(inv), inv2depth(inv).numpy().astype(np.float32)
    png, npy = prefix + OUTPUT_SUFFIX, prefix + "_depth.npy"
    try:
        write_image(png, picture)
        np.save(npy, depth)
    except BaseException:  # a write failed: neither file is this run's result
        for p in (png, npy):
            if os.path.exists(p):
                os.remove(p)
        raise
    return [png, npy]
