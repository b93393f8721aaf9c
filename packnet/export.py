"""ONNX export of a depth network through packops' reference backend.

The reference backend computes the packing layers with plain PyTorch ops
(pixel (un)shuffle, conv3d, conv2d), which the TorchScript-based exporter
traces into standard ONNX; the fused backends are custom ops ONNX has no
kernel for. The graph has a fixed input size: the (un)packing reshapes are
traced with the sizes of the example input.
"""
import importlib.util
import os
import warnings

import torch

import packops

__all__ = ["export_onnx", "ExportError"]

INSTALL_HINT = "pip install onnx onnxruntime"


class ExportError(RuntimeError):
    """The export cannot run here (a package is missing) or its check failed."""


def _have(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # sys.modules[module] = None, or no __spec__
        return False


def _onnx_export(net, example, path, opset):
    kwargs = dict(opset_version=opset, input_names=["rgb"], output_names=["inv_depth"],
                  do_constant_folding=True)
    try:
        # dynamo=False: the TorchScript exporter needs only the onnx package; the
        # dynamo exporter (default in recent torch) also needs onnxscript.
        torch.onnx.export(net, example, path, dynamo=False, **kwargs)
    except TypeError as e:
        if "dynamo" not in str(e):
            raise
        torch.onnx.export(net, example, path, **kwargs)  # torch without the flag


def export_onnx(depth_net, path, size=(192, 640), opset=17, verify=True, seed=0):
    """Export `depth_net` (eval mode, reference backend) for a [1,3,H,W] input
    to `path`: input "rgb", output "inv_depth" [1,1,H,W].

    If onnxruntime is installed and verify is true, runs the file on a random
    image and returns max |onnx - torch| (raising if it is 1e-4 or more);
    otherwise returns None. Raises ExportError (a RuntimeError) naming what to
    install when the exporter's dependencies are missing, before any work.
    """
    H, W = (int(s) for s in size)
    if H % 32 or W % 32 or H < 32 or W < 32:
        raise ValueError(f"export_onnx: size must be positive multiples of 32, got {size}")
    if not _have("onnx"):
        raise ExportError(f"export_onnx: the ONNX exporter needs the onnx package, which is not "
                          f"installed; {INSTALL_HINT}")
    was_training = depth_net.training
    device = next(iter(depth_net.parameters()), torch.empty(0)).device
    gen = torch.Generator().manual_seed(seed)
    example = (torch.rand(1, 3, H, W, generator=gen).to(device),)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    depth_net.eval()
    try:
        with packops.use_backend("reference"), torch.no_grad(), warnings.catch_warnings():
            # shape checks in the layers trigger TracerWarnings: sizes are fixed anyway
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding")
            # we ask for the TorchScript exporter on purpose (see _onnx_export)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                _onnx_export(depth_net, example, path, opset)
            except ImportError as e:
                raise ExportError(f"export_onnx: the ONNX exporter needs a missing package "
                                  f"({e}); {INSTALL_HINT}") from None
            except Exception as e:  # noqa: BLE001 - torch.onnx's OnnxExporterError
                if "not installed" not in str(e):
                    raise
                raise ExportError(f"export_onnx: the ONNX exporter needs a missing package "
                                  f"({e}); {INSTALL_HINT}") from None
            expected = depth_net(*example)
    finally:
        depth_net.train(was_training)
    if not verify:
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"rgb": example[0].cpu().numpy()})[0]
    diff = float(abs(torch.from_numpy(got) - expected.float().cpu()).max())
    if not diff < 1e-4:
        raise ExportError(f"export_onnx: ONNX output differs from torch by {diff:.3e} "
                           f"(max abs) on a random input; file written to {path}")
    return diff
