"""Data: synthetic driving renderer, KITTI raw and folder loaders, augmentation."""
