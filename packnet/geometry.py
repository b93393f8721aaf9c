"""Camera geometry for self-supervised depth: batched and differentiable.

Conventions (PackNet-SfM's): a pose is the rigid transform that maps points
in the target camera's frame to a context (source) camera's frame, [B,4,4];
the network's pose vector is [tx, ty, tz, rx, ry, rz] with R = Rx @ Ry @ Rz.
Depth is metric, inverse depth is 1 / depth, and 0 marks "no depth" both ways.
"""
import torch
import torch.nn.functional as F

import packops

__all__ = ["inv2depth", "depth2inv", "euler2mat", "pose_vec2mat", "invert_pose",
           "scale_intrinsics"]


def inv2depth(inv_depth):
    """[...] inverse depth -> depth; values <= 0 map to 0 (no depth)."""
    depth = 1.0 / inv_depth.clamp(min=1e-6)
    return torch.where(inv_depth > 0, depth, torch.zeros_like(depth))


def depth2inv(depth):
    """[...] depth -> inverse depth; values <= 0 map to 0 (no depth)."""
    inv = 1.0 / depth.clamp(min=1e-6)
    return torch.where(depth > 0, inv, torch.zeros_like(inv))


def euler2mat(angles):
    """angles: [B,3] (rx, ry, rz) in radians -> R = Rx @ Ry @ Rz: [B,3,3]."""
    if angles.dim() != 2 or angles.shape[1] != 3:
        raise ValueError(f"euler2mat: angles must be [B,3], got shape {tuple(angles.shape)}")
    x, y, z = angles.unbind(1)
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    cx, sx, cy, sy, cz, sz = x.cos(), x.sin(), y.cos(), y.sin(), z.cos(), z.sin()
    Rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).view(-1, 3, 3)
    Ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).view(-1, 3, 3)
    Rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).view(-1, 3, 3)
    return Rx @ Ry @ Rz


def pose_vec2mat(vec):
    """vec: [B,6] (translation, euler xyz) -> [B,4,4] target -> context transform."""
    if vec.dim() != 2 or vec.shape[1] != 6:
        raise ValueError(f"pose_vec2mat: vec must be [B,6], got shape {tuple(vec.shape)}")
    top = torch.cat([euler2mat(vec[:, 3:]), vec[:, :3, None]], dim=2)
    # [0, 0, 0, 1] made on the device (new_tensor would copy from the host every call)
    bottom = F.pad(torch.zeros_like(vec[:, None, :3]), (0, 1), value=1.0)
    return torch.cat([top, bottom], dim=1)


def invert_pose(T):
    """T: [B,4,4] rigid -> T^-1 = [R^T | -R^T t] (exact for rigid transforms)."""
    if T.dim() != 3 or T.shape[1:] != (4, 4):
        raise ValueError(f"invert_pose: T must be [B,4,4], got shape {tuple(T.shape)}")
    Rt = T[:, :3, :3].transpose(1, 2)
    top = torch.cat([Rt, -Rt @ T[:, :3, 3:]], dim=2)
    return torch.cat([top, T[:, 3:]], dim=1)


def scale_intrinsics(K, sx, sy=None):
    """K: [B,3,3] for an image resized by (sx, sy) (pixel centres at integers)."""
    return packops.scale_intrinsics(K, sx, sx if sy is None else sy)

