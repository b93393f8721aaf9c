"""packops against the real monodepth2 package (PyPI `monodepth2`, which
installs its `layers` module): the photometric loss against its SSIM +
compute_reprojection_loss, reproject against BackprojectDepth -> Project3D ->
grid_sample, with zeros and border padding, values and gradients, on every
backend present. docs/monodepth2.md is the recipe these tests back."""
import math

import pytest
import torch
import torch.nn.functional as F

import packops

from _assert import assert_close
from conftest import BACKEND_DEVICE

layers = pytest.importorskip(
    "layers", reason="the monodepth2 package is not installed (pip install monodepth2==1.0.0)")
if not hasattr(layers, "BackprojectDepth"):  # another package's `layers` module
    pytest.skip("the `layers` module found is not monodepth2's", allow_module_level=True)


def _their_reprojection_loss(pred, target):
    """monodepth2's Trainer.compute_reprojection_loss (with SSIM)."""
    l1 = (target - pred).abs().mean(1, True)
    return 0.85 * layers.SSIM().to(pred)(pred, target).mean(1, True) + 0.15 * l1


def _rotation(a, b, c):
    ca, sa, cb, sb, cc, sc = (math.cos(a), math.sin(a), math.cos(b), math.sin(b),
                              math.cos(c), math.sin(c))
    Rx = torch.tensor([[1, 0, 0], [0, ca, -sa], [0, sa, ca]], dtype=torch.float64)
    Ry = torch.tensor([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]], dtype=torch.float64)
    Rz = torch.tensor([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]], dtype=torch.float64)
    return Rx @ Ry @ Rz


def _scene(B, H, W, seed):
    """monodepth2's conventions: 4x4 K (pixels) and its inverse, T target -> source."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(B, 3, H, W, generator=g, dtype=torch.float64)
    depth = 1 + 9 * torch.rand(B, 1, H, W, generator=g, dtype=torch.float64)
    K = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    K[:, 0, 0], K[:, 1, 1] = 0.58 * W, 1.92 * H          # monodepth2's KITTI K, in pixels
    K[:, 0, 2], K[:, 1, 2] = 0.5 * W, 0.5 * H
    T = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    for b in range(B):
        a = 0.04 * (torch.rand(3, generator=g, dtype=torch.float64) - 0.5)
        T[b, :3, :3] = _rotation(*a.tolist())
        T[b, :3, 3] = 0.4 * (torch.rand(3, generator=g, dtype=torch.float64) - 0.5)
    return image, depth, K, torch.linalg.inv(K), T


def _their_warp(image, depth, K, inv_K, T, padding_mode, eps=1e-7):
    B, _, H, W = depth.shape
    back = layers.BackprojectDepth(B, H, W).to(depth)
    project = layers.Project3D(B, H, W, eps=eps).to(depth)
    pix = project(back(depth, inv_K), K, T)
    # monodepth2's normalisation by (W - 1) is the align_corners=True convention
    return F.grid_sample(image, pix, padding_mode=padding_mode, align_corners=True)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_photometric_loss_is_their_reprojection_loss(backend, device):
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 3, 12, 17, generator=g, dtype=torch.float64)
    target = (pred + 0.2 * torch.randn(2, 3, 12, 17, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = [t.to(device).requires_grad_() for t in (pred, target)]
    theirs = [t.clone().requires_grad_() for t in (pred, target)]
    with packops.use_backend(backend):
        a = packops.photometric_loss(*ours, C1=0.01 ** 2, C2=0.03 ** 2)
    b = _their_reprojection_loss(*theirs)
    assert_close(a, b, 1e-12, f"{backend} loss")
    grad = torch.randn(b.shape, generator=g, dtype=torch.float64)
    for x, y in zip(torch.autograd.grad(a, ours, grad.to(device)), torch.autograd.grad(b, theirs, grad)):
        assert_close(x, y, 1e-12, f"{backend} loss gradient")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_reproject_is_their_warp(backend, device, padding_mode):
    """With Project3D's eps set to 0 the two warps are one formula: values and
    gradients (image, depth, T) agree to float64 rounding."""
    image, depth, K, inv_K, T = _scene(2, 10, 24, seed=1)
    ours = [t.to(device).requires_grad_() for t in (image, depth, T)]
    theirs = [t.clone().requires_grad_() for t in (image, depth, T)]
    with packops.use_backend(backend):
        a, inside = packops.reproject(ours[0], ours[1], K[:, :3, :3].to(device), ours[2],
                                      return_mask=True, padding_mode=padding_mode)
    b = _their_warp(theirs[0], theirs[1], K, inv_K, theirs[2], padding_mode, eps=0.0)
    assert 0.05 < 1 - float(inside.mean()) < 0.5  # samples inside and outside the image
    assert_close(a, b, 1e-10, f"{backend} {padding_mode} warp")
    grad = torch.randn(b.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = torch.autograd.grad(a, ours, grad.to(device))
    want = torch.autograd.grad(b, theirs, grad)
    for name, x, y in zip(("image", "depth", "T"), got, want):
        assert_close(x, y, 1e-8 * max(1.0, float(y.abs().max())), f"{backend} {padding_mode} {name}")


def test_their_eps_moves_samples_by_a_negligible_amount():
    """monodepth2 divides by z + 1e-7, packops clamps z at 1e-5: for points in
    front of the camera the sample point moves by x 1e-7 / z pixels, so on a
    48x160 image of random texture (the steepest there is) with z >= 1 m the
    warps differ by about 1e-5 of the image range (measured: 1.0e-5), a
    fortieth of an 8-bit grey level or less."""
    image, depth, K, inv_K, T = _scene(2, 48, 160, seed=3)
    ours = packops.reproject(image, depth, K[:, :3, :3], T, padding_mode="border")
    theirs = _their_warp(image, depth, K, inv_K, T, "border")
    assert float((ours - theirs).abs().max()) < 1e-4
