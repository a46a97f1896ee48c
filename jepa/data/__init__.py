"""jepa.data: what feeds a JEPA.

* the embedded default dataset (scikit-learn's digits as pairs): :class:`DigitsPairs`, ...;
* images: :class:`ImageFolderDataset` (a folder of image files), :class:`TensorImageDataset`
  (arrays in memory or ``.npy``/``.npz``), torch transforms (:mod:`jepa.data.transforms`), a
  seeded split helper (:func:`train_val_split`) and a procedural labelled image set
  (:mod:`jepa.data.synthetic`);
* masks: :class:`~jepa.data.masks.MultiBlockMaskCollator` (I-JEPA multi-block masks, also a
  DataLoader ``collate_fn``);
* trajectories for world models: :class:`TrajectoryDataset` (windows of observations and actions
  that never cross an episode end).
"""

from jepa.data.arrays import TensorImageDataset
from jepa.data.digits import DigitsPairs, DigitsSplit, load_digits_split, patchify, random_shift
from jepa.data.folder import ImageFolderDataset, scan_image_folder
from jepa.data.images import IMAGE_EXTENSIONS, ImageDecodeError, read_image
from jepa.data.masks import MultiBlockMaskCollator, MultiBlockMasks
from jepa.data.splits import train_val_split
from jepa.data.synthetic import SHAPE_CLASSES, make_shapes, write_shapes_folder
from jepa.data.transforms import eval_transform, train_transform
from jepa.data.trajectories import TrajectoryDataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "SHAPE_CLASSES",
    "DigitsPairs",
    "DigitsSplit",
    "ImageDecodeError",
    "ImageFolderDataset",
    "MultiBlockMaskCollator",
    "MultiBlockMasks",
    "TensorImageDataset",
    "TrajectoryDataset",
    "eval_transform",
    "load_digits_split",
    "make_shapes",
    "patchify",
    "random_shift",
    "read_image",
    "scan_image_folder",
    "train_transform",
    "train_val_split",
    "write_shapes_folder",
]
