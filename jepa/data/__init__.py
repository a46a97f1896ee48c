"""jepa.data: the embedded default dataset and pair datasets."""

from jepa.data.digits import DigitsPairs, DigitsSplit, load_digits_split, patchify, random_shift
from jepa.data.trajectories import TrajectoryDataset

__all__ = ["DigitsPairs", "DigitsSplit", "TrajectoryDataset", "load_digits_split", "patchify", "random_shift"]
