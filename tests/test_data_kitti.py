"""KITTIRaw on a synthetic KITTI-layout fixture written by write_kitti."""
import os

import numpy as np
import pytest
import torch

from packnet.data.io import DataError
from packnet.data.kitti import KITTIRaw, parse_split_line
from packnet.data.kitti_write import write_kitti


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti")
    info = write_kitti(str(root), num_sequences=2, frames_per_sequence=5, size="64x192", seed=1)
    return str(root), info


def test_layout(fixture):
    root, info = fixture
    drive = os.path.join(root, info["drives"][0])
    assert os.path.isfile(os.path.join(drive, "image_02", "data", "0000000004.png"))
    assert os.path.isfile(os.path.join(root, "2011_09_26", "calib_cam_to_cam.txt"))
    oxts = open(os.path.join(drive, "oxts", "data", "0000000000.txt")).read().split()
    assert len(oxts) == 30
    pts = np.fromfile(os.path.join(drive, "velodyne_points", "data", "0000000000.bin"), np.float32)
    assert pts.size % 4 == 0 and pts.size > 400


@pytest.mark.parametrize("split", ["eigen_test_files.txt", "eigen_zhou_files.txt",
                                   "zhou_train.txt"])
def test_loader_matches_renderer(fixture, split):
    root, info = fixture
    ds = KITTIRaw(root, split)
    syn = info["dataset"]
    assert len(ds) == len(syn) == 2 * 3 and ds.no_context == 0
    for i in (0, 4):
        k, s = ds[i], syn[i]
        assert torch.allclose(k["intrinsics"], s["intrinsics"])
        assert k["speed"] == pytest.approx(s["speed"], rel=1e-9)
        assert k["timestamp"] == pytest.approx(s["timestamp"], abs=1e-6)
        assert k["timestamps_context"] == pytest.approx(s["timestamps_context"], abs=1e-6)
        # images are 8-bit quantised renders; contexts are frames t-1, t+1
        assert (k["rgb"] - s["rgb"]).abs().max() <= 0.5 / 255 + 1e-6
        for a, b in zip(k["rgb_context"], s["rgb_context"]):
            assert (a - b).abs().max() <= 0.5 / 255 + 1e-6
        sparse, exact = k["depth"], s["depth"]
        on = sparse > 0
        assert on.sum() > 300
        rel = ((sparse[on] - exact[on]) / exact[on]).abs().max()
        assert rel < 1e-3, rel


def test_resize_scales_intrinsics_and_depth(fixture):
    root, info = fixture
    ds = KITTIRaw(root, "eigen_test_files.txt", size=(32, 96))
    s, full = ds[1], KITTIRaw(root, "eigen_test_files.txt")[1]
    assert s["rgb"].shape == (3, 32, 96) and s["depth"].shape == (1, 32, 96)
    K, Kf = s["intrinsics"], full["intrinsics"]
    assert K[0, 0] == pytest.approx(Kf[0, 0] / 2) and K[0, 2] == pytest.approx((Kf[0, 2] + .5) / 2 - .5)
    assert (s["depth"] > 0).sum() > 100


def test_split_formats():
    assert parse_split_line("2011_09_26/2011_09_26_drive_0002_sync 69 l") == (
        "2011_09_26", "2011_09_26_drive_0002_sync", "image_02", 69)
    assert parse_split_line("2011_09_26/2011_09_26_drive_0002_sync 69 r")[2] == "image_03"
    assert parse_split_line("2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png "
                            "x.png") == ("2011_09_26", "2011_09_26_drive_0002_sync", "image_02", 69)
    assert parse_split_line("2011_09_26_drive_0002_sync_03 0000000069") == (
        "2011_09_26", "2011_09_26_drive_0002_sync", "image_03", 69)


def test_missing_context_dropped(fixture, tmp_path):
    root, info = fixture
    split = tmp_path / "s.txt"
    split.write_text(f"{info['drives'][0]} 0 l\n{info['drives'][0]} 4 l\n{info['drives'][0]} 2 l\n")
    ds = KITTIRaw(root, str(split))
    assert len(ds) == 1 and ds.no_context == 2


def test_corrupt_and_missing(tmp_path):
    root = str(tmp_path)
    info = write_kitti(root, num_sequences=1, frames_per_sequence=5, size="64x192", seed=2)
    drive = os.path.join(root, info["drives"][0])
    bad = os.path.join(drive, "image_02", "data", "0000000002.png")
    with open(bad, "r+b") as f:
        f.truncate(60)  # header survives, data is gone
    ds = KITTIRaw(root, "eigen_test_files.txt")
    assert len(ds) == 3
    with pytest.raises(DataError, match="0000000002.png"):
        ds[0]  # frame 1: its context t+1 is the corrupt one
    skip = KITTIRaw(root, "eigen_test_files.txt", skip_bad=True)
    # frames 1, 2, 3 all read frame 2: every item is bad -> one error after counting them
    with pytest.raises(DataError, match="all 3 samples are bad"):
        skip[0]
    assert skip.skipped == 3 and all(f.endswith("0000000002.png") for f in skip.bad_files)
    os.remove(os.path.join(drive, "image_02", "data", "0000000000.png"))
    split = os.path.join(root, "one.txt")
    with open(split, "w") as f:
        f.write(f"{info['drives'][0]} 0 l\n")
    with pytest.raises(DataError, match="0000000000.png"):   # a missing target: at construction
        KITTIRaw(root, split, context=(1,))
    assert KITTIRaw(root, split, context=(1,), skip_bad=True).skipped == 1


def test_skip_bad_counts(tmp_path):
    root = str(tmp_path)
    info = write_kitti(root, num_sequences=1, frames_per_sequence=6, size="64x192", seed=3)
    drive = os.path.join(root, info["drives"][0])
    with open(os.path.join(drive, "oxts", "data", "0000000001.txt"), "w") as f:
        f.write("not numbers\n")
    with pytest.raises(DataError, match="0000000001.txt"):
        KITTIRaw(root, "eigen_test_files.txt")[0]
    ds = KITTIRaw(root, "eigen_test_files.txt", skip_bad=True)
    assert len(ds) == 4
    s = ds[0]  # frame 1 is bad: frame 2 comes instead
    assert s["filename"].endswith("0000000002.png")
    assert ds.skipped == 1 and ds.bad_files[0].endswith("0000000001.txt")
    assert len([ds[i] for i in range(len(ds))]) == 4 and ds.skipped == 1
    os.remove(os.path.join(drive, "image_02", "data", "0000000003.png"))
    ds2 = KITTIRaw(root, "eigen_test_files.txt", skip_bad=True)
    # frame 3 missing: as a target it is skipped (counted), frames 2 and 4 lose a context
    assert ds2.skipped == 1 and ds2.no_context == 2 and len(ds2) == 1
