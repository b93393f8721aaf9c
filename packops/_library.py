"""Registration of the fused ops, written once for every op and backend.

A fused op is a pair of kernel ops, a forward and a backward, each with one
schema for every backend:

  packops::<name>          the C++ kernels (cpu and cuda), defined in
                           csrc/ops/<op>.cpp when packops._C is built
  packops::<name>_triton   the Triton kernels: the functions of the same name
                           in packops/_triton/<module>.py, registered here
                           with the same schema string

`fused_op(...)` registers, for both variants, the fake (meta) implementations
that torch.compile and opcheck need and the autograd formula (the forward
saves what the backward op reads; the backward op returns one gradient per
differentiable input, an empty tensor where none is needed). The backward
ops themselves are not differentiable: a second derivative through them
raises (use the reference backend for double backward).

`kernel(name, backend)` is the one place that maps a backend to its op.
SPECS is the registry of every fused op, filled by `fused_op` as the op
modules are imported: tests/test_library.py reads it to check that the C++
schemas equal the ones here and that no C++ op is missing from it, and the op
contract (tests/contract.py) to call each kernel op.
"""
import dataclasses
import importlib

import torch

from . import _ext

_NS = "packops"


@dataclasses.dataclass(frozen=True)
class FusedOp:
    """What the registration needs to know about one fused op.

    fwd, bwd: schemas, "name(args) -> returns" (the C++ op's exact schema);
    saved: forward arguments the backward op reads, in its order, after grad;
    saved_outputs: indices of forward outputs it reads next (statistics the
      forward computed, like group_norm_elu's mean and rstd);
    params: forward arguments passed on to the backward op after those;
    grads: differentiable forward arguments, in the order of the backward
      op's outputs; it takes one need_<arg> flag for each, in that order;
    triton: module under packops._triton with functions named like the ops.
    """
    fwd: str
    bwd: str
    saved: tuple
    params: tuple
    grads: tuple
    triton: str
    saved_outputs: tuple = ()

    @property
    def fwd_name(self):
        return self.fwd.split("(", 1)[0]

    @property
    def bwd_name(self):
        return self.bwd.split("(", 1)[0]


def _arg_names(schema):
    args = schema.split("->")[0].split("(", 1)[1].rsplit(")", 1)[0]
    return [a.strip().split(" ")[-1] for a in args.split(",") if a.strip()]


_kernels = {}
SPECS = {}  # forward kernel op name ("ssim_fwd") -> its FusedOp; filled by fused_op


def kernel(name, backend):
    """torch.ops.packops.<name>.default for the cpu/cuda backends,
    <name>_triton.default for triton (looked up once: an OpOverload is the
    cheapest way to call a registered op from Python)."""
    key = (name, backend == "triton")
    op = _kernels.get(key)
    if op is None:
        op = _kernels[key] = getattr(torch.ops.packops,
                                     name + ("_triton" if backend == "triton" else "")).default
    return op


def _triton_impl(module, name):
    # packops._triton imports triton: only when a Triton kernel first runs
    def impl(*args):
        return getattr(importlib.import_module(f"packops._triton.{module}"), name)(*args)
    impl.__name__ = name
    return impl


def _fake_grads(spec, inputs, needs):
    # An unneeded gradient is an empty tensor of the input's dtype and device.
    out = []
    for arg, need in zip(spec.grads, needs):
        t = inputs[arg]
        out.append(t.new_empty(t.shape) if need else t.new_empty(0))
    return tuple(out)


class _Autograd:
    """setup_context and backward of one variant of a fused op."""

    def __init__(self, spec, bwd_op):
        self.spec, self.bwd_op = spec, bwd_op
        self.fwd_args = _arg_names(spec.fwd)
        self.grad_pos = [self.fwd_args.index(a) for a in spec.grads]

    def setup_context(self, ctx, inputs, output):
        named = dict(zip(self.fwd_args, inputs))
        outputs = [output[i] for i in self.spec.saved_outputs]
        ctx.save_for_backward(*[named[a] for a in self.spec.saved], *outputs)  # None is allowed
        ctx.params = [named[a] for a in self.spec.params]

    def backward(self, ctx, grad, *unused_grads):  # later outputs (masks, statistics): none
        needs = [ctx.needs_input_grad[i] for i in self.grad_pos]
        grads = self.bwd_op(grad, *ctx.saved_tensors, *ctx.params, *needs)
        grads = grads if isinstance(grads, tuple) else (grads,)
        out = [None] * len(self.fwd_args)
        for i, g, need in zip(self.grad_pos, grads, needs):
            out[i] = g if need else None
        return tuple(out)


def _no_double_backward(fwd_name):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"packops: a second derivative through the fused op {fwd_name} was requested "
            f"(create_graph=True, then a gradient of the gradient); the fused backends do "
            f"not implement it. Use packops.use_backend('reference') for double backward.")
    return backward


def fused_op(spec, fwd_fake, bwd_fake=None):
    """Registers the Triton variant of `spec`, then fakes and autograd for every
    variant that exists (the C++ one only when packops._C is loaded).

    fwd_fake(*forward args) -> outputs of the forward's shapes;
    bwd_fake(*backward args), default: per name in `spec.grads`, an empty
    tensor or one like that argument of the backward op (give one when a
    gradient's input is not an argument of the backward, like pack3d's bias).
    """
    SPECS[spec.fwd_name] = spec
    for name, schema in ((spec.fwd_name, spec.fwd), (spec.bwd_name, spec.bwd)):
        torch.library.custom_op(f"{_NS}::{name}_triton", _triton_impl(spec.triton, name),
                                mutates_args=(), schema="(" + schema.split("(", 1)[1])
    bwd_args = _arg_names(spec.bwd)

    def default_bwd_fake(*args):
        named = dict(zip(bwd_args, args))
        needs = [named["need_" + a] for a in spec.grads]
        return _fake_grads(spec, named, needs)

    variants = ["_triton"] + ([""] if _ext.has_cpu_ext() else [])
    for suffix in variants:
        fwd, bwd = f"{_NS}::{spec.fwd_name}{suffix}", f"{_NS}::{spec.bwd_name}{suffix}"
        torch.library.register_fake(fwd, fwd_fake)
        torch.library.register_fake(bwd, bwd_fake or default_bwd_fake)
        if suffix == "":  # the C++ kernels: the same formula in C++ (csrc/autograd.cpp)
            _register_cpp_autograd(spec)
            continue
        grads = _Autograd(spec, getattr(torch.ops.packops, spec.bwd_name + suffix).default)
        torch.library.register_autograd(fwd, grads.backward, setup_context=grads.setup_context)
        torch.library.register_autograd(bwd, _no_double_backward(spec.fwd_name),
                                        setup_context=lambda ctx, inputs, output: None)
    return spec


def _register_cpp_autograd(spec):
    """The autograd of the C++ kernel ops from `spec`: csrc/autograd.cpp's
    generic forward kernel and backward node (no Python per call), given the
    spec's names as argument positions."""
    args = _arg_names(spec.fwd)
    torch.ops.packops._register_autograd(
        spec.fwd_name, spec.bwd_name, [args.index(a) for a in spec.saved],
        list(spec.saved_outputs), [args.index(a) for a in spec.params],
        [args.index(a) for a in spec.grads])
