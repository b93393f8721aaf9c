"""The contract every packops op is tested against (like torchvision's RoIOpTester).

An op's test class subclasses OpContract and fills in what is particular to
the op: how to make its inputs, which of them are differentiable, its
reference, the kernel ops it registers and its bad inputs. The tests here then
run for every backend present (tests/conftest.py):

  accuracy     each fused backend against the float64 reference, float32 and
               float64 on awkward shapes, fp16/bf16 on one shape (error at most
               2x the same-precision reference's, plus a small floor, plus the
               a-priori rounding floor of long sums: tests/_assert.py)
  layouts      non-contiguous and channels-last inputs
  gradients    to one input at a time; float64 gradcheck; no second derivative
  registration torch.library.opcheck of every kernel op, torch.compile(fullgraph)
  edge cases   empty batch, NaN in -> NaN out where the reference has it
  bad input    a clear error naming the argument, on every backend, and the
               compiled kernel refuses the same input (the checks agree)
  dtypes       the C++ kernel ops serve exactly the dtypes _dispatch.DTYPES
               gives their backend (the policies in csrc/ and in Python agree)
  autocast     under torch.autocast a layer op runs in the autocast dtype
               (AUTOCAST = True); a loss op declares AUTOCAST = False and runs
               in its inputs' dtype

The reference is checked against float64 or known answers in the op's own
file, never against itself. tests/conftest.py parametrizes the fixtures
`shape`, `which`, `layout` and `bad` from the class attributes below
(SHAPES, GRADS, LAYOUTS, BAD).
"""
import pytest
import torch

import packops

from _assert import assert_as_accurate, assert_close, rounding_floor
from conftest import BACKEND_DEVICE, FUSED, INTERPRETED

LOW = (torch.float16, torch.bfloat16)
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
CPP = [p for p in FUSED if p.values[0] in ("cpu", "cuda")]  # packops._C's kernels


def _serves(backend, call):
    """Whether call() runs; False when the C++ device policy refuses its dtype
    (CpuDevice / CudaDevice::dtype's message); any other error is raised."""
    try:
        call()
    except RuntimeError as e:
        if f"the {backend} backend supports" not in str(e):
            raise
        return False
    return True


class OpContract:
    # ----------------------------------------------------- to fill in
    fn = None                 # the public op, e.g. packops.ssim
    reference = None          # its reference, e.g. packops.photometric.ssim_reference
    SHAPES = {}               # id -> shape, passed to make()
    LOW_SHAPE = None          # the fp16/bf16 case (a key of SHAPES' kind)
    GRADS = ()                # names of the differentiable arguments, by position in NAMES
    NAMES = ()                # names of make()'s arguments, in order
    LAYOUTS = ("channels_last", "strided")
    KERNELS = ()              # kernel forward ops registered for this op ("ssim_fwd")
    FLOAT32_SHAPES = None     # ids run in float32 by the interpreted triton (default: all)
    GRADCHECK_SHAPE = None    # small shapes for gradcheck and the second-derivative test
    OPCHECK_SHAPE = None      # for opcheck, compile, empty batch and NaN
    BATCHED = (0,)            # positions of the arguments that carry the batch dimension
    NEEDS_FOR_OPCHECK = None  # tuples of requires_grad flags over GRADS (default: all, each alone)

    BAD = []                  # [(id, args, kwargs, exception, regex)]: inputs the op must refuse
    KWARGS = {}               # keyword arguments of every call (a mode, e.g. padding_mode)
    AUTOCAST = True           # under torch.autocast the op runs in the autocast dtype, like
                              # the convolution it stands for (a layer op, decorated with
                              # _dispatch.autocast_to_lower_precision); False: it runs in its
                              # inputs' dtype, autocast or not (a loss, _dispatch.autocast_off)
    MULTILINEAR = False       # every output and gradient element is a sum of products of
                              # input elements (a convolution): floors() derives the
                              # rounding floor of each from the reference

    def make(self, shape, seed=0):
        """float64 CPU arguments for `shape`: tensors, None or Python numbers."""
        raise NotImplementedError

    def kernel_args(self, args, kwargs):
        """(name of the forward kernel op, its arguments) for public arguments,
        or None where the op has no kernel of its own (pack_conv)."""
        return None

    # ------------------------------------------------------- helpers
    def cast(self, args, dtype, device):
        """The arguments in `dtype` on `device` (reproject keeps its geometry in float32)."""
        return [a.to(device=device, dtype=dtype) if torch.is_tensor(a) else a for a in args]

    def diff_positions(self, args):
        return [i for i, n in enumerate(self.NAMES) if n in self.GRADS and torch.is_tensor(args[i])]

    def op(self, *args):
        return type(self).fn(*args, **self.KWARGS)

    def call(self, backend, args):
        with packops.use_backend(backend):
            return self.op(*args)

    def ref(self, args):
        return type(self).reference(*args, **self.KWARGS)

    def check_output(self, dtype, what, actual, same, exact, floor=None):
        """actual: the op's output in a run of `dtype`; same: the reference's in
        the same precision; exact: the float64 reference's; floor: per-element
        rounding floors (floors()) or None."""
        assert_as_accurate(actual, same, exact, what, floor)

    def check_grad(self, name, dtype, what, actual, same, exact, floor=None):
        """The gradient of argument `name`, as check_output."""
        assert_as_accurate(actual, same, exact, what, floor)

    def floors(self, ex, pos, grad, dtype):
        """Per-element rounding floors (tests/_assert.py) for the output and the
        gradient of each argument in `pos`, or None (then only the 2x-reference
        rule applies). ex: float64 arguments; grad: the output's gradient.

        MULTILINEAR ops: the float64 reference on |arguments|, back-propagating
        |grad|, gives each element's sum of |terms| (a sum of products of
        non-negative factors is the sum of its terms' absolute values), and on
        ones, back-propagating ones, each element's number of terms."""
        if not self.MULTILINEAR:
            return None

        def evaluate(f):
            args = self._with_grad([f(a) if torch.is_tensor(a) else a for a in ex], pos)
            out = self.ref(args)
            grads = torch.autograd.grad(out, [args[i] for i in pos], f(grad))
            return [out.detach(), *grads]

        return [rounding_floor(s, n, dtype)
                for s, n in zip(evaluate(torch.abs), evaluate(torch.ones_like))]

    def _with_grad(self, args, positions):
        return [a.detach().requires_grad_() if i in positions else a for i, a in enumerate(args)]

    def _accuracy(self, backend, device, args64, dtype, seed=1):
        pos = self.diff_positions(args64)
        ins = self._with_grad(self.cast(args64, dtype, device), pos)
        out = self.call(backend, ins)
        # the exact result of the inputs as the op sees them (rounded to dtype)
        ex = self._with_grad([a.detach().double() if torch.is_tensor(a) else a for a in ins], pos)
        exact, same = self.ref(ex), self.ref(ins)
        assert out.dtype == same.dtype and out.shape == exact.shape
        # the gradient as the op sees it (rounded to dtype)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed),
                           dtype=torch.float64).to(out.dtype).to(device)
        floors = self.floors(ex, pos, grad.double(), dtype) or [None] * (len(pos) + 1)
        self.check_output(dtype, f"{backend} forward {dtype}", out, same, exact, floors[0])
        got = torch.autograd.grad(out, [ins[i] for i in pos], grad)
        want = torch.autograd.grad(exact, [ex[i] for i in pos], grad.double())
        same_g = torch.autograd.grad(same, [ins[i] for i in pos], grad)
        for i, a, s, e, f in zip(pos, got, same_g, want, floors[1:]):
            assert a.dtype == ins[i].dtype and a.shape == ins[i].shape
            self.check_grad(self.NAMES[i], dtype, f"{backend} grad {self.NAMES[i]} {dtype}",
                            a, s, e, f)

    # ---------------------------------------------------- the contract
    @pytest.mark.parametrize("backend,device", FUSED)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
    def test_matches_reference(self, backend, device, shape, dtype):
        key, value = shape
        if dtype == torch.float32 and self.FLOAT32_SHAPES is not None and \
                key not in self.FLOAT32_SHAPES and backend == "triton" and INTERPRETED:
            pytest.skip("interpreter time: float32 triton runs FLOAT32_SHAPES only")
        if dtype not in packops._dispatch.DTYPES[backend]:
            pytest.skip(f"{backend} does not serve {dtype}")
        self._accuracy(backend, device, self.make(value), dtype)

    @pytest.mark.parametrize("backend,device", FUSED)
    @pytest.mark.parametrize("dtype", LOW, ids=str)
    def test_low_precision(self, backend, device, dtype):
        if dtype not in packops._dispatch.DTYPES[backend]:
            pytest.skip(f"{backend} does not serve {dtype}")
        self._accuracy(backend, device, self.make(self.LOW_SHAPE, seed=2), dtype)

    @pytest.mark.parametrize("backend,device", FUSED)
    def test_noncontiguous(self, backend, device, layout):
        args = self.make(self.LOW_SHAPE, seed=3)
        pos = self.diff_positions(args)
        laid = []
        for i, a in enumerate(args):
            if torch.is_tensor(a) and a.dim() == 4 and i in pos:
                if layout == "channels_last":
                    a = a.contiguous(memory_format=torch.channels_last)
                elif layout == "transposed":
                    a = a.transpose(2, 3).contiguous().transpose(2, 3)
                else:  # a strided view (every other element of a larger tensor)
                    a = torch.stack([a, a], -1)[..., 0]
            laid.append(a)
        assert any(torch.is_tensor(a) and not a.is_contiguous() for a in laid)
        ins = self._with_grad([a.to(device) if torch.is_tensor(a) else a for a in laid], pos)
        out = self.call(backend, ins)
        ex = self._with_grad([a.to(device).contiguous() if torch.is_tensor(a) else a
                              for a in args], pos)
        want = self.ref(ex)
        assert_close(out, want, 1e-10, f"{backend} {layout} forward")
        got = torch.autograd.grad(out.square().sum(), [ins[i] for i in pos])
        wanted = torch.autograd.grad(want.square().sum(), [ex[i] for i in pos])
        for i, a, e in zip(pos, got, wanted):
            assert_close(a, e, 1e-9 * max(1.0, float(e.abs().max())),
                         f"{backend} {layout} grad {self.NAMES[i]}")

    @pytest.mark.parametrize("backend,device", FUSED)
    def test_gradient_to_one_input(self, backend, device, which):
        args = [a.to(device) if torch.is_tensor(a) else a for a in self.make(self.LOW_SHAPE, 4)]
        i = self.NAMES.index(which)
        if not torch.is_tensor(args[i]):
            pytest.skip(f"{which} is not given in this case")
        args[i] = args[i].detach().requires_grad_()
        out = self.call(backend, args)
        (got,) = torch.autograd.grad(out.square().sum(), args[i])
        (want,) = torch.autograd.grad(self.ref(args).square().sum(), args[i])
        assert_close(got, want, 1e-9 * max(1.0, float(want.abs().max())), f"{backend} grad {which}")

    @pytest.mark.parametrize("backend,device", FUSED)
    def test_gradcheck(self, backend, device):
        args = [a.to(device) if torch.is_tensor(a) else a for a in self.make(self.GRADCHECK_SHAPE, 5)]
        pos = self.diff_positions(args)
        args = self._with_grad(args, pos)
        # the interpreter runs each launch in Python: fast mode (random projections)
        with packops.use_backend(backend):
            assert torch.autograd.gradcheck(self.op, tuple(args), eps=1e-6,
                                            atol=1e-6, fast_mode=backend == "triton")

    @pytest.mark.parametrize("backend,device", FUSED)
    def test_no_second_derivative(self, backend, device):
        args = [a.to(device) if torch.is_tensor(a) else a for a in self.make(self.GRADCHECK_SHAPE, 6)]
        pos = self.diff_positions(args)
        args = self._with_grad(args, pos)
        out = self.call(backend, args)
        (g,) = torch.autograd.grad(out.square().sum(), [args[pos[0]]], create_graph=True)
        with pytest.raises(RuntimeError, match="second derivative"):
            torch.autograd.grad(g.sum(), [args[p] for p in pos], allow_unused=True)

    @pytest.mark.parametrize("backend,device", FUSED)
    def test_opcheck(self, backend, device):
        if not self.KERNELS:
            pytest.skip("composed of other ops: no kernel op of its own")
        args = self.cast(self.make(self.OPCHECK_SHAPE, 7), torch.float32, device)
        pos = self.diff_positions(args)
        needs = self.NEEDS_FOR_OPCHECK or [tuple(True for _ in pos)] + [
            tuple(j == k for j in range(len(pos))) for k in range(len(pos))]
        for need in needs:
            ins = [a.detach().clone().requires_grad_(need[pos.index(i)]) if i in pos else a
                   for i, a in enumerate(args)]
            for name, kargs in self.opcheck_cases(ins):
                torch.library.opcheck(packops._library.kernel(name, backend), kargs)

    def opcheck_cases(self, args):
        """[(kernel op name, its arguments)] for opcheck, from float32 arguments."""
        name, kargs = self.kernel_args(args, {})
        return [(name, kargs)]

    @pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
    def test_compile_fullgraph(self, backend, device):
        torch._dynamo.reset()
        args = self.cast(self.make(self.OPCHECK_SHAPE, 8), torch.float32, device)
        pos = self.diff_positions(args)
        args = self._with_grad(args, pos)

        def step(*a):
            return self.op(*a).square().mean()

        with packops.use_backend(backend):
            compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
            loss = compiled(*args)
            got = torch.autograd.grad(loss, [args[i] for i in pos])
            eager = step(*args)
            want = torch.autograd.grad(eager, [args[i] for i in pos])
        assert_close(loss, eager, 1e-6 * max(1.0, float(eager.detach().abs())), "compiled loss")
        for a, b in zip(got, want):
            assert_close(a, b, 1e-5 * max(1.0, float(b.abs().max())), "compiled grad")

    @pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
    def test_empty_batch(self, backend, device):
        full = self.cast(self.make(self.OPCHECK_SHAPE, 9), torch.float32, device)
        args = [a[:0] if torch.is_tensor(a) and i in self.BATCHED else a
                for i, a in enumerate(full)]
        pos = self.diff_positions(args)
        args = self._with_grad(args, pos)
        out = self.call(backend, args)
        want_shape = (0,) + tuple(self.ref(full).shape[1:])
        assert tuple(out.shape) == want_shape
        grads = torch.autograd.grad(out.sum(), [args[i] for i in pos], allow_unused=True)
        for i, g in zip(pos, grads):
            assert g is None or (g.shape == args[i].shape and not g.abs().gt(0).any())

    @pytest.mark.parametrize("backend,device", FUSED)
    def test_nan_like_the_reference(self, backend, device):
        args = [a.to(device) if torch.is_tensor(a) else a for a in self.make(self.OPCHECK_SHAPE, 10)]
        args[0] = args[0].clone()
        args[0].view(-1)[args[0].numel() // 3] = float("nan")
        pos = self.diff_positions(args)
        args = self._with_grad(args, pos)
        out, want = self.call(backend, args), self.ref(args)
        assert torch.equal(torch.isnan(out), torch.isnan(want)), f"{backend} NaN pattern"
        assert torch.isnan(out).any()
        assert_close(out, want, 1e-10, f"{backend} with NaN")
        grads = torch.autograd.grad(out.nansum(), [args[i] for i in pos])  # must not crash
        assert all(g.shape == args[i].shape for i, g in zip(pos, grads))

    @pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
    def test_autocast(self, backend, device):
        """Under bf16 torch.autocast. AUTOCAST ops: a bf16 first argument beside
        float32 parameters (what autocast hands a layer) gives the op's result
        on every argument cast to bf16 by hand, and each argument's gradient in
        its own dtype. Other ops: the result and gradients outside autocast.
        (The call under autocast passes the arguments by name: the autocast
        wrappers find the tensors either way.)"""
        low = torch.bfloat16
        if self.AUTOCAST and low not in packops._dispatch.DTYPES[backend]:
            pytest.skip(f"{backend} does not serve {low}")
        args = self.cast(self.make(self.LOW_SHAPE, seed=11), torch.float32, device)
        if self.AUTOCAST:
            args[0] = args[0].to(low)
        pos = self.diff_positions(args)
        ins = self._with_grad(args, pos)
        with packops.use_backend(backend):
            with torch.autocast(device, dtype=low):
                out = type(self).fn(**dict(zip(self.NAMES, ins)), **self.KWARGS)
            if self.AUTOCAST:
                want = self.op(*[a.detach().to(low) if torch.is_tensor(a) else a for a in ins])
            else:
                want = self.op(*ins)
        assert out.dtype == want.dtype == (low if self.AUTOCAST else args[0].dtype)
        torch.testing.assert_close(out, want, rtol=0, atol=0, equal_nan=True)
        got = torch.autograd.grad(out.float().square().mean(), [ins[i] for i in pos])
        for i, g in zip(pos, got):
            assert g.dtype == ins[i].dtype and torch.isfinite(g).all(), self.NAMES[i]
        if not self.AUTOCAST:
            wanted = torch.autograd.grad(want.float().square().mean(), [ins[i] for i in pos])
            for i, g, w in zip(pos, got, wanted):
                torch.testing.assert_close(g, w, rtol=0, atol=0, msg=self.NAMES[i])

    def test_autocast_casts_only_inside_and_never_float64(self):
        """autocast never casts float64 (the op runs in float64, and the dtype
        check still refuses float64 beside float32); outside autocast nothing
        is cast (bf16 beside float32 is refused); compiled, the op follows the
        autocast state it runs under."""
        if not self.AUTOCAST:
            pytest.skip("runs in its inputs' dtype (AUTOCAST = False)")
        args = self.make(self.OPCHECK_SHAPE, seed=12)
        if not any(torch.is_tensor(a) for a in args[1:]):
            pytest.skip("one tensor argument: no dtypes to mix")
        floats = self.cast(args, torch.float32, "cpu")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert self.op(*args).dtype == torch.float64
            with pytest.raises(ValueError, match="same dtype"):
                self.op(args[0], *floats[1:])
        with pytest.raises(ValueError, match="same dtype"):
            self.op(floats[0].to(torch.bfloat16), *floats[1:])
        torch._dynamo.reset()
        compiled = torch.compile(self.op, fullgraph=True, backend="eager")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert compiled(floats[0].to(torch.bfloat16), *floats[1:]).dtype == torch.bfloat16
        assert compiled(*floats).dtype == torch.float32

    @pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
    def test_bad_input(self, backend, bad):
        _, args, kwargs, exc, match = bad
        with packops.use_backend(backend), pytest.raises(exc, match=match):
            type(self).fn(*args, **{**self.KWARGS, **kwargs})

    @pytest.mark.parametrize("backend,device", CPP)
    def test_kernels_serve_the_dispatch_dtypes(self, backend, device):
        """The C++ forward and backward kernel ops serve exactly the dtypes
        that _dispatch.DTYPES gives their backend: the Python table and the
        C++ device policies (CpuDevice in csrc/glue.h, CudaDevice in
        csrc/cuda/device.h) cannot drift apart. (Source-level for CUDA without
        a GPU: tests/test_dispatch.py.)"""
        if self.kernel_args(self.make(self.OPCHECK_SHAPE, 13), dict(self.KWARGS)) is None:
            pytest.skip("composed of other ops: no kernel op of its own")
        served = []
        for dtype in FLOATS:
            args = self.cast(self.make(self.OPCHECK_SHAPE, 13), dtype, device)
            name, kargs = self.kernel_args(args, dict(self.KWARGS))
            spec = packops._library.SPECS[name]
            outs = []
            fwd = getattr(torch.ops.packops, name)
            fwd_ok = _serves(backend, lambda: outs.append(fwd(*kargs)))
            if not fwd_ok:  # the backward's inputs as the forward would have made them
                meta = getattr(torch.ops.packops, name + "_triton")(
                    *[a.to("meta") if torch.is_tensor(a) else a for a in kargs])
                outs.append(tuple(torch.ones(o.shape, dtype=o.dtype, device=device)
                                  for o in (meta if isinstance(meta, tuple) else (meta,))))
            out = outs[0] if isinstance(outs[0], tuple) else (outs[0],)
            named = dict(zip(packops._library._arg_names(spec.fwd), kargs))
            bwd_args = [torch.ones_like(out[0]), *[named[a] for a in spec.saved],
                        *[out[i] for i in spec.saved_outputs], *[named[a] for a in spec.params],
                        *[True for _ in spec.grads]]
            bwd_ok = _serves(backend, lambda: getattr(torch.ops.packops, spec.bwd_name)(*bwd_args))
            assert fwd_ok == bwd_ok, f"{spec.fwd_name} and {spec.bwd_name} disagree on {dtype}"
            if fwd_ok:
                served.append(dtype)
        table = packops._dispatch.DTYPES[backend]
        assert set(served) == set(table), f"{backend} kernels serve {served}, DTYPES says {table}"

    def test_kernel_refuses_what_the_op_refuses(self, bad):
        """The Python checks and the compiled kernel's agree: every input the
        public op refuses, the C++ op refuses too (for callers that bypass it)."""
        if not packops.has_cpu_ext():
            pytest.skip("packops._C not built")
        _, args, kwargs, exc, match = bad
        if exc is TypeError:
            pytest.skip("not a tensor: the dispatcher refuses it before any check")
        if any(torch.is_tensor(a) and a.is_meta for a in (*args, *kwargs.values())):
            pytest.skip("a meta tensor dispatches to the fake kernel, which checks nothing")
        kernel = self.kernel_args(args, kwargs)
        if kernel is None:
            pytest.skip("composed of other ops: no kernel op of its own")
        name, kargs = kernel
        with pytest.raises((RuntimeError, TypeError, NotImplementedError)):
            getattr(torch.ops.packops, name)(*kargs)
