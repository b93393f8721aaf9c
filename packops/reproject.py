"""Reprojection warp (view synthesis): reference, backends, registration, public op.

reproject(image, depth, K, T, K_src=None, return_mask=False) as DESIGN.md
defines it. The geometry folds into one 3x4 matrix per batch element,

    P = K_src [R K^-1 | t]        p = depth * P[:, :3] [u, v, 1] + P[:, 3].

Backends:
  reference  grid + K^-1 + transform + project + grid_sample (autograd by PyTorch)
  cpu, cuda  packops._C: packops::reproject_fwd / reproject_bwd take K, T and
             K_src themselves and fold P inside (csrc/include/packops/reproject.h),
             so a CUDA call is one launch forward and two backward, with the
             gradients to K, T and K_src reduced and chained on the device.
  triton     packops::reproject_*_triton take P, folded here in PyTorch
             (inv_ex: no device-host sync); autograd carries the P gradient
             on to K, T and K_src.
No point cloud, grid or coordinate tensor is ever stored by the fused backends.
"""
import torch
import torch.nn.functional as F

from . import _checks, _dispatch, _ext

_ALL = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Keyed by the image's dtype; the geometry runs in float32 (float64 for float64 images).
DTYPES = {"reference": _ALL, "cpu": (torch.float32, torch.float64), "triton": _ALL, "cuda": _ALL}

MIN_Z = 1e-5


# ---------------------------------------------------------------- reference
def _rt(T):
    """T: [B,4,4] or [B,3,4] -> R [B,3,3], t [B,3,1]."""
    return T[:, :3, :3], T[:, :3, 3:]


def reproject_reference(image, depth, K, T, K_src=None, return_mask=False):
    """image: [B,C,Hs,Ws]; depth: [B,1,H,W]; K, K_src: [B|1,3,3]; T: [B|1,4,4|3,4].

    PackNet-SfM's reconstruct -> project -> grid_sample(zeros, align_corners=True).
    """
    B, _, H, W = depth.shape
    Hs, Ws = image.shape[-2:]
    K_src = K if K_src is None else K_src
    dt = depth.dtype
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dt, device=depth.device),
                            torch.arange(W, dtype=dt, device=depth.device), indexing="ij")
    q = torch.stack([xs, ys, torch.ones_like(xs)]).view(1, 3, H * W)
    X = (torch.linalg.inv(K.to(dt)) @ q) * depth.view(B, 1, H * W)   # camera points
    R, t = _rt(T.to(dt))
    p = K_src.to(dt) @ (R @ X + t)                                     # source pixels, homogeneous
    z = p[:, 2].clamp(min=MIN_Z)
    x, y = p[:, 0] / z, p[:, 1] / z
    grid = torch.stack([2 * x / (Ws - 1) - 1, 2 * y / (Hs - 1) - 1], -1).view(B, H, W, 2)
    out = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="zeros",
                        align_corners=True)
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
    M = R @ torch.linalg.inv_ex(K).inverse  # no error check: no device-host sync
    n = max(M.shape[0], t.shape[0])
    return K_src @ torch.cat([M.expand(n, 3, 3), t.expand(n, 3, 1)], dim=2)


# ------------------------------------------------------------ triton ops
def _triton():
    from ._triton import reproject

    return reproject


@torch.library.custom_op("packops::reproject_fwd_triton", mutates_args=())
def _reproject_fwd_triton(image: torch.Tensor, depth: torch.Tensor, P: torch.Tensor,
                          with_mask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _triton().forward(image, depth, P, with_mask)


@torch.library.custom_op("packops::reproject_bwd_triton", mutates_args=())
def _reproject_bwd_triton(grad: torch.Tensor, image: torch.Tensor, depth: torch.Tensor,
                          P: torch.Tensor, need_image: bool, need_depth: bool,
                          need_P: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _triton().backward(grad, image, depth, P, need_image, need_depth, need_P)


# ------------------------------------------- fake kernels and autograd
def _out_fake(image, depth, with_mask):
    B, C = image.shape[:2]
    H, W = depth.shape[-2:]
    mask = image.new_empty((B, 1, H, W)) if with_mask else image.new_empty(0)
    return image.new_empty((B, C, H, W)), mask


def _like_or_empty(need, t):
    return t.new_empty(t.shape) if need and t is not None else (
        t.new_empty(0) if t is not None else None)


def _triton_fwd_fake(image, depth, P, with_mask):
    return _out_fake(image, depth, with_mask)


def _triton_bwd_fake(grad, image, depth, P, need_image, need_depth, need_P):
    return (_like_or_empty(need_image, image), _like_or_empty(need_depth, depth),
            _like_or_empty(need_P, P))


def _cpp_fwd_fake(image, depth, K, T, K_src, with_mask):
    return _out_fake(image, depth, with_mask)


def _cpp_bwd_fake(grad, image, depth, K, T, K_src, need_image, need_depth, need_K, need_T,
                  need_K_src):
    return (_like_or_empty(need_image, image), _like_or_empty(need_depth, depth),
            _like_or_empty(need_K, K), _like_or_empty(need_T, T),
            K_src.new_empty(K_src.shape) if need_K_src and K_src is not None else K.new_empty(0))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:-1])  # every tensor input; with_mask is last


def _make_backward(bwd_op):
    def backward(ctx, grad_out, grad_mask):  # the mask is piecewise constant: no gradient
        saved = ctx.saved_tensors
        need = list(ctx.needs_input_grad[:len(saved)])
        grads = bwd_op(grad_out, *saved, *need)
        return tuple(g if n else None for g, n in zip(grads, need)) + (None,)

    return backward


def _register(suffix, fwd_fake, bwd_fake):
    torch.library.register_fake(f"packops::reproject_fwd{suffix}", fwd_fake)
    torch.library.register_fake(f"packops::reproject_bwd{suffix}", bwd_fake)
    torch.library.register_autograd(
        f"packops::reproject_fwd{suffix}",
        _make_backward(getattr(torch.ops.packops, f"reproject_bwd{suffix}").default),
        setup_context=_setup_context)


_register("_triton", _triton_fwd_fake, _triton_bwd_fake)
if _ext.has_cpu_ext():
    _register("", _cpp_fwd_fake, _cpp_bwd_fake)


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


def reproject(image, depth, K, T, K_src=None, return_mask=False):
    """Warp a source image into the target view (view synthesis).

    image: [B,C,Hs,Ws] source frame (Hs, Ws >= 2; may differ from H, W)
    depth: [B,1,H,W]   target depth (metric, > 0)
    K:     [B,3,3]     target intrinsics;  K_src: [B,3,3] source intrinsics (default K)
    T:     [B,4,4] or [B,3,4] target -> source transform
    (K, K_src and T may have batch 1, broadcast to B.)
    Returns out [B,C,H,W] (dtype of image), and with return_mask=True also a
    [B,1,H,W] mask that is 1 where the sample point lies inside the image.

    Bilinear, align_corners=True semantics, zeros outside; z is clamped at
    1e-5, so points behind the camera land far outside and read zeros.
    Differentiable with respect to image, depth, T, K and K_src; gradients
    that are not needed cost nothing. Depth <= 0 is defined: such points
    project behind the camera (z clamped at 1e-5) and read zeros. A pixel
    whose projection is not finite (NaN or inf depth) gives NaN, as
    grid_sample does, with mask 0; the fused backends pass no gradient
    through it (the reference passes NaN).
    """
    _check_inputs(image, depth, K, T, K_src)
    backend = _dispatch.resolve("reproject", image, DTYPES)
    if backend == "reference":
        return reproject_reference(image, depth, K, T, K_src, return_mask)
    geometry = torch.float64 if image.dtype == torch.float64 else torch.float32
    K, T, depth = K.to(geometry), T.to(geometry), depth.to(geometry)
    K_src = None if K_src is None else K_src.to(geometry)
    if backend == "triton":
        P = projection_matrix(K, T, K_src).expand(image.shape[0], 3, 4).contiguous()
        out, mask = torch.ops.packops.reproject_fwd_triton(image, depth, P, return_mask)
    else:
        out, mask = torch.ops.packops.reproject_fwd(image, depth, K, T, K_src, return_mask)
    return (out, mask) if return_mask else out
