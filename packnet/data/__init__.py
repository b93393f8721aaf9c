"""Data: the synthetic driving renderer (embedded default), KITTI raw and
folder loaders, and augmentation. Items are dicts; see each module."""
import os

from .augment import Augmentation
from .folder import FolderDataset
from .io import DataError
from .kitti import KITTIRaw
from .kitti_write import write_kitti
from .synthetic import SyntheticDriving

__all__ = ["SyntheticDriving", "write_kitti", "KITTIRaw", "FolderDataset", "DataError",
           "Augmentation"]


def make_dataset(name, split="train", size=(192, 640), **kwargs):
    """The dataset the trainer and `packnet eval` use, by name (one of
    packnet.specs.DATASETS, which the tests keep in step with this function).

    synthetic: SyntheticDriving(split, size, **kwargs)
    kitti:     KITTIRaw(root, split_file=kwargs['split_files'][split] or kwargs['split_file'], size)
    folder:    FolderDataset(root, intrinsics_file, size=size, **kwargs) (one sequence: every
               split); intrinsics_file defaults to root/intrinsics.txt, speed_file to
               root/speed.txt and depth_dir to root/depth/ when they exist
    """
    size = tuple(size)
    if name == "synthetic":
        return SyntheticDriving(split=split, size=size, **kwargs)
    if name == "kitti":
        kw = dict(kwargs)
        files = kw.pop("split_files", None)
        split_file = files[split] if files else kw.pop("split_file")
        return KITTIRaw(kw.pop("root"), split_file, size=size, **kw)
    if name == "folder":
        kw = dict(kwargs)
        root = kw.pop("root")
        intrinsics = kw.pop("intrinsics_file", None) or os.path.join(root, "intrinsics.txt")
        if "speed_file" not in kw and os.path.isfile(os.path.join(root, "speed.txt")):
            kw["speed_file"] = os.path.join(root, "speed.txt")
        if "depth_dir" not in kw and os.path.isdir(os.path.join(root, "depth")):
            kw["depth_dir"] = os.path.join(root, "depth")
        return FolderDataset(root, intrinsics, size=size, **kw)
    from ..specs import DATASETS
    raise ValueError(f"make_dataset: unknown dataset {name!r}; choose {', '.join(DATASETS)}")


__all__ += ["make_dataset"]
