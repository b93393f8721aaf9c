"""Reprojection warp (view synthesis): reference, registration, public op.

reproject(image, depth, K, T, K_src=None, return_mask=False) as
docs/design.md defines it. The geometry folds into one 3x4 matrix per batch
element,

    P = K_src [R K^-1 | t]        p = depth * P[:, :3] [u, v, 1] + P[:, 3].

Backends:
  reference  grid + K^-1 + transform + project + grid_sample (autograd by PyTorch)
  cpu, cuda  packops::reproject_fwd / reproject_bwd (csrc/ops/reproject.cpp):
             the launchers fold P themselves and chain the P gradient on to
             K, T and K_src (csrc/include/packops/reproject.h); on CUDA one
             launch forward and two backward
  triton     packops::reproject_*_triton, the same schema: P folded and the
             P gradient chained with PyTorch ops (projection_matrix,
             camera_grads below) around the Triton kernels
No point cloud, grid or coordinate tensor is ever stored by the fused backends.
"""
import math

import torch
import torch.nn.functional as F

from . import _checks, _dispatch, _library

MIN_Z = 1e-5


# ---------------------------------------------------------------- reference
def _rt(T):
    """T: [B,4,4] or [B,3,4] -> R [B,3,3], t [B,3,1]."""
    return T[:, :3, :3], T[:, :3, 3:]


def _inverse(K):
    """K^-1 of [B,3,3] without a device-host sync: NaN for a singular K (as the
    fused kernels give), not an error."""
    inv, info = torch.linalg.inv_ex(K)
    return torch.where((info != 0)[:, None, None], torch.full_like(inv, math.nan), inv)


def _geometry_dtype(dtype):
    """The dtype the geometry runs in, from the image's dtype on every backend
    (the dtype resolve() keys on): float64 for float64 images, else float32
    (so fp16/bf16 images work, and K^-1 is never taken in low precision).
    Depth, K and T of another dtype are converted to it; their gradients come
    back in their own dtypes."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def reproject_reference(image, depth, K, T, K_src=None, return_mask=False, padding_mode="zeros"):
    """image: [B,C,Hs,Ws]; depth: [B,1,H,W]; K, K_src: [B|1,3,3]; T: [B|1,4,4|3,4].

    PackNet-SfM's reconstruct -> project -> grid_sample(padding_mode, align_corners=True),
    with the geometry in float32 (float64 for a float64 image: _geometry_dtype).
    """
    B, _, H, W = depth.shape
    Hs, Ws = image.shape[-2:]
    K_src = K if K_src is None else K_src
    dt = _geometry_dtype(image.dtype)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dt, device=depth.device),
                            torch.arange(W, dtype=dt, device=depth.device), indexing="ij")
    q = torch.stack([xs, ys, torch.ones_like(xs)]).view(1, 3, H * W)
    X = (_inverse(K.to(dt)) @ q) * depth.to(dt).reshape(B, 1, H * W)   # camera points
    R, t = _rt(T.to(dt))
    p = K_src.to(dt) @ (R @ X + t)                                     # source pixels, homogeneous
    z = p[:, 2].clamp(min=MIN_Z)
    x, y = p[:, 0] / z, p[:, 1] / z
    grid = torch.stack([2 * x / (Ws - 1) - 1, 2 * y / (Hs - 1) - 1], -1).view(B, H, W, 2)
    if padding_mode == "border":
        # grid_sample's border clamp turns a coordinate that is not finite
        # into an edge pixel (a different one on CPU and CUDA for NaN; on CPU
        # it can also read out of bounds): give it finite coordinates (the
        # clamp to [-2, 2] changes nothing, border samples [-1, 1]) and keep
        # such a projection NaN, as zeros padding does
        lost = ~(torch.isfinite(x) & torch.isfinite(y)).view(B, 1, H, W)
        grid = torch.nan_to_num(grid.clamp(-2, 2), nan=0.0)
    out = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode=padding_mode,
                        align_corners=True)
    if padding_mode == "border":
        out = out.masked_fill(lost, math.nan)
    if not return_mask:
        return out
    inside = (x >= 0) & (x <= Ws - 1) & (y >= 0) & (y <= Hs - 1)
    return out, inside.view(B, 1, H, W).to(image.dtype)


def scale_intrinsics(K, sx, sy):
    """Intrinsics of an image resized by (sx, sy): K [...,3,3] -> [...,3,3].

    fx, fy (and skew) scale; cx = (cx + 0.5) sx - 0.5, cy likewise (pixel
    centres at integers). Differentiable in K.
    """
    _checks.tensor("scale_intrinsics", "K", K)
    if K.dim() < 2 or K.shape[-2:] != (3, 3):
        raise ValueError(f"packops.scale_intrinsics: K must be [...,3,3], got shape {tuple(K.shape)}")
    sx = _checks.finite_scalar("scale_intrinsics", "sx", sx)
    sy = _checks.finite_scalar("scale_intrinsics", "sy", sy)
    A = K.new_tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return A @ K


def projection_matrix(K, T, K_src=None):
    """P = K_src [R K^-1 | t]: [B|1,3,4] from K [B|1,3,3], T [B|1,4,4|3,4]."""
    K_src = K if K_src is None else K_src
    R, t = _rt(T)
    M = R @ _inverse(K)
    n = max(M.shape[0], t.shape[0])
    return K_src @ torch.cat([M.expand(n, 3, 3), t.expand(n, 3, 1)], dim=2)


def camera_grads(gP, K, T, K_src, need_K, need_T, need_K_src):
    """The gradients of K, T and K_src from gP = dL/dP [B,3,4], P = K_src [R K^-1 | t]
    (the PyTorch twin of unfold_grad + reduce_camera_grads in csrc/): summed
    over the batch where an input was broadcast, K's two roles added up when
    K_src is None; empty tensors where not needed."""
    def none():  # a new empty tensor each: custom-op outputs may not alias
        return K.new_empty(0)

    if not (need_K or need_T or need_K_src):
        return none(), none(), none()
    Ks = K if K_src is None else K_src
    R, t = _rt(T)
    Ki = _inverse(K)
    A = R @ Ki
    G, gv = gP[:, :, :3], gP[:, :, 3:]
    gKs = G @ A.transpose(1, 2) + gv @ t.transpose(1, 2)
    gA = Ks.transpose(1, 2) @ G
    gT = torch.cat([gA @ Ki.transpose(1, 2), Ks.transpose(1, 2) @ gv], 2)  # [dR | dt]
    if T.shape[1] == 4:  # the last row of a 4x4 transform does not enter P
        gT = torch.cat([gT, gT.new_zeros(gT.shape[0], 1, 4)], 1)
    Kit = Ki.transpose(1, 2)
    gK = -Kit @ (R.transpose(1, 2) @ gA) @ Kit
    if K_src is None:
        gK = gK + gKs

    def fit(g, like):
        return g.sum(0, keepdim=True) if like.shape[0] == 1 and g.shape[0] != 1 else g

    return (fit(gK, K) if need_K else none(), fit(gT, T) if need_T else none(),
            fit(gKs, K_src) if need_K_src and K_src is not None else none())


# ------------------------------------------------ fused op registration
def _fwd_fake(image, depth, K, T, K_src, with_mask, border):
    B, C = image.shape[:2]
    H, W = depth.shape[-2:]
    mask = image.new_empty((B, 1, H, W)) if with_mask else image.new_empty(0)
    return image.new_empty((B, C, H, W)), mask


def _bwd_fake(grad, image, depth, K, T, K_src, border, need_image, need_depth, need_K, need_T,
              need_K_src):
    def like(need, t):
        return t.new_empty(t.shape) if need else t.new_empty(0)
    gKs = K_src.new_empty(K_src.shape) if need_K_src and K_src is not None else K.new_empty(0)
    return (like(need_image, image), like(need_depth, depth), like(need_K, K), like(need_T, T),
            gKs)


REPROJECT = _library.fused_op(_library.FusedOp(
    # image: [B,C,Hs,Ws], depth: [B,1,H,W], K, K_src: [B|1,3,3], T: [B|1,3|4,4];
    # border: padding_mode "border" -> (out [B,C,H,W], mask [B,1,H,W] or empty)
    fwd="reproject_fwd(Tensor image, Tensor depth, Tensor K, Tensor T, Tensor? K_src, "
        "bool with_mask, bool border) -> (Tensor, Tensor)",
    bwd="reproject_bwd(Tensor grad, Tensor image, Tensor depth, Tensor K, Tensor T, "
        "Tensor? K_src, bool border, bool need_image, bool need_depth, bool need_K, "
        "bool need_T, bool need_K_src) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    saved=("image", "depth", "K", "T", "K_src"), params=("border",),
    grads=("image", "depth", "K", "T", "K_src"), triton="reproject"), _fwd_fake, _bwd_fake)


# ------------------------------------------------------------- public op
def _check_matrix(name, M, B, shapes):
    _checks.tensor("reproject", name, M)
    if M.dim() != 3 or tuple(M.shape[1:]) not in shapes or M.shape[0] not in (1, B):
        want = " or ".join(f"[B,{a},{b}]" for a, b in shapes)
        raise ValueError(f"packops.reproject: {name} must be {want} (or batch 1, broadcast) with "
                         f"B={B}, got shape {tuple(M.shape)}")


def _check_inputs(image, depth, K, T, K_src):
    _checks.tensor("reproject", "image", image, dim=4)
    _checks.tensor("reproject", "depth", depth, dim=4)
    B = image.shape[0]
    if depth.shape[1] != 1 or depth.shape[0] != B:
        raise ValueError(f"packops.reproject: depth must be [B,1,H,W] with the image's batch size "
                         f"B={B}, got shape {tuple(depth.shape)}")
    _checks.min_spatial("reproject", "image", image, 2)
    _check_matrix("K", K, B, ((3, 3),))
    _check_matrix("T", T, B, ((4, 4), (3, 4)))
    if K_src is not None:
        _check_matrix("K_src", K_src, B, ((3, 3),))
    named = [("image", image), ("depth", depth), ("K", K), ("T", T)]
    named += [("K_src", K_src)] if K_src is not None else []
    for name, t in named[1:]:
        if t.device != image.device:
            raise ValueError(f"packops.reproject: {name} must be on the image's device "
                             f"{image.device}, got {t.device}")


PADDING_MODES = ("zeros", "border")


@_dispatch.autocast_off
def reproject(image, depth, K, T, K_src=None, return_mask=False, padding_mode="zeros"):
    """Warp a source image into the target view (view synthesis).

    image: [B,C,Hs,Ws] source frame (Hs, Ws >= 2; may differ from H, W)
    depth: [B,1,H,W]   target depth (metric, > 0)
    K:     [B,3,3]     target intrinsics;  K_src: [B,3,3] source intrinsics (default K)
    T:     [B,4,4] or [B,3,4] target -> source transform
    (K, K_src and T may have batch 1, broadcast to B.)
    Returns out [B,C,H,W] (dtype of image), and with return_mask=True also a
    [B,1,H,W] mask that is 1 where the sample point lies inside the image.

    Bilinear, align_corners=True semantics; z is clamped at 1e-5, so points
    behind the camera land far outside. padding_mode "zeros" (PackNet-SfM's)
    reads zeros outside the image; "border" (monodepth2's) clamps the sample
    point into the image, as grid_sample does, so outside points repeat the
    edge pixels (and the gradient of the clamped coordinate is 0). The mask
    says whether the point itself fell inside, in both modes.
    Differentiable with respect to image, depth, T, K and K_src; gradients
    that are not needed cost nothing. Depth <= 0 is defined: such points
    project behind the camera (z clamped at 1e-5) and read zeros (border:
    the edge). A pixel whose projection is not finite (NaN or inf depth)
    gives NaN in both modes, as grid_sample does with zeros padding (its
    border clamp would hide it in an edge pixel: we do not), with mask 0; the
    fused backends pass no gradient through it (the reference passes NaN).
    """
    _check_inputs(image, depth, K, T, K_src)
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"packops.reproject: padding_mode must be 'zeros' or 'border', got "
                         f"{padding_mode!r}")
    backend = _dispatch.resolve("reproject", image)
    if backend == "reference":
        return reproject_reference(image, depth, K, T, K_src, return_mask, padding_mode)
    geometry = _geometry_dtype(image.dtype)
    K, T, depth = K.to(geometry), T.to(geometry), depth.to(geometry)
    K_src = None if K_src is None else K_src.to(geometry)
    out, mask = _library.kernel("reproject_fwd", backend)(image, depth, K, T, K_src, return_mask,
                                                          padding_mode == "border")
    return (out, mask) if return_mask else out
