"""Augmentation: flip, resize, colour jitter on synthetic items."""
import pytest
import torch

import packops
from packnet.data.augment import Augmentation, color_jitter, hflip, resize_sample
from packnet.data.synthetic import SyntheticDriving


@pytest.fixture(scope="module")
def sample():
    return SyntheticDriving("train", "64x192", num_sequences=1, frames_per_sequence=3, seed=7)[0]


def test_flip_twice_is_identity(sample):
    back = hflip(hflip(sample))
    for k in ("rgb", "depth", "intrinsics"):
        assert torch.equal(back[k], sample[k]), k
    for a, b in zip(back["pose_context"], sample["pose_context"]):
        assert torch.equal(a, b)
    assert not back["flipped"] and hflip(sample)["flipped"]


def test_flipped_warp_is_flipped_warp(sample):
    """Warping the flipped context with flipped depth, intrinsics and pose gives
    the flip of the original warp: the intrinsics/pose update is right."""
    f = hflip(sample)
    warp = lambda s: packops.reproject_reference(  # noqa: E731
        s["rgb_context"][1][None], s["depth"][None], s["intrinsics"][None],
        s["pose_context"][1][None])[0]
    a, b = warp(f), warp(sample).flip(-1)
    assert (a - b).abs().max() < 1e-4
    assert f["intrinsics"][0, 2] == pytest.approx(191 - sample["intrinsics"][0, 2].item())


def test_jitter_same_on_target_and_context(sample):
    s = dict(sample, rgb_context=[sample["rgb"].clone(), sample["rgb"].clone()])
    g = torch.Generator().manual_seed(1)
    j = color_jitter(s, 0.4, 0.4, 0.4, 0.1, generator=g)
    assert not torch.allclose(j["rgb"], s["rgb"], atol=1e-3)
    assert all(torch.equal(c, j["rgb"]) for c in j["rgb_context"])
    j2 = color_jitter(s, 0.4, 0.4, 0.4, 0.1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(j2["rgb"], j["rgb"]) and j2["jitter"] == j["jitter"]
    assert 0 <= j["rgb"].min() and j["rgb"].max() <= 1
    zero = color_jitter(s, 0, 0, 0, 0)
    assert torch.allclose(zero["rgb"], s["rgb"], atol=1e-5)


def test_resize_and_pipeline(sample):
    r = resize_sample(sample, (32, 96))
    assert r["rgb"].shape == (3, 32, 96) and r["depth"].shape == (1, 32, 96)
    assert torch.allclose(r["intrinsics"], packops.scale_intrinsics(sample["intrinsics"], 0.5, 0.5))
    aug = Augmentation(size=(32, 96), flip_prob=0.5, seed=3)
    outs = [aug(sample) for _ in range(8)]
    assert {o["flipped"] for o in outs} == {True, False}
    again = Augmentation(size=(32, 96), flip_prob=0.5, seed=3)
    assert all(torch.equal(again(sample)["rgb"], o["rgb"]) for o in outs)
    ds = SyntheticDriving("train", "64x192", num_sequences=1, frames_per_sequence=3,
                          transform=Augmentation(size=(32, 96), seed=0))
    assert ds[0]["rgb"].shape == (3, 32, 96)
