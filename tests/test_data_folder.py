"""FolderDataset on a few written synthetic frames."""
import os

import pytest
import torch

from packnet.data.folder import FolderDataset
from packnet.data.io import DataError, write_rgb
from packnet.data.synthetic import SyntheticDriving


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    syn = SyntheticDriving("val", "64x192", num_sequences=1, frames_per_sequence=5, seed=5)
    d = root / "frames"
    for i in range(5):
        write_rgb(str(d / f"frame_{i:03d}.png"), syn.frame(0, i)[0])
    K = syn.K
    (root / "K3x3.txt").write_text("\n".join(" ".join(f"{x:.10f}" for x in row) for row in K))
    (root / "K4.txt").write_text(f"{K[0, 0]:.10f}, {K[1, 1]:.10f}, {K[0, 2]:.10f}, {K[1, 2]:.10f}\n")
    _, traj = syn.sequence(0)
    (root / "speed.txt").write_text("\n".join(repr(traj.speed(i)) for i in range(5)))
    return root, syn


@pytest.mark.parametrize("kfile", ["K3x3.txt", "K4.txt"])
def test_folder_items(frames, kfile):
    root, syn = frames
    ds = FolderDataset(str(root / "frames"), str(root / kfile), speed_file=str(root / "speed.txt"))
    assert len(ds) == 3
    s, ref = ds[1], syn[1]
    assert s["filename"].endswith("frame_002.png")
    assert torch.allclose(s["intrinsics"], ref["intrinsics"])
    assert s["speed"] == pytest.approx(ref["speed"], rel=1e-12)
    assert (s["rgb"] - ref["rgb"]).abs().max() <= 0.5 / 255 + 1e-6
    assert (s["rgb_context"][1] - ref["rgb_context"][1]).abs().max() <= 0.5 / 255 + 1e-6
    assert s["timestamps_context"] == pytest.approx([0.1, 0.3])


def test_folder_resize_and_context(frames):
    root, _ = frames
    ds = FolderDataset(str(root / "frames"), str(root / "K4.txt"), size=(32, 96), context=(-2, 1))
    assert len(ds) == 2 and "speed" not in ds[0]
    s = ds[0]
    assert s["rgb"].shape == (3, 32, 96) and len(s["rgb_context"]) == 2
    full = FolderDataset(str(root / "frames"), str(root / "K4.txt"))[0]["intrinsics"]
    assert s["intrinsics"][0, 0] == pytest.approx(full[0, 0] / 2)
    assert s["intrinsics"][1, 2] == pytest.approx((full[1, 2] + 0.5) / 2 - 0.5)


def test_folder_errors(frames, tmp_path):
    root, _ = frames
    with pytest.raises(DataError, match="nope.txt"):
        FolderDataset(str(root / "frames"), str(root / "nope.txt"))
    with pytest.raises(DataError, match="nothere"):
        FolderDataset(str(root / "nothere"), str(root / "K4.txt"))
    bad_k = tmp_path / "K5.txt"
    bad_k.write_text("1 2 3 4 5")
    with pytest.raises(DataError, match="K5.txt"):
        FolderDataset(str(root / "frames"), str(bad_k))
    short = tmp_path / "speed.txt"
    short.write_text("1.0\n2.0\n")
    with pytest.raises(DataError, match="2 speeds for 5 frames"):
        FolderDataset(str(root / "frames"), str(root / "K4.txt"), speed_file=str(short))


def test_folder_corrupt_skip(frames, tmp_path):
    root, _ = frames
    d = tmp_path / "frames"
    d.mkdir()
    for f in sorted(os.listdir(root / "frames")):
        (d / f).write_bytes((root / "frames" / f).read_bytes())
    (d / "frame_004.png").write_bytes(b"not a png at all")
    ds = FolderDataset(str(d), str(root / "K4.txt"))
    assert ds[0]["rgb"].shape == (3, 64, 192)
    with pytest.raises(DataError, match="frame_004.png"):
        ds[2]
    ds = FolderDataset(str(d), str(root / "K4.txt"), skip_bad=True)
    assert ds[2]["filename"].endswith("frame_001.png")  # wraps around to the next good item
    assert ds.skipped == 1 and ds.bad_files == [str(d / "frame_004.png")]


def test_make_dataset_folder_defaults_and_velocity_needs_speed(frames, tmp_path):
    """--data folder --data-root DIR: DIR/intrinsics.txt, DIR/speed.txt when present;
    without speeds the velocity loss stops with a message saying what to do."""
    import shutil

    from packnet.data import make_dataset
    from packnet.train import Trainer, TrainConfig
    root, syn = frames
    d = tmp_path / "video"
    shutil.copytree(root / "frames", d)
    shutil.copy(root / "K4.txt", d / "intrinsics.txt")
    no_speed = make_dataset("folder", root=str(d), size=(32, 64))
    assert len(no_speed) == 3 and "speed" not in no_speed[0]
    cfg = TrainConfig(name="f", out_dir=str(tmp_path / "runs"), data="folder",
                      data_kwargs={"root": str(d)}, size=(32, 64), batch_size=2, steps=1,
                      progress=False, num_scales=1, preview_every=0)
    with pytest.raises(ValueError, match="velocity loss needs each sample's speed.*--no-velocity"):
        Trainer(cfg, log=lambda m: None).fit()
    shutil.copy(root / "speed.txt", d / "speed.txt")
    ds = make_dataset("folder", root=str(d), size=(32, 64))
    assert ds[0]["speed"] == pytest.approx(syn[0]["speed"], rel=1e-12)
    tr = Trainer(cfg, log=lambda m: None).fit()
    assert tr.step == 1


# ------------------------------------------------- issue 12: loose input
@pytest.mark.parametrize("text,frag", [("0 100 48 16", "fx"), ("100 nan 48 16", "fy"),
                                       ("100 100 inf 16", "finite"),
                                       ("0 0 48 0 100 16 0 0 1", "fx")])
def test_bad_intrinsics_are_refused_naming_the_file(frames, tmp_path, text, frag):
    root, _ = frames
    k = tmp_path / "K_bad.txt"
    k.write_text(text)
    with pytest.raises(DataError, match=rf"K_bad.txt.*{frag}"):
        FolderDataset(str(root / "frames"), str(k))


def test_bad_speeds_are_refused_naming_the_file(frames, tmp_path):
    root, _ = frames
    s = tmp_path / "speed_bad.txt"
    s.write_text("1.0\n2.0\nnan\n3.0\n4.0\n")
    with pytest.raises(DataError, match=r"speed_bad.txt.*line 3.*nan"):
        FolderDataset(str(root / "frames"), str(root / "K4.txt"), speed_file=str(s))
    s.write_text("1.0\n2.0\n-3\n3.0\n4.0\n")
    with pytest.raises(DataError, match=r"speed_bad.txt.*line 3"):
        FolderDataset(str(root / "frames"), str(root / "K4.txt"), speed_file=str(s))


def test_a_directory_named_like_an_image_is_not_a_frame(frames, tmp_path):
    import shutil
    root, _ = frames
    d = tmp_path / "frames"
    shutil.copytree(root / "frames", d)
    (d / "zzz.png").mkdir()
    ds = FolderDataset(str(d), str(root / "K4.txt"))
    assert len(ds.files) == 5 and len(ds) == 3


def test_frames_of_two_sizes_are_refused_at_construction(frames, tmp_path):
    """Not at the step that first pairs them: the error names one frame of each size."""
    root, syn = frames
    d = tmp_path / "frames"
    for i in range(4):
        write_rgb(str(d / f"frame_{i:03d}.png"), syn.frame(0, i)[0])
    write_rgb(str(d / "frame_004.png"), syn.frame(0, 4)[0][:, :32])
    with pytest.raises(DataError, match=r"frame_004.png: frame size 32x192 differs from "
                                        r".*frame_000.png's 64x192"):
        FolderDataset(str(d), str(root / "K4.txt"))


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_jpeg_and_png_frames_with_16bit_depth_pngs(frames, tmp_path, ext):
    """Frames read as Pillow decodes them (PNG: the bytes written; JPEG: its
    decoding), ground truth from 16-bit PNGs exactly (value / 256 m)."""
    import numpy as np
    from PIL import Image
    root, syn = frames
    d, depth = tmp_path / "frames", tmp_path / "depth"
    depth.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_rgb(str(d / f"f{i}{ext}"), syn.frame(0, i)[0])
        raw = rng.integers(0, 65536, (64, 192)).astype(np.uint16)
        Image.fromarray(raw).save(depth / f"f{i}.png")
    ds = FolderDataset(str(d), str(root / "K4.txt"), depth_dir=str(depth))
    item = ds[0]                                   # target f1, context f0 and f2
    for name, img in (("f1", item["rgb"]), ("f0", item["rgb_context"][0])):
        with Image.open(d / f"{name}{ext}") as im:
            want = torch.tensor(np.asarray(im.convert("RGB"))).permute(2, 0, 1).float() / 255
        assert torch.equal(img, want)
    with Image.open(depth / "f1.png") as im:
        assert torch.equal(item["depth"][0], torch.tensor(np.asarray(im).astype(np.float32) / 256))
    if ext == ".png":
        assert torch.equal(item["rgb"], (syn.frame(0, 1)[0] * 255 + 0.5).floor() / 255)
