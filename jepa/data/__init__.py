"""jepa.data: the embedded default dataset and pair datasets."""

from jepa.data.digits import DigitsPairs, DigitsSplit, load_digits_split, patchify, random_shift

__all__ = ["DigitsPairs", "DigitsSplit", "load_digits_split", "patchify", "random_shift"]
