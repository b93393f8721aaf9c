"""Self-supervised losses: multi-view photometric (min-reprojection, automask),
edge-aware smoothness, the velocity loss that fixes metric scale, and an
optional supervised term. Built on packops.reproject and packops.photometric_loss,
so they run on whichever packops backend is selected (PACKOPS_BACKEND=reference too).
"""
import torch
import torch.nn.functional as F

import packops

from .geometry import depth2inv, inv2depth, scale_intrinsics

__all__ = ["MultiViewPhotometricLoss", "VelocityLoss", "SupervisedLoss", "smoothness_loss",
           "translation_norms"]


UPSAMPLE_MODES = ("nearest", "bilinear")


def _resize(x, size, mode="bilinear"):
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def smoothness_loss(inv_depths, images):
    """Edge-aware smoothness of mean-normalised inverse depth, summed over
    scales with weight 1/2^i. inv_depths[i]: [B,1,h,w]; images[i]: [B,3,h,w]."""
    total = 0.0
    for i, (d, img) in enumerate(zip(inv_depths, images)):
        d = d / d.mean(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        dx, dy = (d[..., :, :-1] - d[..., :, 1:]).abs(), (d[..., :-1, :] - d[..., 1:, :]).abs()
        wx = torch.exp(-(img[..., :, :-1] - img[..., :, 1:]).abs().mean(1, keepdim=True))
        wy = torch.exp(-(img[..., :-1, :] - img[..., 1:, :]).abs().mean(1, keepdim=True))
        total = total + ((dx * wx).mean() + (dy * wy).mean()) / 2 ** i
    return total


class MultiViewPhotometricLoss(torch.nn.Module):
    """Photometric loss over context frames and decoder scales.

    For every scale i and context frame j, the context image is warped into
    the target view with the depth of scale i and pose j (packops.reproject)
    and scored with packops.photometric_loss. With automask, the unwarped
    context frames are scored too, so pixels that do not change between
    frames (a static camera, objects moving with it) can pick those instead.
    Per pixel the minimum over all candidates is taken, then the mean; scales
    are averaged. Smoothness (weight `smooth_weight`) is added.

    upsample_depth_maps=True (default) upsamples every inverse depth map to
    the input resolution and warps at full resolution, with
    upsample_mode="nearest" (default: the original SfmModel's interpolation)
    or "bilinear"; False downscales images and intrinsics to each depth map's
    size instead (bilinear).

    mask_out_of_view=True: a warped context frame is a candidate at a pixel
    only where its warp lands inside that frame (reproject's mask); a pixel
    with no candidate (none inside, and no automask candidates) leaves the
    mean. Without it, a warp that lands outside reads zeros and competes in
    the minimum like any other candidate.

    fused=True computes the whole term for a batch with one reproject call
    and one photometric_loss call for all scales and context frames (plus one
    for the automask candidates, shared by all scales when upsampling);
    fused=False is the per-scale, per-frame composition. Both give the same
    value (to float tolerance).
    """

    def __init__(self, num_scales=4, ssim_weight=0.85, C1=1e-4, C2=9e-4, automask=True,
                 clip_loss=0.0, smooth_weight=0.001, upsample_depth_maps=True, fused=True,
                 check_finite=True, upsample_mode="nearest", mask_out_of_view=False):
        super().__init__()
        self.mask_out_of_view = bool(mask_out_of_view)
        self.num_scales = num_scales
        self.alpha, self.C1, self.C2 = ssim_weight, C1, C2
        self.automask, self.clip_loss = automask, clip_loss
        self.smooth_weight = smooth_weight
        self.upsample_depth_maps, self.fused = upsample_depth_maps, fused
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"MultiViewPhotometricLoss: upsample_mode must be one of "
                             f"{UPSAMPLE_MODES}, got {upsample_mode!r}")
        self.upsample_mode = upsample_mode
        self.check_finite = check_finite

    def extra_repr(self):
        return (f"num_scales={self.num_scales}, ssim_weight={self.alpha}, automask={self.automask}, "
                f"clip_loss={self.clip_loss}, smooth_weight={self.smooth_weight}, "
                f"upsample_depth_maps={self.upsample_depth_maps}, "
                f"upsample_mode={self.upsample_mode!r}, fused={self.fused}, "
                f"mask_out_of_view={self.mask_out_of_view}")

    # ------------------------------------------------------------ checks
    def _check(self, image, contexts, inv_depths, K, poses):
        if not isinstance(contexts, (list, tuple)) or not isinstance(poses, (list, tuple)):
            raise TypeError("MultiViewPhotometricLoss: contexts and poses must be lists")
        if len(contexts) == 0 or len(contexts) != len(poses):
            raise ValueError(f"MultiViewPhotometricLoss: need one pose per context frame and at "
                             f"least one frame, got {len(contexts)} contexts and {len(poses)} poses")
        if image.dim() != 4:
            raise ValueError(f"MultiViewPhotometricLoss: image must be [B,3,H,W], got "
                             f"{tuple(image.shape)}")
        for j, (c, T) in enumerate(zip(contexts, poses)):
            if c.shape != image.shape:
                raise ValueError(f"MultiViewPhotometricLoss: context {j} has shape "
                                 f"{tuple(c.shape)}, the target image {tuple(image.shape)}")
            if T.dim() != 3 or T.shape[0] not in (1, image.shape[0]) or T.shape[1:] not in ((4, 4), (3, 4)):
                raise ValueError(f"MultiViewPhotometricLoss: pose {j} must be [B,4,4] or [B,3,4], "
                                 f"got {tuple(T.shape)}")
        if K.dim() != 3 or K.shape[1:] != (3, 3) or K.shape[0] not in (1, image.shape[0]):
            raise ValueError(f"MultiViewPhotometricLoss: K must be [B,3,3], got {tuple(K.shape)}")
        if len(inv_depths) < 1:
            raise ValueError("MultiViewPhotometricLoss: no inverse depth maps")
        B, _, H, W = image.shape
        for i, d in enumerate(inv_depths):
            if d.dim() != 4 or d.shape[0] != B or d.shape[1] != 1:
                raise ValueError(f"MultiViewPhotometricLoss: inverse depth of scale {i} must be "
                                 f"[B,1,h,w] with B={B}, got {tuple(d.shape)}")
        if self.check_finite:  # one device-host sync for all scales
            finite = torch.stack([torch.isfinite(d).all() for d in inv_depths])
            if not bool(finite.all()):
                bad = [i for i, ok in enumerate(finite.tolist()) if not ok]
                raise FloatingPointError(f"MultiViewPhotometricLoss: the depth network's inverse "
                                         f"depth is not finite (NaN/inf) at scale(s) {bad}")

    # ------------------------------------------------------------- terms
    def _photo(self, pred, target):
        return packops.photometric_loss(pred, target, self.alpha, self.C1, self.C2)

    def _clip(self, loss):
        if self.clip_loss <= 0:
            return loss
        limit = (loss.mean() + self.clip_loss * loss.std()).detach()  # no sync
        return torch.minimum(loss, limit)

    def _scale_inputs(self, image, contexts, inv_depth, K):
        """(target, contexts, depth, K) at the resolution the warp runs at."""
        H, W = image.shape[-2:]
        if self.upsample_depth_maps:
            return (image, contexts, inv2depth(_resize(inv_depth, (H, W), self.upsample_mode)),
                    K)
        h, w = inv_depth.shape[-2:]
        Ks = scale_intrinsics(K, w / W, h / H)
        return (_resize(image, (h, w)), [_resize(c, (h, w)) for c in contexts], inv2depth(inv_depth), Ks)

    def _warp(self, image, depth, K, T):
        """(the warped image, a [B,1,H,W] mask of the pixels whose warp lands
        inside it, or None without mask_out_of_view)."""
        if not self.mask_out_of_view:
            return packops.reproject(image, depth, K, T), None
        return packops.reproject(image, depth, K, T, return_mask=True)

    @staticmethod
    def _out_of_view(photo, inside):
        """photo where the warp landed inside, +inf (never the minimum) elsewhere."""
        return photo if inside is None else torch.where(inside > 0, photo, float("inf"))

    @staticmethod
    def _mean(best, valid, dims=None):
        """Mean of the per-pixel minimum `best` over the pixels with a candidate
        (valid, or all when None); NaN in a valid pixel still propagates."""
        if valid is None:
            return best.mean() if dims is None else best.mean(dim=dims)
        total = torch.where(valid, best, 0.0)
        if dims is None:
            return total.sum() / valid.sum().clamp(min=1)
        return total.sum(dim=dims) / valid.sum(dim=dims).clamp(min=1)

    def _photometric_per_call(self, image, contexts, inv_depths, K, poses):
        per_scale = []
        for inv in inv_depths:
            tgt, ctxs, depth, Ks = self._scale_inputs(image, contexts, inv, K)
            cands, inside = [], []
            for c, T in zip(ctxs, poses):
                warped, mask = self._warp(c, depth, Ks, T)
                cands.append(self._out_of_view(self._clip(self._photo(warped, tgt)), mask))
                inside.append(mask)
            valid = None
            if self.automask:
                cands += [self._clip(self._photo(c, tgt)) for c in ctxs]
            elif self.mask_out_of_view:
                valid = torch.cat(inside, 1).amax(1) > 0
            per_scale.append(self._mean(torch.cat(cands, 1).min(1)[0], valid))
        return sum(per_scale) / len(per_scale)

    def _photometric_fused(self, image, contexts, inv_depths, K, poses):
        if not self.upsample_depth_maps:  # sizes differ per scale: batch per scale instead
            per_scale = []
            for inv in inv_depths:
                tgt, ctxs, depth, Ks = self._scale_inputs(image, contexts, inv, K)
                per_scale.append(self._min_mean(tgt, ctxs, [depth], Ks, poses))
            return sum(per_scale) / len(per_scale)
        H, W = image.shape[-2:]
        depths = [inv2depth(_resize(d, (H, W), self.upsample_mode)) for d in inv_depths]
        return self._min_mean(image, contexts, depths, K, poses)

    def _min_mean(self, tgt, ctxs, depths, K, poses):
        """Mean over scales of the per-pixel min over candidates, all scales and
        frames in one reproject call and one photometric_loss call."""
        B = tgt.shape[0]
        S, N = len(depths), len(ctxs)
        # batch layout: (frame j, scale s, b)
        images = torch.cat([c.unsqueeze(0).expand(S, *c.shape).reshape(S * B, *c.shape[1:])
                            for c in ctxs])
        depth = torch.cat(depths).repeat(N, 1, 1, 1)
        Ts = torch.cat([T.expand(B, *T.shape[1:]).repeat(S, 1, 1) for T in poses])
        Kb = K.expand(B, 3, 3).repeat(S * N, 1, 1)
        warped, inside = self._warp(images, depth, Kb, Ts)
        target = tgt.unsqueeze(0).expand(S * N, *tgt.shape).reshape(S * N * B, *tgt.shape[1:])
        photo = self._photo(warped, target).view(N, S, B, 1, *tgt.shape[-2:])
        if self.clip_loss > 0:
            photo = torch.stack([torch.stack([self._clip(photo[j, s]) for s in range(S)])
                                 for j in range(N)])
        valid = None
        if inside is not None:
            inside = inside.view(N, S, B, 1, *tgt.shape[-2:])
            photo = self._out_of_view(photo, inside)
            if not self.automask:  # [S, B, 1, H, W]: a warp of some frame lands inside
                valid = inside.amax(0) > 0
        cands = photo.transpose(0, 1).reshape(S, N * B, *photo.shape[3:])  # (s, j*b)
        if self.automask:  # the unwarped frames are the same candidates at every scale
            un = self._photo(torch.cat(list(ctxs)), tgt.repeat(N, 1, 1, 1)).view(N, B, 1, *tgt.shape[-2:])
            if self.clip_loss > 0:
                un = torch.stack([self._clip(un[j]) for j in range(N)])
            cands = torch.cat([cands.view(S, N, B, *cands.shape[2:]),
                               un.unsqueeze(0).expand(S, *un.shape)], 1)
        else:
            cands = cands.view(S, N, B, *cands.shape[2:])
        # min over the candidate axis (frames and unwarped frames), mean per scale
        return self._mean(cands.min(1)[0], valid, dims=(1, 2, 3, 4)).mean()

    def forward(self, image, contexts, inv_depths, K, poses):
        """image: [B,3,H,W] target; contexts: list of [B,3,H,W]; inv_depths:
        list (finest first) of [B,1,h_i,w_i] or one tensor; K: [B,3,3] of
        `image`; poses: list of [B,4,4] target -> context.

        Returns a dict: loss (photometric + smooth_weight * smoothness),
        photometric, smoothness.
        """
        if torch.is_tensor(inv_depths):
            inv_depths = [inv_depths]
        inv_depths = list(inv_depths)[: self.num_scales]
        self._check(image, contexts, inv_depths, K, poses)
        photo = (self._photometric_fused if self.fused else self._photometric_per_call)(
            image, contexts, inv_depths, K, poses)
        images = [_resize(image, d.shape[-2:]) for d in inv_depths]
        smooth = smoothness_loss(inv_depths, images) / len(inv_depths)
        return {"loss": photo + self.smooth_weight * smooth, "photometric": photo,
                "smoothness": smooth}


def translation_norms(poses=None, speed=None, dt=None):
    """Ground-truth translation magnitudes [B, n_context], from ground-truth
    poses (list of [B,4,4] target -> context) or from speed [B] (m/s) times
    the time between frames dt [B, n_context] (s)."""
    if poses is not None:
        return torch.stack([T[:, :3, 3].norm(dim=1) for T in poses], 1)
    if speed is None or dt is None:
        raise ValueError("translation_norms: give ground-truth poses, or speed and dt")
    return speed.reshape(-1, 1) * dt.abs()


class VelocityLoss(torch.nn.Module):
    """weight * mean over context frames (and batch) of | ||t_pred|| - ||t_gt|| |.

    Ties the predicted translation to the distance actually travelled, which
    fixes the scale of the depth that the photometric loss leaves free."""

    def __init__(self, weight=0.1):
        super().__init__()
        self.weight = weight

    def extra_repr(self):
        return f"weight={self.weight}"

    def forward(self, poses, gt_norms):
        """poses: list of [B,4,4] predicted; gt_norms: [B, len(poses)]."""
        if gt_norms.dim() != 2 or gt_norms.shape[1] != len(poses):
            raise ValueError(f"VelocityLoss: gt_norms must be [B, {len(poses)}], got "
                             f"{tuple(gt_norms.shape)}")
        pred = torch.stack([T[:, :3, 3].norm(dim=1) for T in poses], 1)
        return self.weight * (pred - gt_norms.to(pred)).abs().mean()


class SupervisedLoss(torch.nn.Module):
    """L1 or berHu on inverse depth where the ground truth is > 0, averaged
    over scales (predictions are upsampled to the ground truth's size)."""

    def __init__(self, method="l1", weight=1.0):
        super().__init__()
        if method not in ("l1", "berhu"):
            raise ValueError(f"SupervisedLoss: method must be 'l1' or 'berhu', got {method!r}")
        self.method, self.weight = method, weight

    def forward(self, inv_depths, depth_gt):
        if torch.is_tensor(inv_depths):
            inv_depths = [inv_depths]
        gt = depth2inv(depth_gt)
        valid = depth_gt > 0
        # masked means, not diff[valid]: a boolean index has a data-dependent
        # size, which a GPU step would stop and wait for; no valid pixel gives 0
        count = valid.sum().clamp(min=1)
        total = 0.0
        for d in inv_depths:
            diff = torch.where(valid, (_resize(d, depth_gt.shape[-2:]) - gt).abs(), 0.0)
            if self.method == "berhu":
                c = (0.2 * diff.amax()).clamp(min=1e-6).detach()
                diff = torch.where(diff <= c, diff, (diff ** 2 + c ** 2) / (2 * c))
            total = total + diff.sum() / count
        return self.weight * total / len(inv_depths)
