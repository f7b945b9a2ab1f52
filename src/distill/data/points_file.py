"""The `file` dataset: a user's own data. A point cloud (N, D) in a `.npy` or `.csv` file, or
images (and optional labels) in an `.npz` file (see `distill.data.images`).

Every problem with the file raises `DataError` naming the file and saying how to fix it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from distill.data.base import ArrayData, DatasetConfig, file_error
from distill.data.images import labelled_split, load_image_npz
from distill.errors import DataError
from distill.registry import DATASETS

POINT_SUFFIXES = (".npy", ".csv")
MAX_DIM = 16
NPY_MAGIC = b"\x93NUMPY"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_npy(path: Path) -> np.ndarray:
    """The array stored in a real `.npy` file (pickled objects are refused)."""
    with path.open("rb") as handle:
        magic = handle.read(len(NPY_MAGIC))
    if magic != NPY_MAGIC:
        raise file_error(
            path,
            "is not a numpy .npy file (it does not start with the .npy magic bytes; "
            "perhaps a text file renamed to .npy)",
            "Save the points with numpy.save(path, points), or rename a comma-separated text "
            "file to .csv.",
        )
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError... for bad files
        raise file_error(
            path,
            f"is not a readable numpy .npy file ({type(exc).__name__}: {exc})",
            "Save the points with numpy.save(path, points) where points is a float array "
            "of shape (N, D), or use a .csv file.",
        ) from exc
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise file_error(
            path,
            f"holds non-numeric values (dtype {array.dtype})",
            "Save a float or integer array of shape (N, D).",
        )
    return array


def _read_csv(path: Path) -> np.ndarray:
    """Comma-separated numbers, one point per line; a first line of column names is skipped."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [(line, row) for line, row in enumerate(csv.reader(handle), 1) if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise file_error(
            path,
            f"is not a readable text .csv file ({type(exc).__name__}: {exc})",
            "Write comma-separated numbers, one point per line, as UTF-8 text.",
        ) from exc
    if rows and not any(_is_number(cell) for cell in rows[0][1]):
        rows = rows[1:]  # header of column names
    if not rows:
        raise file_error(path, "has no data rows", "Write one point per line, e.g. '0.5,-1.2'.")
    width = len(rows[0][1])
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise file_error(
                path,
                f"line {line} has {len(row)} values but the first data line has {width}",
                "Every line must have the same number of comma-separated values.",
            )
        for column, cell in enumerate(row, 1):
            if not _is_number(cell):
                raise file_error(
                    path,
                    f"line {line}, column {column}: {cell!r} is not a number",
                    "Only a first line of column names may be non-numeric; fix or remove this "
                    "value.",
                )
            values[i, column - 1] = float(cell)
    return values


def load_points(path: Path) -> torch.Tensor:
    """Read and check a point cloud from a `.npy` or `.csv` file: (N, D) float32, 1 <= D <= 16."""
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "file not found", "Check the `path` in the dataset config.")
    if path.suffix.lower() not in POINT_SUFFIXES:
        raise file_error(
            path,
            f"unsupported file type {path.suffix or '(no extension)'!r}",
            "Supported types: .npy or .csv holding an (N, D) array of points, or .npz holding "
            "images x (and labels y).",
        )
    if path.stat().st_size == 0:
        raise file_error(path, "the file is empty", "Write an (N, D) array of points into it.")
    array = _read_npy(path) if path.suffix.lower() == ".npy" else _read_csv(path)
    if array.ndim != 2:
        hint = (
            " A 1-D array of N scalars can be saved as x.reshape(-1, 1)." if array.ndim == 1 else ""
        )
        raise file_error(
            path,
            f"found an array of shape {tuple(array.shape)}, expected a 2-D array (N, D)",
            f"Save one point per row, one coordinate per column.{hint}",
        )
    n, d = array.shape
    if n == 0 or d == 0:
        raise file_error(
            path,
            f"holds no points (shape {tuple(array.shape)})",
            "Write at least 3 points into it.",
        )
    if d > MAX_DIM:
        raise file_error(
            path,
            f"has {d} columns; this looks like it is not a point cloud (expected 1 to {MAX_DIM})",
            "The `file` dataset takes low-dimensional points, one per row.",
        )
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise file_error(
            path,
            f"{int(bad.sum())} of {n} rows contain NaN or inf; the first is data row "
            f"{int(np.argmax(bad))} (0-based, not counting a csv header line)",
            "Remove or fix those rows.",
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def split_points(
    points: torch.Tensor, test_fraction: float, seed: int, source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle `points` (N, D) with `seed`; return train (N - T, D) and test (T, D),
    T = max(1, round(test_fraction * N)). Needs >= 2 train rows and >= 1 test row."""
    n = points.shape[0]
    n_test = max(1, round(test_fraction * n))
    if n - n_test < 2:
        raise DataError(
            f"{source}: only {n} rows, too few to split with test_fraction={test_fraction} "
            f"(need at least 2 train rows and 1 test row). Add rows or lower test_fraction."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return points[order[n_test:]], points[order[:n_test]]


@DATASETS.register("file", summary="your own points (.npy/.csv, (N, D)) or images (.npz with x, y)",
                   paper="")
class PointsFileConfig(DatasetConfig):
    """Points or images read from `path`, shuffled with `seed` and split into train and test."""

    name: Literal["file"] = "file"
    path: Path
    test_fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = 0

    def build(self) -> ArrayData:
        if self.path.suffix.lower() == ".npz":
            images, labels = load_image_npz(self.path)
            return labelled_split("file", images, labels, self.test_fraction, self.seed, str(self.path))
        points = load_points(self.path)
        train, test = split_points(points, self.test_fraction, self.seed, str(self.path))
        return ArrayData("file", train, test)
