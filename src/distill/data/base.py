"""What every dataset produces (`ArrayData`) and the config base class datasets register."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill.errors import DataError


def file_error(path: Path, problem: str, fix: str) -> DataError:
    """A DataError that names the user's file, what is wrong with it and how to fix it."""
    return DataError(f"{path}: {problem}. {fix}")


def read_npz(path: Path, how_to_save: str) -> dict[str, np.ndarray]:
    """Every array of the `.npz` at `path` (pickled objects refused); `how_to_save` is the
    numpy.savez call the error messages suggest."""
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "file not found", "Check the `path` in the dataset config.")
    if not zipfile.is_zipfile(path):
        raise file_error(path, "is not an .npz archive", f"Save it with {how_to_save}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except Exception as exc:  # truncated members, pickled objects...
        raise file_error(path, f"cannot be read ({type(exc).__name__}: {exc})",
                         f"Save it again with {how_to_save}.") from exc


@dataclass
class ArrayData:
    """An in-memory dataset of points or images, split into training and held-out samples.

    train: (N, *shape) float32, what the teacher/student are trained on (points: shape = (D,);
        images: shape = (C, H, W) with values in [-1, 1]).
    test: (M, *shape) float32, held out, used only for evaluation.
    train_labels, test_labels: (N,), (M,) int64 class labels in [0, num_classes), or None.
    num_classes: K for labelled data, else None.
    modes: (K, D) mixture centres when the distribution is a known Gaussian mixture, else None.
    mode_std: per-coordinate standard deviation of each mixture component, else None.
    mode_classes: (K,) int64 class of each mode when a class groups several modes, else None
        (labelled mixtures without it have one mode per class, label = mode index).
    unlabelled: (U, *shape) extra inputs with no labels (a KD transfer set), or None.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    modes: torch.Tensor | None = None
    mode_std: float | None = None
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    num_classes: int | None = None
    unlabelled: torch.Tensor | None = None
    mode_classes: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample: (D,) for points, (C, H, W) for images."""
        return tuple(self.train.shape[1:])

    @property
    def dim(self) -> int:
        """D, the number of values in one sample."""
        return int(self.train[0].numel())

    @property
    def is_image(self) -> bool:
        return self.train.ndim == 4

    def training_rows(self) -> dict[str, torch.Tensor]:
        """What the trainer batches from: {"x": train} plus {"y": train_labels} if labelled."""
        rows = {"x": self.train}
        if self.train_labels is not None:
            rows["y"] = self.train_labels
        return rows


class DatasetConfig(BaseModel):
    """Base of every registered dataset config; subclasses narrow `name` to a `Literal`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str

    def build(self) -> ArrayData:
        """Load or sample the dataset this config describes."""
        raise NotImplementedError(f"{type(self).__name__} does not implement build()")


def merge_classes(data: ArrayData, groups: list[list[int]]) -> ArrayData:
    """`data` with its labels replaced by group indices: label y becomes the index of the group
    that contains y (for a few-class task made from a many-class one, e.g. MNIST-1D digits
    0-4 vs 5-9). Every label present must be in exactly one group."""
    lookup = torch.full((data.num_classes or 0,), -1, dtype=torch.long)
    for index, group in enumerate(groups):
        for label in group:
            if label >= len(lookup):
                raise DataError(f"data.class_groups names class {label} but {data.name!r} has classes "
                                f"0..{len(lookup) - 1}")
            lookup[label] = index
    missing = sorted(set(range(len(lookup))) - {c for g in groups for c in g})
    if missing:
        raise DataError(f"data.class_groups leaves classes {missing} of {data.name!r} out; put every "
                        "class in one group")
    data.train_labels = lookup[data.train_labels]
    data.test_labels = lookup[data.test_labels]
    if data.modes is not None:  # a mixture whose modes were the classes: each mode's new class
        data.mode_classes = lookup[torch.arange(len(data.modes)) if data.mode_classes is None else data.mode_classes]
    data.num_classes = len(groups)
    return data


class LabelledDatasetConfig(DatasetConfig):
    """A dataset with class labels, whose classes can be merged into groups (`class_groups`)."""

    class_groups: list[list[int]] | None = Field(None, description=(
        "merge classes into groups, e.g. [[0,1,2,3,4],[5,6,7,8,9]] for a two-class task; the "
        "label becomes the group's index"))

    @field_validator("class_groups")
    @classmethod
    def _check_groups(cls, groups: list[list[int]] | None) -> list[list[int]] | None:
        if groups is None:
            return None
        if len(groups) < 2 or any(not g for g in groups):
            raise ValueError("class_groups needs at least two non-empty groups")
        seen = [c for g in groups for c in g]
        if len(seen) != len(set(seen)):
            raise ValueError(f"class_groups {groups} puts a class in more than one group")
        if min(seen) < 0:
            raise ValueError("class_groups holds a negative class")
        return groups

    def grouped(self, data: ArrayData) -> ArrayData:
        """`data`, with its classes merged when `class_groups` is set."""
        return data if self.class_groups is None else merge_classes(data, self.class_groups)
