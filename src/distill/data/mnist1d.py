"""MNIST-1D (Greydanus & Kobak 2020): ten 1-D "digits" of length 40, generated procedurally by
the `mnist1d` package (no download). The standard split is the package's default arguments
(5000 samples, seed 42, 4000 train / 1000 test).

For knowledge distillation a *transfer set* matters more than anything else (CALIBRATION.md:
KD on the 4000 inputs the teacher memorised barely helps; KD on extra unlabelled inputs does):
`unlabelled: N` adds N more MNIST-1D inputs generated with another seed, labels dropped.
Generated sets are cached under $DISTILL_CACHE/data (25k samples take ~5 s to make).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from filelock import FileLock
from pydantic import Field

from distill.cache import cache_root
from distill.data.base import ArrayData, LabelledDatasetConfig
from distill.registry import DATASETS

STANDARD_SEED = 42


def _generate(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    """mnist1d.make_dataset with its default arguments but `num_samples` and `seed`, without
    touching the caller's global NumPy random state."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def generated(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    """The (cached) MNIST-1D set of `num_samples` made with `seed`: x (0.8 N, 40), y, x_test, y_test."""
    path = cache_root() / "data" / f"mnist1d-n{num_samples}-seed{seed}.npz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if not path.is_file():
                data = _generate(num_samples, seed)
                tmp = path.with_name(path.stem + ".tmp.npz")
                np.savez(tmp, **data)
                tmp.replace(path)
    with np.load(Path(path)) as f:
        return {k: f[k] for k in f.files}


@DATASETS.register("mnist1d", summary="MNIST-1D: 1-D digits of length 40, 4000/1000 split, 10 classes",
                   paper="Scaling Down Deep Learning with MNIST-1D (Greydanus & Kobak, 2020)")
class Mnist1DConfig(LabelledDatasetConfig):
    """Samples have shape (1, 40) (one channel, for 1-D convolutions); labels 0..9."""

    name: Literal["mnist1d"] = "mnist1d"
    unlabelled: int = Field(0, ge=0, description="extra unlabelled inputs (a KD transfer set)")
    unlabelled_seed: int = Field(7, description="seed of the transfer set (not 42, the standard set's)")

    def build(self) -> ArrayData:
        std = generated(5000, STANDARD_SEED)
        as_x = lambda a: torch.tensor(a, dtype=torch.float32)[:, None, :]  # noqa: E731
        extra = None
        if self.unlabelled:
            more = generated(self.unlabelled, self.unlabelled_seed)
            extra = as_x(np.concatenate([more["x"], more["x_test"]]))[: self.unlabelled]
        return self.grouped(ArrayData("mnist1d", as_x(std["x"]), as_x(std["x_test"]),
                         train_labels=torch.tensor(std["y"], dtype=torch.long),
                         test_labels=torch.tensor(std["y_test"], dtype=torch.long),
                         num_classes=10, unlabelled=extra))
