"""reproject: bad input raises errors that name the argument and the shapes."""
import pytest
import torch

import packops

B = 2
img = torch.rand(B, 3, 6, 7)
dep = torch.rand(B, 1, 5, 6) + 1
K = torch.tensor([[5.0, 0, 3], [0, 5, 2], [0, 0, 1]]).expand(B, 3, 3)
T = torch.eye(4).expand(B, 4, 4)


def _args(**kw):
    args = {"image": img, "depth": dep, "K": K, "T": T}
    args.update(kw)
    return args


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
@pytest.mark.parametrize("kw,match", [
    ({"depth": torch.rand(B, 2, 5, 6)}, r"depth must be \[B,1,H,W\].*\(2, 2, 5, 6\)"),
    ({"depth": torch.rand(3, 1, 5, 6)}, r"depth must be \[B,1,H,W\].*B=2.*\(3, 1, 5, 6\)"),
    ({"depth": torch.rand(B, 5, 6)}, r"depth must have 4 dimensions.*\(2, 5, 6\)"),
    ({"image": torch.rand(B, 3, 1, 7)}, r"image needs H >= 2 and W >= 2.*\(2, 3, 1, 7\)"),
    ({"K": torch.eye(3)}, r"K must be \[B,3,3\].*\(3, 3\)"),
    ({"K": torch.eye(4).expand(B, 4, 4)}, r"K must be \[B,3,3\].*\(2, 4, 4\)"),
    ({"K": K.expand(2, 3, 3)[:1].expand(3, 3, 3)}, r"K must be.*B=2.*\(3, 3, 3\)"),
    ({"T": torch.eye(3).expand(B, 3, 3)}, r"T must be \[B,4,4\] or \[B,3,4\].*\(2, 3, 3\)"),
    ({"T": torch.eye(4).expand(3, 4, 4)}, r"T must be .*B=2.*\(3, 4, 4\)"),
    ({"K_src": torch.eye(3)[None, :2]}, r"K_src must be \[B,3,3\].*\(1, 2, 3\)"),
    ({"image": img.long()}, r"image must be a floating-point tensor.*int64"),
    ({"depth": dep.int()}, r"depth must be a floating-point tensor.*int32"),
    ({"T": torch.eye(4, dtype=torch.int64).expand(B, 4, 4)}, r"T must be a floating-point"),
    ({"K": K.to("meta")}, r"K must be on the image's device cpu, got meta"),
    ({"depth": dep.to("meta")}, r"depth must be on the image's device cpu, got meta"),
])
def test_bad_arguments(backend, kw, match):
    with packops.use_backend(backend), pytest.raises(ValueError, match=match):
        packops.reproject(**_args(**kw))


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
        op(img, dep, K, T[:, :3, :3], None, False)
    with pytest.raises(RuntimeError, match=r"K_src must be \[B,3,3\].*\[3, 3, 3\]"):
        op(img, dep, K, T, K[:1].expand(3, 3, 3), False)
    with pytest.raises(RuntimeError, match=r"depth must be \[B,1,H,W\]"):
        op(img, dep[:1], K, T, None, False)
    with pytest.raises(RuntimeError, match=r"must be Double for a Double image"):
        op(img.double(), dep, K, T, None, False)
    with pytest.raises(RuntimeError, match=r"grad must have shape \[2, 3, 5, 6\]"):
        torch.ops.packops.reproject_bwd(img, img, dep, K, T, None, True, True, True, True, False)
