"""Data: the synthetic driving renderer (embedded default), KITTI raw and
folder loaders, and augmentation. Items are dicts; see each module."""
from .augment import Augmentation, color_jitter, hflip, resize_sample
from .folder import FolderDataset, read_intrinsics
from .io import DataError
from .kitti import KITTIRaw
from .kitti_write import write_kitti
from .synthetic import PRESETS, SyntheticDriving

__all__ = ["SyntheticDriving", "PRESETS", "write_kitti", "KITTIRaw", "FolderDataset",
           "read_intrinsics", "DataError", "Augmentation", "color_jitter", "hflip",
           "resize_sample"]
