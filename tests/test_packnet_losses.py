"""packnet geometry and losses: conventions, known-answer cases, backends."""
import math

import pytest
import torch

import packops
from packnet import geometry
from packnet.losses import (MultiViewPhotometricLoss, SupervisedLoss, VelocityLoss,
                            smoothness_loss, translation_norms)

from _assert import assert_close


def _rot(axis, a):
    c, s = math.cos(a), math.sin(a)
    m = {"x": [[1, 0, 0], [0, c, -s], [0, s, c]], "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
         "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    return torch.tensor(m, dtype=torch.float64)


def test_pose_vec2mat_matches_an_independent_construction():
    g = torch.Generator().manual_seed(0)
    vec = torch.randn(5, 6, generator=g, dtype=torch.float64)
    T = geometry.pose_vec2mat(vec)
    for b in range(5):
        rx, ry, rz = vec[b, 3:].tolist()
        R = _rot("x", rx) @ _rot("y", ry) @ _rot("z", rz)
        assert_close(T[b, :3, :3], R, 1e-12, "rotation")
        assert_close(T[b, :3, 3], vec[b, :3], 0, "translation")
        assert_close(T[b, 3], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64), 0, "last row")
    eye = torch.eye(4, dtype=torch.float64).expand(5, 4, 4)
    assert_close(geometry.invert_pose(T) @ T, eye, 1e-12, "T^-1 T")
    with pytest.raises(ValueError, match=r"vec must be \[B,6\]"):
        geometry.pose_vec2mat(vec[:, :5])


def test_inverse_depth_round_trip_and_zeros():
    d = torch.tensor([0.0, -1.0, 0.5, 2.0, 80.0])
    inv = geometry.depth2inv(d)
    assert inv.tolist()[:2] == [0.0, 0.0]
    assert_close(geometry.inv2depth(inv)[2:], d[2:], 1e-5, "round trip")
    assert geometry.inv2depth(torch.zeros(3)).eq(0).all()


def test_scale_intrinsics_of_the_decoder_scales():
    K = torch.tensor([[[100.0, 0, 63.5], [0, 100, 31.5], [0, 0, 1]]])
    assert_close(geometry.scale_intrinsics(K, 0.5)[0, 0, 0], torch.tensor(50.0), 0, "fx/2")
    assert_close(geometry.scale_intrinsics(K, 0.25)[0, :2, 2], torch.tensor([15.5, 7.5]), 1e-6,
                 "centre at 1/4")


def _scene(B=2, H=24, W=40, seed=0, tz=-0.3):
    """A textured target frame, its true depth, and context frames synthesised
    from it by the known poses: the true depth and pose explain them exactly
    (up to the edges)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.avg_pool2d(torch.rand(B, 3, H + 2, W + 2, generator=g), 3, 1)
    depth = 4 + 4 * torch.rand(B, 1, H, W, generator=g)
    depth = torch.nn.functional.avg_pool2d(depth, 5, 1, 2, count_include_pad=False)
    K = torch.tensor([[0.6 * W, 0, W / 2 - 0.5], [0, 0.6 * W, H / 2 - 0.5], [0, 0, 1]]).expand(B, 3, 3)
    poses, contexts = [], []
    for sign in (1, -1):
        vec = torch.tensor([[0.05 * sign, 0.0, tz * sign, 0.0, 0.02 * sign, 0.0]]).expand(B, 6)
        T = geometry.pose_vec2mat(vec)
        # context = the target seen from the context camera: sample the target
        # with the inverse warp (depth of the context view ~ the target depth)
        contexts.append(packops.reproject_reference(image, depth, K, geometry.invert_pose(T)))
        poses.append(T)
    return image, contexts, depth, K, poses


@pytest.mark.parametrize("automask", [True, False])
def test_true_depth_and_pose_score_lower_than_wrong_ones(automask):
    image, contexts, depth, K, poses = _scene()
    loss = MultiViewPhotometricLoss(num_scales=1, automask=automask, smooth_weight=0.0)
    inv = geometry.depth2inv(depth)
    good = loss(image, contexts, [inv], K, poses)["loss"]
    wrong_depth = loss(image, contexts, [inv * 2.5], K, poses)["loss"]
    wrong_pose = loss(image, contexts, [inv], K, [geometry.pose_vec2mat(
        torch.tensor([[0.0, 0.1, 0.3, 0.05, 0, 0]]).expand(2, 6))] * 2)["loss"]
    assert good < 0.8 * wrong_depth and good < 0.8 * wrong_pose


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("upsample", [True, False])
@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_fused_path_equals_per_call_composition(backend, upsample, clip):
    if backend == "cpu" and not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    image, contexts, depth, K, poses = _scene(seed=1)
    inv = geometry.depth2inv(depth)
    invs = [torch.nn.functional.avg_pool2d(inv, 2 ** i) * (1 + 0.1 * i) for i in range(4)]
    invs = [d.clone().requires_grad_() for d in invs]
    out = {}
    with packops.use_backend(backend):
        for fused in (True, False):
            crit = MultiViewPhotometricLoss(fused=fused, upsample_depth_maps=upsample, clip_loss=clip)
            terms = crit(image, contexts, invs, K, poses)
            out[fused] = (terms["loss"], torch.autograd.grad(terms["loss"], invs))
    assert_close(out[True][0], out[False][0], 1e-6, "loss")
    for a, b in zip(out[True][1], out[False][1]):
        assert_close(a, b, 1e-6, "grad")


def test_loss_is_the_same_on_reference_and_fused_backends():
    if not packops.has_cpu_ext():
        pytest.skip("packops._C not built")
    image, contexts, depth, K, poses = _scene(seed=2)
    inv = geometry.depth2inv(depth).requires_grad_()
    vals = {}
    for backend in ("reference", "cpu"):
        with packops.use_backend(backend):
            loss = MultiViewPhotometricLoss()(image, contexts, [inv], K, poses)["loss"]
            vals[backend] = (loss, torch.autograd.grad(loss, inv)[0])
    assert_close(vals["cpu"][0], vals["reference"][0], 1e-5, "loss")
    assert_close(vals["cpu"][1], vals["reference"][1], 1e-5, "grad")


def test_bad_input_messages():
    image, contexts, depth, K, poses = _scene()
    inv = [geometry.depth2inv(depth)]
    crit = MultiViewPhotometricLoss()
    with pytest.raises(ValueError, match="one pose per context frame"):
        crit(image, contexts, inv, K, poses[:1])
    with pytest.raises(ValueError, match=r"context 1 has shape \(2, 3, 24, 39\)"):
        crit(image, [contexts[0], contexts[1][..., :39]], inv, K, poses)
    with pytest.raises(ValueError, match=r"K must be \[B,3,3\]"):
        crit(image, contexts, inv, K[:, :2], poses)
    with pytest.raises(ValueError, match=r"inverse depth of scale 0 must be \[B,1,h,w\]"):
        crit(image, contexts, [inv[0][:1]], K, poses)
    bad = inv[0].clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(FloatingPointError, match=r"not finite \(NaN/inf\) at scale\(s\) \[1\]"):
        crit(image, contexts, [inv[0], bad], K, poses)


def test_smoothness_prefers_smooth_depth_and_respects_edges():
    img = torch.zeros(1, 3, 8, 8)
    flat = torch.ones(1, 1, 8, 8)
    noisy = flat + 0.3 * torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert smoothness_loss([flat], [img]) == 0
    assert smoothness_loss([noisy], [img]) > 0
    edge_img = img.clone()
    edge_img[..., 4:] = 1.0  # an image edge where the depth edge is
    step = flat.clone()
    step[..., 4:] = 2.0
    assert smoothness_loss([step], [edge_img]) < smoothness_loss([step], [img])


def test_velocity_loss_pins_the_translation_scale():
    """Photometric terms are blind to a global scale of depth and translation;
    only the velocity term can tell the scaled solutions apart."""
    image, contexts, depth, K, poses = _scene(tz=-0.3)
    photo = MultiViewPhotometricLoss(num_scales=1, smooth_weight=0.0)
    vel = VelocityLoss()
    gt = translation_norms(poses=poses)
    losses = {}
    for s in (0.5, 1.0, 2.0):
        scaled = [torch.cat([T[:, :3, :3], T[:, :3, 3:] * s], 2) for T in poses]
        scaled = [torch.cat([T, poses[0][:, 3:]], 1) for T in scaled]
        p = photo(image, contexts, [geometry.depth2inv(depth * s)], K, scaled)["loss"]
        losses[s] = (float(p), float(vel(scaled, gt)))
    assert abs(losses[0.5][0] - losses[1.0][0]) < 1e-4 and abs(losses[2.0][0] - losses[1.0][0]) < 1e-4
    assert losses[1.0][1] < 1e-6 < losses[0.5][1] and losses[1.0][1] < losses[2.0][1]
    speed = torch.full((2,), 3.0)
    dt = torch.tensor([[0.1, -0.1], [0.1, -0.1]])
    assert_close(translation_norms(speed=speed, dt=dt), torch.full((2, 2), 0.3), 1e-6, "speed x dt")
    with pytest.raises(ValueError, match=r"gt_norms must be \[B, 2\]"):
        vel(poses, gt[:, :1])


@pytest.mark.parametrize("method", ["l1", "berhu"])
def test_supervised_loss(method):
    gt = torch.tensor([[[[2.0, 0.0], [4.0, 0.0]]]])
    pred = torch.tensor([[[[0.5, 9.0], [0.25, 9.0]]]], requires_grad=True)  # exact where gt > 0
    crit = SupervisedLoss(method)
    assert float(crit(pred, gt).detach()) == 0.0
    off = crit(pred + 0.1, gt)
    # every |diff| is 0.1 > c = 0.2 * max|diff| = 0.02: berHu gives (d^2 + c^2) / 2c
    want = 0.1 if method == "l1" else (0.01 + 0.02 ** 2) / 0.04
    assert abs(float(off.detach()) - want) < 1e-6
    off.backward()
    assert pred.grad[0, 0, :, 1].eq(0).all()  # no ground truth, no gradient
    with pytest.raises(ValueError, match="method must be"):
        SupervisedLoss("l2")


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_gradients_flow_to_depth_and_pose_networks(backend):
    """The whole self-supervised objective, end to end through both networks."""
    from packnet import models
    torch.manual_seed(0)
    depth_net, pose_net = models.PackNetSlim01().train(), models.PoseNet(nb_ref_imgs=2).train()
    image, contexts, _, K, _ = _scene(B=1, H=32, W=64)
    with packops.use_backend(backend):
        inv_depths = depth_net(image)
        vec = pose_net(image, contexts)
        poses = [geometry.pose_vec2mat(vec[:, j]) for j in range(2)]
        loss = MultiViewPhotometricLoss()(image, contexts, inv_depths, K, poses)["loss"]
        loss = loss + VelocityLoss()(poses, torch.full((1, 2), 0.3))
        loss.backward()
    for name, net in (("depth", depth_net), ("pose", pose_net)):
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(int(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads), name


# ------------------------------------------------------- out-of-view masking
def _brute_force(image, contexts, inv_depths, K, poses, automask):
    """mask_out_of_view by hand, per scale and pixel, with the reference ops:
    the minimum over the warps that land inside (and the unwarped frames),
    averaged over the pixels that have a candidate."""
    from packnet.geometry import inv2depth
    from packnet.losses import _resize
    H, W = image.shape[-2:]
    per_scale = []
    for inv in inv_depths:
        depth = inv2depth(_resize(inv, (H, W), "nearest"))
        cands, inside = [], []
        for c, T in zip(contexts, poses):
            warped, mask = packops.reproject_reference(c, depth, K, T, return_mask=True)
            cands.append(packops.photometric_loss_reference(warped, image))
            inside.append(mask > 0)
        if automask:
            cands += [packops.photometric_loss_reference(c, image) for c in contexts]
            inside += [torch.ones_like(inside[0]) for _ in contexts]
        cand, ok = torch.cat(cands, 1), torch.cat(inside, 1)
        best = torch.where(ok, cand, float("inf")).min(1)[0]
        valid = ok.any(1)
        per_scale.append(best[valid].mean())
    return sum(per_scale) / len(per_scale)


@pytest.mark.parametrize("automask", [True, False])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "per-call"])
def test_out_of_view_warps_are_no_candidates(automask, fused):
    """A translation large enough that the warps leave the frame at one side:
    the masked loss is the brute-force minimum over the warps that land
    inside, on both paths. Without automask it differs from the unmasked
    loss (pixels that no warp reaches leave the mean; with automask, the
    zeros read outside rarely win the minimum on this textured image)."""
    image, contexts, _, K, poses = _scene(tz=-0.3)
    poses = [geometry.pose_vec2mat(torch.tensor([[1.5 * s, 0.0, -0.3 * s, 0, 0, 0]] * 2))
             for s in (1, -1)]
    inv = [torch.full((2, 1, 24, 40), 0.2), torch.full((2, 1, 12, 20), 0.25)]
    masked = MultiViewPhotometricLoss(num_scales=2, automask=automask, fused=fused,
                                      mask_out_of_view=True, smooth_weight=0.0)
    plain = MultiViewPhotometricLoss(num_scales=2, automask=automask, fused=fused,
                                     smooth_weight=0.0)
    with packops.use_backend("reference"):
        got = masked(image, contexts, inv, K, poses)["photometric"]
        unmasked = plain(image, contexts, inv, K, poses)["photometric"]
    want = _brute_force(image, contexts, inv, K, poses, automask)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    if not automask:
        assert abs(float(got) - float(unmasked)) > 1e-3


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "per-call"])
def test_masking_changes_nothing_when_every_warp_lands_inside(fused):
    """Small motion, every pixel's warp inside both frames: the masked loss
    and its gradient equal the unmasked ones."""
    image, contexts, _, K, poses = _scene(tz=-0.05)
    # both context cameras behind the target one: every point projects closer
    # to the centre, inside the frame
    poses = [geometry.pose_vec2mat(torch.tensor([[0.0, 0.0, 0.5 * s, 0, 0, 0]] * 2))
             for s in (1, 2)]
    inv = torch.full((2, 1, 24, 40), 0.05, requires_grad=True)
    out = {}
    for mask in (False, True):
        loss = MultiViewPhotometricLoss(num_scales=1, fused=fused, mask_out_of_view=mask)
        for c, T in zip(contexts, poses):  # the premise: every warp lands inside
            _, inside = packops.reproject(c, 1 / inv.detach(), K, T, return_mask=True)
            assert bool(inside.min() > 0)
        value = loss(image, contexts, [inv], K, poses)["loss"]
        out[mask] = (value, torch.autograd.grad(value, inv)[0])
    torch.testing.assert_close(out[True][0], out[False][0], rtol=0, atol=0)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=0, atol=0)


def test_masking_keeps_a_nan_visible():
    """A NaN in a pixel that has candidates still reaches the loss (the
    trainer's finiteness check must see it), masked or not."""
    image, contexts, _, K, poses = _scene()
    image = image.clone()
    image[0, :, 5, 5] = float("nan")
    inv = torch.full((2, 1, 24, 40), 0.1)
    loss = MultiViewPhotometricLoss(num_scales=1, mask_out_of_view=True)
    assert torch.isnan(loss(image, contexts, [inv], K, poses)["photometric"])
