"""reproject / scale_intrinsics on every backend present, against the reference."""
import math

import pytest
import torch

import packops
from packops.reproject import reproject_reference
from packops._dispatch import DTYPES

from _assert import assert_close
from conftest import BACKEND_DEVICE, FUSED

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


def _supports(backend, dtype):
    return dtype in DTYPES[backend]


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


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("name", CASES)
def test_float64_forward_and_gradients(backend, device, name):
    """float64: forward, mask and every gradient (image, depth, T, K, K_src)."""
    B, C, H, W, Hs, Ws, rows, k_src = CASES[name]
    case = _case(B, C, H, W, Hs, Ws, seed=len(name), pose_rows=rows, k_src=k_src)
    ins = _to(case, device, requires_grad=True)
    out, mask = _run(backend, *ins, return_mask=True)
    ref_ins = _to(case, "cpu", requires_grad=True)
    ref, ref_mask = reproject_reference(*ref_ins, return_mask=True)
    assert out.dtype == torch.float64 and out.shape == (B, C, H, W)
    assert 0.3 < float(ref_mask.mean()) < 1  # the case exercises both inside and outside
    assert_close(out, ref, 1e-12, f"{backend} forward")
    assert torch.equal(mask.cpu(), ref_mask), f"{backend} mask"
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = torch.autograd.grad(out, [t for t in ins if t is not None], grad.to(device))
    want = torch.autograd.grad(ref, [t for t in ref_ins if t is not None], grad)
    for n, a, e in zip(("image", "depth", "K", "T", "K_src"), got, want):
        assert_close(a, e, 1e-10 * max(1.0, float(e.abs().max())), f"{backend} grad {n}")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("name", ["same-size", "src-larger-3x4-Ksrc", "crosses-blocks"])
def test_float32(backend, device, name):
    """float32 against float64: the forward is continuous (tight max error);
    bilinear gradients jump where a sample crosses a pixel line, which
    rounding moves, so gradients are compared by relative norm."""
    B, C, H, W, Hs, Ws, rows, k_src = CASES[name]
    case = _case(B, C, H, W, Hs, Ws, seed=3, pose_rows=rows, k_src=k_src)
    ins = _to(case, device, torch.float32, torch.float32, requires_grad=True)
    out = _run(backend, *ins)
    exact_ins = _to(case, "cpu", requires_grad=True)
    exact = reproject_reference(*exact_ins)
    assert out.dtype == torch.float32
    assert_close(out, exact, 2e-4, f"{backend} float32 forward")
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = torch.autograd.grad(out, [t for t in ins if t is not None], grad.float().to(device))
    want = torch.autograd.grad(exact, [t for t in exact_ins if t is not None], grad)
    for n, a, e in zip(("image", "depth", "K", "T", "K_src"), got, want):
        assert a.dtype == torch.float32
        assert _relerr(a, e) < 2e-3, f"{backend} float32 grad {n}: rel err {_relerr(a, e):.2e}"


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_image(backend, device, dtype):
    """fp16/bf16 images with float32 geometry."""
    if not _supports(backend, dtype):
        pytest.skip(f"{backend} does not serve {dtype}")
    case = _case(2, 3, 12, 17, seed=5)
    image, depth, K, T, _ = _to(case, device, dtype, torch.float32, requires_grad=True)
    out = _run(backend, image, depth, K, T)
    exact_ins = _to(case, "cpu", requires_grad=True)
    exact = reproject_reference(*exact_ins)
    assert out.dtype == dtype
    assert _relerr(out, exact) < 1e-2
    gi, gd, gT = torch.autograd.grad(out.float().sum(), (image, depth, T))
    ei, ed, _, eT = torch.autograd.grad(exact.sum(), exact_ins[:4])
    assert gi.dtype == dtype and gd.dtype == torch.float32
    assert _relerr(gi, ei) < 2e-2 and _relerr(gd, ed) < 5e-2 and _relerr(gT, eT) < 5e-2


@pytest.mark.parametrize("backend,device", FUSED)
def test_noncontiguous(backend, device):
    image, depth, K, T, _ = _to(_case(2, 3, 10, 12, seed=7), device)
    image_nc = image.transpose(2, 3).contiguous().transpose(2, 3)
    depth_nc = depth.repeat_interleave(2, dim=3)[..., ::2]
    T_nc = T.transpose(1, 2).contiguous().transpose(1, 2)
    assert not (image_nc.is_contiguous() or depth_nc.is_contiguous() or T_nc.is_contiguous())
    args = [t.detach().requires_grad_() for t in (image_nc, depth_nc, K, T_nc)]
    out = _run(backend, *args)
    want = reproject_reference(image, depth, K, T)
    assert_close(out, want, 1e-12, f"{backend} non-contiguous forward")
    got = torch.autograd.grad(out.sum(), args)
    ref_args = [t.detach().requires_grad_() for t in (image, depth, K, T)]
    want = torch.autograd.grad(reproject_reference(*ref_args).sum(), ref_args)
    for a, e in zip(got, want):
        assert_close(a, e, 1e-10 * max(1.0, float(e.abs().max())), f"{backend} non-contiguous grad")


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


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("case", [(1, 2, 4, 5, 5, 6), (2, 1, 3, 4, 3, 4)], ids=str)
def test_gradcheck(backend, device, case):
    B, C, H, W, Hs, Ws = case
    image, depth, K, T, K_src = _to(_case(B, C, H, W, Hs, Ws, seed=11, k_src=True), device,
                                    requires_grad=True)
    with packops.use_backend(backend):
        assert torch.autograd.gradcheck(packops.reproject, (image, depth, K, T, K_src),
                                        eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend,device", FUSED)
def test_opcheck(backend, device):
    image, depth, K, T, K_src = _to(_case(2, 3, 5, 6, 6, 7, seed=12, k_src=True), device,
                                    torch.float32, torch.float32)
    if True:
        fwd = packops._library.kernel("reproject_fwd", backend).default
        needs = [(True, True, True, True, True), (False, True, False, True, False),
                 (True, False, True, False, True)]
        variants = [(image, depth, K, T, K_src), (image, depth, K[:1], T[:1, :3], None)]
    for inputs in variants:
        for need in needs:
            args = [None if t is None else t.detach().clone().requires_grad_(n)
                    for t, n in zip(inputs, need)]
            for with_mask in (False, True):
                torch.library.opcheck(fwd, (*args, with_mask))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_compile_fullgraph(backend, device):
    torch._dynamo.reset()
    image, depth, K, T, _ = _to(_case(2, 3, 8, 9, seed=13), device, torch.float32, torch.float32)
    depth.requires_grad_()
    T.requires_grad_()

    def step(img, d, k, t):
        out, mask = packops.reproject(img, d, k, t, return_mask=True)
        return (out * mask).abs().mean()

    with packops.use_backend(backend):
        compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
        loss = compiled(image, depth, K, T)
        got = torch.autograd.grad(loss, (depth, T))
        eager = step(image, depth, K, T)
        want = torch.autograd.grad(eager, (depth, T))
    assert_close(loss, eager, 1e-6, "compiled loss")
    for a, b in zip(got, want):
        assert_close(a, b, 1e-6, "compiled grad")


def _exact_K(B, dtype, device):
    # Powers of two: K^-1 is exact, so P is exactly K [R K^-1 | t].
    K = torch.tensor([[8.0, 0, 4], [0, 8, 2], [0, 0, 1]], dtype=dtype, device=device)
    return K.expand(B, 3, 3)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_identity_pose_reproduces_image(backend, device, dtype):
    if not _supports(backend, dtype):
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
def test_far_outside_and_behind_the_camera_read_zeros(backend, device):
    image, depth, K, T, _ = _to(_case(2, 3, 6, 7, seed=14), device, torch.float32, torch.float32)
    T = T.clone()
    T[0, :3, :3] = _rotation(0.0, math.pi, 0.0, torch.float32).to(device)  # looks backwards
    T[1, :3, 3] = torch.tensor([1e4, 0.0, 0.0], device=device)              # far to the side
    depth = depth.detach().requires_grad_()
    out, mask = _run(backend, image, depth, K, T, return_mask=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.equal(mask, torch.zeros_like(mask))
    (g,) = torch.autograd.grad(out.sum(), depth)
    assert torch.equal(g, torch.zeros_like(g))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_non_finite_and_non_positive_depth(backend, device):
    """NaN/inf depth -> NaN at that pixel (as grid_sample), mask 0; depth <= 0
    is whatever the formula gives (as the reference); nothing crashes."""
    image, depth, K, T, _ = _to(_case(1, 3, 6, 7, seed=15), device)
    depth = depth.clone()
    bad = [(1, 2, float("nan")), (2, 3, float("inf")), (3, 3, -float("inf")),
           (4, 4, 0.0), (0, 5, -2.0)]
    for h, w, v in bad:
        depth[0, 0, h, w] = v
    depth.requires_grad_()
    out, mask = _run(backend, image, depth, K, T, return_mask=True)
    want, want_mask = reproject_reference(image.cpu(), depth.detach().cpu(), K.cpu(), T.cpu(),
                                          return_mask=True)
    assert torch.equal(torch.isnan(out).cpu(), torch.isnan(want)), "NaN pattern"
    assert_close(out, want, 1e-12, f"{backend} with bad depth")
    assert torch.equal(mask.cpu(), want_mask)
    for h, w, _ in bad[:3]:
        assert torch.isnan(out[0, :, h, w]).all() and mask[0, 0, h, w] == 0
    (g,) = torch.autograd.grad(out.nansum(), depth)
    if backend != "reference":  # the fused backends pass no gradient through NaN pixels
        assert torch.isfinite(g).all()
        assert all(g[0, 0, h, w] == 0 for h, w, _ in bad[:3])


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_empty_batch(backend, device):
    image, depth, K, T, _ = _to(_case(1, 3, 4, 5, seed=16), device, torch.float32, torch.float32)
    image, depth = image[:0].requires_grad_(), depth[:0].requires_grad_()
    out = _run(backend, image, depth, K[:0], T[:0])
    assert out.shape == (0, 3, 4, 5)
    out.sum().backward()
    assert image.grad.shape == image.shape and depth.grad.shape == depth.shape


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
