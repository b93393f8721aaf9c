"""Where a number came from: the code, the libraries, the backend, the
settings and the data, for summary.json and `packnet eval --json`.

provenance(cfg, dataset, device) -> a JSON-ready dict; every field is
best-effort (None when unknown, e.g. no git checkout), never an error.
"""
import dataclasses
import os
import platform
import subprocess

import torch

__all__ = ["provenance", "git_revision", "describe_data"]

_HERE = os.path.dirname(os.path.abspath(__file__))


def git_revision(path=_HERE):
    """The commit of the checkout holding `path`, "+dirty" when it has
    uncommitted changes; None outside a git checkout or without git."""
    def git(*args):
        return subprocess.run(["git", "-C", path, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        rev = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def describe_data(dataset):
    """A data set's class, size and the arguments that define it."""
    if dataset is None:
        return None
    out = {"class": type(dataset).__name__}
    try:
        out["samples"] = len(dataset)
    except TypeError:
        pass
    for name in ("split", "num_sequences", "frames_per_sequence", "seed", "context", "root",
                 "fps"):
        v = getattr(dataset, name, None)
        if v is not None:
            out[name] = list(v) if isinstance(v, tuple) else v
    if hasattr(dataset, "H") and hasattr(dataset, "W"):
        out["size"] = [dataset.H, dataset.W]
    return out


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f", {os.cpu_count()} logical cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _backend(requested, device):
    """The backend packops picks for a float32 loss op on `device` when
    `requested` is asked for ("auto" resolves to cpu, cuda, ...)."""
    import packops
    try:
        with packops.use_backend(requested):
            return packops.backend_for("photometric_loss", torch.empty(0, device=device))
    except (RuntimeError, ValueError):
        return None


def provenance(cfg, dataset=None, device=None, backend=None):
    """{git, torch, triton, python, device, backend, backend_requested, seed,
    config, data}; backend: the packops backend requested while the numbers
    were made (default: the one cfg's training requests, cfg.requested_backend())."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    device = torch.device(device) if device is not None else cfg.resolved_device()
    if backend is None:
        try:
            backend = cfg.requested_backend()
        except ValueError:
            backend = None
    return {
        "git": git_revision(),
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "device": f"{device} ({_device_name(device)})",
        "backend": None if backend is None else _backend(backend, device),
        "backend_requested": backend,
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "data": describe_data(dataset),
    }
