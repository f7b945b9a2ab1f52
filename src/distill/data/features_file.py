"""The `features` dataset: labelled feature vectors (or 1-D signals) a user brings in an `.npz`,
for classifier knowledge distillation.

The archive holds:
- `x`: (N, D) feature vectors or (N, C, L) signals, float (any range; used as stored);
- `y`: (N,) integer class labels 0..K-1, one per row of `x`;
- optionally `x_test` and `y_test`, a held-out split (else `test_fraction` of the rows is held out);
- optionally `x_unlabelled`: (U, ...) extra inputs without labels, a KD transfer set.

Every problem with the file raises `DataError` naming the file, the array and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from distill.data.base import ArrayData, LabelledDatasetConfig, file_error, read_npz
from distill.data.images import split_indices
from distill.registry import DATASETS

HOW_TO_SAVE = "numpy.savez(path, x=features, y=labels)"


def _inputs(path: Path, arrays: dict[str, np.ndarray], key: str) -> torch.Tensor:
    x = arrays[key]
    if x.ndim not in (2, 3) or len(x) == 0:
        raise file_error(path, f"'{key}' has shape {tuple(x.shape)}",
                         "Features must be (N, D) vectors or (N, C, L) signals with N >= 1")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise file_error(path, f"'{key}' has dtype {x.dtype}", "Save features as numbers (float32)")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise file_error(path, f"'{key}' holds {int((~np.isfinite(x)).sum())} NaN or inf values",
                         "Fix or drop those rows")
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels(path: Path, arrays: dict[str, np.ndarray], key: str, rows: int, x_key: str) -> torch.Tensor:
    if key not in arrays:
        raise file_error(path, f"has no array '{key}' (it holds {sorted(arrays)})",
                         f"Save one integer label per row of '{x_key}': {HOW_TO_SAVE}")
    y = arrays[key]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise file_error(path, f"'{key}' has shape {tuple(y.shape)} and dtype {y.dtype}",
                         "Labels must be a 1-D integer array, one class index per row")
    if len(y) != rows:
        raise file_error(path, f"'{key}' holds {len(y)} labels for the {rows} rows of '{x_key}'",
                         f"Save exactly one label per row of '{x_key}'")
    if y.min() < 0:
        raise file_error(path, f"'{key}' has negative labels (min {int(y.min())})", "Use class indices 0..K-1")
    return torch.from_numpy(y.astype(np.int64))


def load_features_npz(path: Path, test_fraction: float, seed: int) -> ArrayData:
    """The labelled split (and transfer set) stored in a features `.npz` (see the module doc)."""
    path = Path(path)
    arrays = read_npz(path, HOW_TO_SAVE)
    if "x" not in arrays:
        raise file_error(path, f"has no array 'x' (it holds {sorted(arrays) or 'nothing'})",
                         f"Save the features under the name x: {HOW_TO_SAVE}")
    x = _inputs(path, arrays, "x")
    y = _labels(path, arrays, "y", len(x), "x")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise file_error(path, "holds only one of 'x_test' and 'y_test'",
                         "Save both (a held-out split) or neither (test_fraction of x is held out)")
    if "x_test" in arrays:
        x_train, y_train = x, y
        x_test = _inputs(path, arrays, "x_test")
        y_test = _labels(path, arrays, "y_test", len(x_test), "x_test")
    else:
        train, test = split_indices(len(x), test_fraction, seed, str(path))
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    unlabelled = _inputs(path, arrays, "x_unlabelled") if "x_unlabelled" in arrays else None
    for key, other in (("x_test", x_test), ("x_unlabelled", unlabelled)):
        if other is not None and other.shape[1:] != x_train.shape[1:]:
            raise file_error(path, f"rows of '{key}' have shape {tuple(other.shape[1:])} but rows of "
                             f"'x' have shape {tuple(x_train.shape[1:])}", "Save every split with the same features")
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return ArrayData("features", x_train, x_test, train_labels=y_train, test_labels=y_test,
                     num_classes=num_classes, unlabelled=unlabelled)


@DATASETS.register("features", summary="your labelled features (.npz: x (N, D), y, optional x_test/y_test, "
                   "x_unlabelled)", paper="")
class FeaturesFileConfig(LabelledDatasetConfig):
    """Labelled feature vectors from `path` for classifier distillation."""

    name: Literal["features"] = "features"
    path: Path
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held out when the file has no x_test")
    seed: int = 0
    num_classes: int | None = Field(None, ge=2, description=(
        "the class count when some classes are missing from the file (default: max label + 1)"))

    def build(self) -> ArrayData:
        data = load_features_npz(self.path, self.test_fraction, self.seed)
        if self.num_classes is not None:
            if data.num_classes > self.num_classes:
                raise file_error(self.path, f"labels go up to {data.num_classes - 1} but "
                                 f"num_classes is {self.num_classes}", "Raise num_classes or fix the labels")
            data.num_classes = self.num_classes
        return self.grouped(data)
