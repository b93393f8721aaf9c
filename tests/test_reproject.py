"""reproject / scale_intrinsics: the op contract (tests/contract.py) on every
backend present, plus known answers (identity, translations), the mask,
cameras broadcast over the batch, and what bad depth and cameras give."""
import math

import pytest
import torch

import packops
from packops.reproject import reproject_reference

from _assert import assert_close
from conftest import BACKEND_DEVICE, FUSED
from contract import OpContract

LOW = (torch.float16, torch.bfloat16)


def _rotation(a, b, c, dtype=torch.float64):
    """R = Rx(a) Ry(b) Rz(c)."""
    ca, sa, cb, sb, cc, sc = (math.cos(a), math.sin(a), math.cos(b), math.sin(b),
                              math.cos(c), math.sin(c))
    Rx = torch.tensor([[1, 0, 0], [0, ca, -sa], [0, sa, ca]], dtype=dtype)
    Ry = torch.tensor([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]], dtype=dtype)
    Rz = torch.tensor([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]], dtype=dtype)
    return Rx @ Ry @ Rz


def _intrinsics(B, H, W, g):
    """Several intrinsics per batch: focal lengths ~W, principal points near the centre."""
    K = torch.zeros(B, 3, 3, dtype=torch.float64)
    K[:, 0, 0] = W * (0.6 + 0.6 * torch.rand(B, generator=g, dtype=torch.float64))
    K[:, 1, 1] = K[:, 0, 0] * (0.9 + 0.2 * torch.rand(B, generator=g, dtype=torch.float64))
    K[:, 0, 2] = (W - 1) / 2 + torch.randn(B, generator=g, dtype=torch.float64)
    K[:, 1, 2] = (H - 1) / 2 + torch.randn(B, generator=g, dtype=torch.float64)
    K[:, 2, 2] = 1
    return K


def _case(B, C, H, W, Hs=None, Ws=None, seed=0, pose_rows=4, k_src=False):
    """A float64 test case: (image, depth, K, T, K_src) with random small
    rotations, translations and intrinsics, depth in [1, 6]."""
    Hs, Ws = Hs or H, Ws or W
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(B, C, Hs, Ws, generator=g, dtype=torch.float64)
    depth = 1 + 5 * torch.rand(B, 1, H, W, generator=g, dtype=torch.float64)
    K = _intrinsics(B, H, W, g)
    T = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    for b in range(B):
        a = 0.06 * (torch.rand(3, generator=g, dtype=torch.float64) - 0.5)
        T[b, :3, :3] = _rotation(*a.tolist())
        T[b, :3, 3] = 0.3 * (torch.rand(3, generator=g, dtype=torch.float64) - 0.5)
    K_src = _intrinsics(B, Hs, Ws, g) if k_src else None
    return image, depth, K, T[:, :pose_rows], K_src


def _to(case, device, image_dtype=torch.float64, dtype=torch.float64, requires_grad=False):
    image, depth, K, T, K_src = case
    out = [image.to(device, image_dtype)] + [
        None if t is None else t.to(device, dtype) for t in (depth, K, T, K_src)]
    if requires_grad:
        for t in out:
            if t is not None:
                t.requires_grad_()
    return out


def _run(backend, *args, **kwargs):
    with packops.use_backend(backend):
        return packops.reproject(*args, **kwargs)


def _relerr(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


CASES = {  # name: (B, C, H, W, Hs, Ws, pose_rows, k_src)
    "same-size": (2, 3, 11, 13, None, None, 4, False),
    "batch1-1ch": (1, 1, 7, 5, None, None, 4, False),
    "src-larger-3x4-Ksrc": (3, 2, 9, 16, 12, 20, 3, True),
    "src-smaller-Ksrc": (2, 3, 16, 21, 8, 10, 4, True),
    "crosses-blocks": (1, 3, 40, 70, None, None, 4, False),
}

# bad input
B = 2
img = torch.rand(B, 3, 6, 7)
dep = torch.rand(B, 1, 5, 6) + 1
K = torch.tensor([[5.0, 0, 3], [0, 5, 2], [0, 0, 1]]).expand(B, 3, 3)
T = torch.eye(4).expand(B, 4, 4)


def _bad(name, match, exc=ValueError, **kw):
    args = {"image": img, "depth": dep, "K": K, "T": T}
    args.update(kw)
    return (name, (), args, exc, match)


class TestReproject(OpContract):
    fn = packops.reproject
    reference = reproject_reference
    NAMES = GRADS = ("image", "depth", "K", "T", "K_src")
    KERNELS = ("reproject_fwd",)
    SHAPES = CASES
    LOW_SHAPE = (2, 3, 12, 17, None, None, 4, False)
    AUTOCAST = False  # a loss term: runs in its inputs' dtype under autocast
    GRADCHECK_SHAPE = (1, 2, 4, 5, 5, 6, 4, True)
    OPCHECK_SHAPE = (2, 3, 5, 6, 6, 7, 4, True)
    BATCHED = (0, 1, 2, 3, 4)
    NEEDS_FOR_OPCHECK = [(True, True, True, True, True), (False, True, False, True, False),
                         (True, False, True, False, True)]

    def make(self, shape, seed=0):
        B, C, H, W, Hs, Ws, rows, k_src = shape
        return list(_case(B, C, H, W, Hs, Ws, seed=seed, pose_rows=rows, k_src=k_src))

    def cast(self, args, dtype, device):
        """The image in `dtype`; the geometry in float32 for fp16/bf16 images."""
        geometry = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        return [a if a is None else a.to(device, dtype if i == 0 else geometry)
                for i, a in enumerate(args)]

    def check_output(self, dtype, what, actual, same, exact, floor=None):
        if dtype == torch.float64:
            return assert_close(actual, exact, 1e-12, what)
        if dtype == torch.float32:  # sample points move by rounding: 2e-4 of a unit image
            return assert_close(actual, exact, 2e-4, what)
        assert _relerr(actual, exact) < 1e-2, what

    def check_grad(self, name, dtype, what, actual, same, exact, floor=None):
        """float32 and below: bilinear gradients jump where a sample crosses a
        pixel line, which rounding moves, so they compare by relative norm."""
        if dtype == torch.float64:
            return assert_close(actual, exact, 1e-10 * max(1.0, float(exact.abs().max())), what)
        if dtype == torch.float32:
            limit = 2e-3
        else:  # an fp16/bf16 image; the geometry gradients are float32 but see its rounding
            limit = 2e-2 if name == "image" else 5e-2
        assert _relerr(actual, exact) < limit, f"{what}: rel err {_relerr(actual, exact):.2e}"

    @property
    def border(self):
        return self.KWARGS.get("padding_mode") == "border"

    def kernel_args(self, args, kwargs):
        a = dict(zip(self.NAMES, args), **kwargs)
        return "reproject_fwd", (a["image"], a["depth"], a["K"], a["T"], a.get("K_src"), False,
                                 a.get("padding_mode") == "border")

    def opcheck_cases(self, args):
        image, depth, K_, T_, K_src = args
        # cameras broadcast from batch 1, a 3x4 pose and no K_src
        bcast = [t.detach()[:1].clone().requires_grad_(t.requires_grad) for t in (K_, T_)]
        return [("reproject_fwd", (image, depth, K_, T_, K_src, m, self.border))
                for m in (False, True)] + \
               [("reproject_fwd", (image, depth, bcast[0], bcast[1][:, :3].detach().clone()
                                   .requires_grad_(T_.requires_grad), None, m, self.border))
                for m in (False, True)]

    BAD = [
        _bad("depth-channels", r"depth must be \[B,1,H,W\].*\(2, 2, 5, 6\)",
             depth=torch.rand(B, 2, 5, 6)),
        _bad("depth-batch", r"depth must be \[B,1,H,W\].*B=2.*\(3, 1, 5, 6\)",
             depth=torch.rand(3, 1, 5, 6)),
        _bad("depth-3d", r"depth must have 4 dimensions.*\(2, 5, 6\)", depth=torch.rand(B, 5, 6)),
        _bad("image-H1", r"image needs H >= 2 and W >= 2.*\(2, 3, 1, 7\)",
             image=torch.rand(B, 3, 1, 7)),
        _bad("K-2d", r"K must be \[B,3,3\].*\(3, 3\)", K=torch.eye(3)),
        _bad("K-4x4", r"K must be \[B,3,3\].*\(2, 4, 4\)", K=torch.eye(4).expand(B, 4, 4)),
        _bad("K-batch", r"K must be.*B=2.*\(3, 3, 3\)", K=K.expand(2, 3, 3)[:1].expand(3, 3, 3)),
        _bad("T-3x3", r"T must be \[B,4,4\] or \[B,3,4\].*\(2, 3, 3\)",
             T=torch.eye(3).expand(B, 3, 3)),
        _bad("T-batch", r"T must be .*B=2.*\(3, 4, 4\)", T=torch.eye(4).expand(3, 4, 4)),
        _bad("K_src-shape", r"K_src must be \[B,3,3\].*\(1, 2, 3\)", K_src=torch.eye(3)[None, :2]),
        _bad("image-int", r"image must be a floating-point tensor.*int64", image=img.long()),
        _bad("depth-int", r"depth must be a floating-point tensor.*int32", depth=dep.int()),
        _bad("T-int", r"T must be a floating-point", T=torch.eye(4, dtype=torch.int64).expand(B, 4, 4)),
        _bad("K-device", r"K must be on the image's device cpu, got meta", K=K.to("meta")),
        _bad("depth-device", r"depth must be on the image's device cpu, got meta",
             depth=dep.to("meta")),
        _bad("T-numpy", "T must be a torch.Tensor", TypeError, T=T.numpy()),
    ]


class TestReprojectBorder(TestReproject):
    """padding_mode="border" (monodepth2's): every contract case again."""
    KWARGS = {"padding_mode": "border"}
    BAD = [_bad("padding-mode", r"padding_mode must be 'zeros' or 'border', got 'reflection'",
                padding_mode="reflection")]

    def kernel_args(self, args, kwargs):
        if kwargs.get("padding_mode") not in ("zeros", "border"):
            return None  # the kernel op takes a bool: nothing to refuse
        return super().kernel_args(args, kwargs)


# ------------------------------------------------------------ other cases
@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("name", CASES)
def test_mask_matches_reference(backend, device, name):
    B_, C, H, W, Hs, Ws, rows, k_src = CASES[name]
    case = _to(_case(B_, C, H, W, Hs, Ws, seed=len(name), pose_rows=rows, k_src=k_src), device)
    _, mask = _run(backend, *case, return_mask=True)
    _, want = reproject_reference(*[t if t is None else t.cpu() for t in case], return_mask=True)
    assert 0.3 < float(want.mean()) < 1  # the case exercises both inside and outside
    assert torch.equal(mask.cpu(), want)


@pytest.mark.parametrize("backend,device", FUSED)
def test_gradcheck_broadcast_batch2(backend, device):
    image, depth, K_, T_, K_src = _to(_case(2, 1, 3, 4, 3, 4, seed=11, k_src=True), device,
                                      requires_grad=True)
    with packops.use_backend(backend):
        assert torch.autograd.gradcheck(packops.reproject, (image, depth, K_, T_, K_src),
                                        eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend,device", FUSED)
def test_noncontiguous_cameras(backend, device):
    image, depth, K_, T_, _ = _to(_case(2, 3, 10, 12, seed=7), device)
    T_nc = T_.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    K_nc = K_.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    assert not (T_nc.is_contiguous() or K_nc.is_contiguous())
    out = _run(backend, image, depth, K_nc, T_nc)
    ref_args = [t.detach().requires_grad_() for t in (K_, T_)]
    want = reproject_reference(image, depth, *ref_args)
    assert_close(out, want, 1e-12, f"{backend} non-contiguous cameras")
    for a, e in zip(torch.autograd.grad(out.sum(), (K_nc, T_nc)),
                    torch.autograd.grad(want.sum(), ref_args)):
        assert_close(a, e, 1e-10 * max(1.0, float(e.abs().max())), f"{backend} camera grads")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_everything(backend, device, dtype):
    """Image, depth and cameras all fp16/bf16: the geometry runs in float32
    (the reference too: no low-precision matrix inverse), on every backend,
    auto's fallback included."""
    if dtype not in packops._dispatch.DTYPES[backend]:
        pytest.skip(f"{backend} does not serve {dtype}")
    case = _case(2, 3, 8, 9, seed=5)
    args = [t.to(device, dtype) for t in case[:4]]
    out = _run(backend, *args)
    exact = reproject_reference(*case[:4])
    assert out.dtype == dtype and _relerr(out, exact) < 2e-2


def test_low_precision_under_auto_falls_back_to_the_reference():
    case = _case(1, 3, 6, 7, seed=6)
    args = [t.half() for t in case[:4]]
    with pytest.warns(RuntimeWarning, match="falling back to the reference"):
        packops._dispatch._warned.clear()
        out = packops.reproject(*args)
    assert out.dtype == torch.float16 and _relerr(out, reproject_reference(*case[:4])) < 2e-2


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_singular_K_gives_nan_not_an_error(backend, device):
    image, depth, K_, T_, _ = _to(_case(2, 3, 5, 6, seed=18), device, torch.float32, torch.float32)
    K_ = K_.clone()
    K_[1] = 0  # singular
    out, mask = _run(backend, image, depth, K_, T_, return_mask=True)
    assert torch.isnan(out[1]).all() and not mask[1].any()
    assert torch.isfinite(out[0]).all()


@pytest.mark.parametrize("backend,device", FUSED)
def test_training_case_skips_image_gradient(backend, device):
    """Gradients to depth and pose only: the image gets none and the rest match."""
    image, depth, K, T, _ = _to(_case(2, 3, 9, 11, seed=8), device)
    depth.requires_grad_()
    T.requires_grad_()
    _run(backend, image, depth, K, T).square().sum().backward()
    assert image.grad is None and K.grad is None
    d, t = depth.detach().requires_grad_(), T.detach().requires_grad_()
    reproject_reference(image, d, K, t).square().sum().backward()
    assert_close(depth.grad, d.grad, 1e-10, "depth grad")
    assert_close(T.grad, t.grad, 1e-9, "pose grad")


def _exact_K(B, dtype, device):
    # Powers of two: K^-1 is exact, so P is exactly K [R K^-1 | t].
    K = torch.tensor([[8.0, 0, 4], [0, 8, 2], [0, 0, 1]], dtype=dtype, device=device)
    return K.expand(B, 3, 3)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_identity_pose_reproduces_image(backend, device, dtype):
    if dtype not in packops._dispatch.DTYPES[backend]:
        pytest.skip(f"{backend} does not serve {dtype}")
    image = torch.rand(2, 3, 7, 9, dtype=dtype, device=device)
    depth = torch.full((2, 1, 7, 9), 2.0, dtype=dtype, device=device)
    T = torch.eye(4, dtype=dtype, device=device).expand(1, 4, 4)  # batch 1, broadcast
    out, mask = _run(backend, image, depth, _exact_K(2, dtype, device), T, return_mask=True)
    if backend == "reference":  # grid_sample's normalise/unnormalise round trip rounds
        assert_close(out, image, 1e-6, "identity")
    else:
        assert torch.equal(out, image)
    assert torch.equal(mask, torch.ones_like(depth))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("tx,shift", [(0.25, 1.0), (0.125, 0.5), (-0.5, -2.0)])
def test_translation_along_x_shifts_by_f_t_over_z(backend, device, tx, shift):
    """Constant depth z, translation t along x: the image moves by f t / z pixels."""
    dtype = torch.float64
    H, W = 5, 8
    image = torch.rand(1, 2, H, W, dtype=dtype, device=device)
    depth = torch.full((1, 1, H, W), 2.0, dtype=dtype, device=device)
    T = torch.eye(4, dtype=dtype, device=device)[None].clone()
    T[0, 0, 3] = tx
    assert 8.0 * tx / 2.0 == shift
    out, mask = _run(backend, image, depth, _exact_K(1, dtype, device), T, return_mask=True)
    want = torch.zeros_like(image)
    want_mask = torch.zeros_like(depth)
    for u in range(W):
        x = u + shift
        x0 = math.floor(x)
        f = x - x0
        for xi, w in ((x0, 1 - f), (x0 + 1, f)):
            if 0 <= xi < W:
                want[..., u] += w * image[..., xi]
        want_mask[..., u] = float(0 <= x <= W - 1)
    assert_close(out, want, 1e-6 if backend == "reference" else 1e-15, f"{backend} shift {shift}")
    assert torch.equal(mask, want_mask)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_far_outside_and_behind_the_camera(backend, device, padding_mode):
    """zeros: such points read zeros and pass no gradient; border: they read
    the edge pixels they are clamped to and pass a gradient only through the
    coordinate that was not clamped, as grid_sample does."""
    image, depth, K, T, _ = _to(_case(2, 3, 6, 7, seed=14), device, torch.float32, torch.float32)
    T = T.clone()
    T[0, :3, :3] = _rotation(0.0, math.pi, 0.0, torch.float32).to(device)  # looks backwards
    T[1, :3, 3] = torch.tensor([1e4, 0.0, 0.0], device=device)              # far to the side
    depth = depth.detach().requires_grad_()
    out, mask = _run(backend, image, depth, K, T, return_mask=True, padding_mode=padding_mode)
    assert torch.equal(mask, torch.zeros_like(mask))
    (g,) = torch.autograd.grad(out.sum(), depth)
    if padding_mode == "zeros":
        assert torch.equal(out, torch.zeros_like(out)) and torch.equal(g, torch.zeros_like(g))
        return
    d = depth.detach().requires_grad_()
    want = reproject_reference(image, d, K, T, padding_mode="border")
    (want_g,) = torch.autograd.grad(want.sum(), d)
    assert (out.abs() > 0).all()  # edge pixels of a random image
    assert_close(out, want, 1e-5, f"{backend} border")
    assert_close(g, want_g, 1e-3 * max(1.0, float(want_g.abs().max())), f"{backend} border grad")
    assert torch.equal(g[0], torch.zeros_like(g[0]))  # behind the camera: both clamped


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_non_finite_and_non_positive_depth(backend, device, padding_mode):
    """NaN/inf depth -> NaN at that pixel in both modes (grid_sample's zeros
    padding gives it; its border clamp would hide it in an edge pixel), mask
    0; depth <= 0 is whatever the formula gives (as the reference); nothing
    crashes, and the fused backends pass no gradient through such pixels."""
    image, depth, K, T, _ = _to(_case(1, 3, 6, 7, seed=15), device)
    depth = depth.clone()
    bad = [(1, 2, float("nan")), (2, 3, float("inf")), (3, 3, -float("inf")),
           (4, 4, 0.0), (0, 5, -2.0)]
    for h, w, v in bad:
        depth[0, 0, h, w] = v
    depth.requires_grad_()
    out, mask = _run(backend, image, depth, K, T, return_mask=True, padding_mode=padding_mode)
    want, want_mask = reproject_reference(image.cpu(), depth.detach().cpu(), K.cpu(), T.cpu(),
                                          return_mask=True, padding_mode=padding_mode)
    assert torch.equal(torch.isnan(out).cpu(), torch.isnan(want)), "NaN pattern"
    assert_close(out, want, 1e-12, f"{backend} with bad depth")
    assert torch.equal(mask.cpu(), want_mask)
    for h, w, _ in bad[:3]:
        assert torch.isnan(out[0, :, h, w]).all() and mask[0, 0, h, w] == 0
    (g,) = torch.autograd.grad(out.nansum(), depth)
    if backend != "reference":
        assert torch.isfinite(g).all()
        assert all(g[0, 0, h, w] == 0 for h, w, _ in bad[:3])


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_border_repeats_the_edge_pixels(backend, device):
    """A shift of 2 pixels to the left along x: with border the last two
    columns repeat the image's last column, and their x gradient is 0."""
    dtype = torch.float64
    image = torch.rand(1, 2, 5, 8, dtype=dtype, device=device)
    depth = torch.full((1, 1, 5, 8), 2.0, dtype=dtype, device=device, requires_grad=True)
    T = torch.eye(4, dtype=dtype, device=device)[None].clone()
    T[0, 0, 3] = 0.5  # x + f t / z = x + 2
    out, mask = _run(backend, image, depth, _exact_K(1, dtype, device), T, return_mask=True,
                     padding_mode="border")
    want = torch.cat([image[..., 2:], image[..., 7:].expand(1, 2, 5, 2)], 3)
    assert_close(out, want, 1e-6 if backend == "reference" else 1e-15, f"{backend} border shift")
    assert torch.equal(mask[0, 0, 0], torch.tensor([1.0] * 6 + [0.0] * 2, dtype=dtype,
                                                   device=device))
    (g,) = torch.autograd.grad(out.sum(), depth)
    assert_close(g[..., 6:], torch.zeros_like(g[..., 6:]), 1e-12, "clamped: no gradient")
    assert g[..., :5].abs().sum() > 0


def test_cpu_image_gradient_is_deterministic():
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    image, depth, K, T, _ = _to(_case(2, 3, 30, 40, seed=17), "cpu", torch.float32, torch.float32,
                                requires_grad=True)
    grads = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            grads.append(torch.autograd.grad(_run("cpu", image, depth, K, T).square().sum(),
                                             (image, depth, T)))
    finally:
        torch.set_num_threads(threads)
    for g in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(g, grads[0]))


def test_scale_intrinsics():
    K = torch.tensor([[[100.0, 0.5, 63.5], [0.0, 90.0, 31.5], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    half = packops.scale_intrinsics(K, 0.5, 0.5)
    want = torch.tensor([[[50.0, 0.25, 31.5], [0.0, 45.0, 15.5], [0.0, 0.0, 1.0]]],
                        dtype=torch.float64)
    assert_close(half, want, 1e-12, "scale 0.5")
    assert_close(packops.scale_intrinsics(half, 2, 2), K, 1e-12, "round trip")
    # a 128x64 image's centre pixel (63.5, 31.5) stays the centre of a 64x32 one
    assert_close(packops.scale_intrinsics(K, 0.5, 0.25)[0, :2, 2],
                 torch.tensor([31.5, 7.5], dtype=torch.float64), 1e-12, "anisotropic")
    Kg = K.clone().requires_grad_()
    packops.scale_intrinsics(Kg, 0.5, 0.25).sum().backward()
    assert Kg.grad is not None
    with pytest.raises(ValueError, match="K must be"):
        packops.scale_intrinsics(torch.eye(4), 0.5, 0.5)
    with pytest.raises(ValueError, match="sx must be a finite number"):
        packops.scale_intrinsics(K, float("nan"), 0.5)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("rows", [3, 4])
def test_broadcast_camera_gradients(backend, device, rows):
    """K and T of batch 1 shared by the batch (K also standing in for K_src):
    their gradients sum over the batch and over K's two roles."""
    image, depth, K, T, _ = _to(_case(3, 2, 7, 9, seed=21), device)
    K1 = K[:1].clone().requires_grad_()
    T1 = T[:1, :rows].clone().requires_grad_()
    depth.requires_grad_()
    grad = torch.randn(3, 2, 7, 9, generator=torch.Generator().manual_seed(3),
                       dtype=torch.float64).to(device)
    got = torch.autograd.grad(_run(backend, image, depth, K1, T1), (depth, K1, T1), grad)
    r = [t.detach().cpu().requires_grad_() for t in (depth, K1, T1)]
    want = torch.autograd.grad(reproject_reference(image.cpu(), *r), r, grad.cpu())
    for n, a, e in zip(("depth", "K", "T"), got, want):
        assert a.shape == e.shape
        assert_close(a, e, 1e-10 * max(1.0, float(e.abs().max())), f"{backend} grad {n}")


def test_not_a_tensor():
    with pytest.raises(TypeError, match="T must be a torch.Tensor"):
        packops.reproject(img, dep, K, T.numpy())


def test_batch_one_intrinsics_and_pose_broadcast():
    out = packops.reproject(img, dep, K[:1], T[:1, :3])
    assert out.shape == (B, 3, 5, 6)


def test_cpu_backend_refuses_half_with_a_reason():
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    with packops.use_backend("cpu"), pytest.raises(RuntimeError, match="cpu.*float16"):
        packops.reproject(img.half(), dep, K, T)


def test_compiled_op_checks_its_arguments():
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    op = torch.ops.packops.reproject_fwd
    with pytest.raises(RuntimeError, match=r"T must be \[B,4,4\] or \[B,3,4\].*\[2, 3, 3\]"):
        op(img, dep, K, T[:, :3, :3], None, False, False)
    with pytest.raises(RuntimeError, match=r"K_src must be \[B,3,3\].*\[3, 3, 3\]"):
        op(img, dep, K, T, K[:1].expand(3, 3, 3), False, False)
    with pytest.raises(RuntimeError, match=r"depth must be \[B,1,H,W\]"):
        op(img, dep[:1], K, T, None, False, False)
    with pytest.raises(RuntimeError, match=r"must be Double for a Double image"):
        op(img.double(), dep, K, T, None, False, False)
    with pytest.raises(RuntimeError, match=r"grad must have shape \[2, 3, 5, 6\]"):
        torch.ops.packops.reproject_bwd(img, img, dep, K, T, None, False, True, True, True, True,
                                        False)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("image_dtype,geometry_dtype", [(torch.float64, torch.float32),
                                                        (torch.float32, torch.float64)])
def test_the_image_dtype_decides_the_geometry_dtype(backend, device, image_dtype,
                                                    geometry_dtype):
    """A float64 image with float32 depth and cameras (and the other way
    round): the geometry runs in the image's precision on every backend,
    the reference included, and each gradient keeps its input's dtype."""
    if image_dtype not in packops._dispatch.DTYPES[backend]:
        pytest.skip(f"{backend} does not serve {image_dtype}")
    case = _case(1, 2, 6, 7, seed=11)
    args = _to(case, device, image_dtype, geometry_dtype, requires_grad=True)[:4]
    out = _run(backend, *args)
    want = reproject_reference(*[a.detach().to(image_dtype) for a in args])
    assert out.dtype == image_dtype
    # the same geometry as inputs converted to the image's dtype up front
    tol = 1e-10 if image_dtype == torch.float64 else 2e-4
    assert_close(out, want, tol, f"{backend} mixed dtypes")
    grads = torch.autograd.grad(out.sum(), args)
    assert [g.dtype for g in grads] == [a.dtype for a in args]
