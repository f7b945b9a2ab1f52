"""Image datasets: scikit-learn's 8x8 digits, and images a user brings in an `.npz` file.

Images are float32 (N, C, H, W) in [-1, 1]; labels, when present, int64 (N,) in [0, K).
Every problem with a user's file raises `DataError` naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from distill.data.base import ArrayData, LabelledDatasetConfig, file_error, read_npz
from distill.errors import DataError
from distill.registry import DATASETS


def split_indices(n: int, test_fraction: float, seed: int, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded shuffle of range(n) split into (train, test) indices, test = round(f n) >= 1."""
    n_test = max(1, round(test_fraction * n))
    if n - n_test < 2:
        raise DataError(f"{source}: only {n} samples, too few to split with test_fraction="
                        f"{test_fraction}. Add samples or lower test_fraction.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_test:], order[:n_test]


def labelled_split(name: str, images: torch.Tensor, labels: torch.Tensor | None,
                   test_fraction: float, seed: int, source: str) -> ArrayData:
    train, test = split_indices(len(images), test_fraction, seed, source)
    if labels is None:
        return ArrayData(name, images[train], images[test])
    return ArrayData(name, images[train], images[test], train_labels=labels[train],
                     test_labels=labels[test], num_classes=int(labels.max()) + 1)


@DATASETS.register("digits", summary="scikit-learn 8x8 handwritten digits in [-1, 1], 10 classes",
                   paper="UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak, 1998)")
class DigitsConfig(LabelledDatasetConfig):
    """The 1797 digits of `sklearn.datasets.load_digits` (bundled, no download), scaled from
    0..16 to [-1, 1], optionally upsampled to 16x16 (bilinear), split with a fixed seed."""

    name: Literal["digits"] = "digits"
    size: Literal[8, 16] = 8
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0

    def build(self) -> ArrayData:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
        if self.size != 8:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear",
                                   align_corners=False).clamp(-1, 1)
        labels = torch.tensor(digits.target, dtype=torch.long)
        return self.grouped(labelled_split("digits", images, labels, self.test_fraction, self.seed, "digits"))


def _scale_images(path: Path, x: np.ndarray) -> np.ndarray:
    """uint8 -> [-1, 1]; floats in [0, 1] or [-1, 1] -> [-1, 1]; anything else is an error."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 127.5 - 1.0
    if not np.issubdtype(x.dtype, np.floating):
        raise file_error(path, f"'x' has dtype {x.dtype}", "Save images as uint8 (0..255) or float in [0, 1] or [-1, 1].")
    if not np.isfinite(x).all():
        raise file_error(path, f"'x' holds {int((~np.isfinite(x)).sum())} NaN or inf values", "Fix or remove those images.")
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and hi <= 1:
        return x.astype(np.float32) * 2 - 1
    if lo >= -1 and hi <= 1:
        return x.astype(np.float32)
    raise file_error(path, f"float images range over [{lo:.3g}, {hi:.3g}]",
                "Scale them to [0, 1] or [-1, 1], or save uint8 pixels (0..255).")


def load_image_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (N, C, H, W) in [-1, 1] and labels (N,) or None from an `.npz` with `x` of shape
    (N, H, W) or (N, C, H, W) and optional integer `y` of shape (N,)."""
    path = Path(path)
    arrays = read_npz(path, "numpy.savez(path, x=images, y=labels)")
    if "x" not in arrays:
        raise file_error(path, f"has no array 'x' (it holds {sorted(arrays) or 'nothing'})",
                    "Save the images under the name x: numpy.savez(path, x=images, y=labels).")
    x = arrays["x"]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise file_error(path, f"'x' has shape {tuple(arrays['x'].shape)}",
                    "Images must be (N, H, W) or (N, C, H, W) with N >= 1.")
    if x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
        raise file_error(path, f"'x' has shape {tuple(x.shape)}, which looks channels-last",
                    "Store channels first: x.transpose(0, 3, 1, 2).")
    images = torch.from_numpy(np.ascontiguousarray(_scale_images(path, x)))
    y = arrays.get("y")
    if y is None:
        return images, None
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise file_error(path, f"'y' has shape {tuple(y.shape)} and dtype {y.dtype}",
                    "Labels must be a 1-D integer array, one class index per image.")
    if len(y) != len(images):
        raise file_error(path, f"'y' holds {len(y)} labels for {len(images)} images",
                    "Save exactly one label per image.")
    if y.min() < 0:
        raise file_error(path, f"'y' has negative labels (min {int(y.min())})", "Use class indices 0..K-1.")
    return images, torch.from_numpy(y.astype(np.int64))
