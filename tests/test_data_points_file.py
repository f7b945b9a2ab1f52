"""The `file` dataset: good .npy/.csv files load; every bad file raises a DataError naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from distill.data.points_file import PointsFileConfig, load_points, split_points
from distill.errors import DataError
from distill.registry import DATASETS

POINTS = np.arange(40, dtype=np.float64).reshape(20, 2) / 7.0


def _build(path: Path, **kwargs: object):
    return PointsFileConfig(path=path, **kwargs).build()


def _fails(path: Path, *fragments: str, **kwargs: object) -> str:
    with pytest.raises(DataError) as info:
        _build(path, **kwargs)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_registered() -> None:
    assert DATASETS.get("file") is PointsFileConfig


def test_good_npy(tmp_path: Path) -> None:
    path = tmp_path / "points.npy"
    np.save(path, POINTS.astype(np.float32))
    data = _build(path, test_fraction=0.25, seed=1)
    assert data.train.shape == (15, 2) and data.test.shape == (5, 2) and data.dim == 2
    assert data.train.dtype == torch.float32 and data.modes is None
    everything = torch.cat([data.train, data.test])
    assert torch.equal(everything[everything[:, 0].argsort()], torch.from_numpy(POINTS).float())
    assert torch.equal(data.test, _build(path, test_fraction=0.25, seed=1).test)
    assert not torch.equal(data.test, _build(path, test_fraction=0.25, seed=2).test)


def test_good_integer_npy_and_single_column(tmp_path: Path) -> None:
    path = tmp_path / "ints.npy"
    np.save(path, np.arange(10).reshape(10, 1))
    assert load_points(path).shape == (10, 1)


@pytest.mark.parametrize("header", ["", "x,y\n", " first , second \n"])
def test_good_csv(tmp_path: Path, header: str) -> None:
    lines = "\n".join(",".join(repr(float(v)) for v in row) for row in POINTS)
    path = _write(tmp_path / "points.csv", header + lines + "\n\n")
    assert torch.allclose(load_points(path), torch.from_numpy(POINTS).float())
    assert _build(path).train.shape == (18, 2)


def test_missing_file(tmp_path: Path) -> None:
    _fails(tmp_path / "nowhere.npy", "not found")


def test_unsupported_extension(tmp_path: Path) -> None:
    _fails(_write(tmp_path / "points.txt", "1,2\n"), ".npy", ".csv", "'.txt'")


@pytest.mark.parametrize("name", ["empty.npy", "empty.csv"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    _fails(_write(tmp_path / name, ""), "empty")


def test_header_only_csv(tmp_path: Path) -> None:
    _fails(_write(tmp_path / "header.csv", "x,y\n"), "no data rows")


def test_zero_rows_npy(tmp_path: Path) -> None:
    path = tmp_path / "zero.npy"
    np.save(path, np.zeros((0, 2)))
    _fails(path, "no points", "(0, 2)")


@pytest.mark.parametrize("shape", [(10,), (4, 3, 2)])
def test_wrong_ndim(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "cube.npy"
    np.save(path, np.zeros(shape))
    _fails(path, str(shape), "(N, D)")


def test_too_many_columns(tmp_path: Path) -> None:
    path = tmp_path / "images.npy"
    np.save(path, np.zeros((10, 784)))
    _fails(path, "784 columns", "not a point cloud")


def test_non_numeric_csv(tmp_path: Path) -> None:
    _fails(_write(tmp_path / "bad.csv", "x,y\n1,2\n3,abc\n"), "line 3, column 2", "'abc'")


def test_mixed_first_line_csv(tmp_path: Path) -> None:
    _fails(_write(tmp_path / "bad.csv", "x,2\n1,2\n"), "line 1, column 1")


def test_ragged_csv(tmp_path: Path) -> None:
    _fails(_write(tmp_path / "ragged.csv", "1,2\n3,4,5\n"), "line 2 has 3 values")


def test_non_numeric_npy(tmp_path: Path) -> None:
    path = tmp_path / "words.npy"
    np.save(path, np.array([["a", "b"], ["c", "d"]]))
    _fails(path, "non-numeric")


def test_pickled_objects_npy(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[1, None]], dtype=object), allow_pickle=True)
    _fails(path, "not a readable numpy")


def test_text_renamed_to_npy(tmp_path: Path) -> None:
    _fails(_write(tmp_path / "fake.npy", "1,2\n3,4\n"), "not a numpy .npy file", "numpy.save")


def test_binary_renamed_to_csv(tmp_path: Path) -> None:
    path = tmp_path / "fake.csv"
    np.save(tmp_path / "real.npy", POINTS)
    path.write_bytes((tmp_path / "real.npy").read_bytes())
    _fails(path, "not a readable text .csv")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(tmp_path: Path, bad: float) -> None:
    values = POINTS.copy()
    values[[3, 7, 8], [0, 1, 0]] = bad
    path = tmp_path / "holes.npy"
    np.save(path, values)
    _fails(path, "3 of 20 rows", "row 3")


def test_nan_in_csv(tmp_path: Path) -> None:
    _fails(_write(tmp_path / "holes.csv", "1,2\n3,nan\n4,5\n6,7\n"), "1 of 4 rows", "row 1")


def test_too_few_rows_to_split(tmp_path: Path) -> None:
    path = _write(tmp_path / "two.csv", "1,2\n3,4\n")
    _fails(path, "too few", "test_fraction")
    assert _build(_write(tmp_path / "three.csv", "1,2\n3,4\n5,6\n")).train.shape == (2, 2)
    _fails(_write(tmp_path / "ten.npy.csv", "1\n" * 10), "too few", test_fraction=0.9)


def test_split_sizes() -> None:
    train, test = split_points(torch.zeros(100, 3), 0.1, 0, "x")
    assert train.shape == (90, 3) and test.shape == (10, 3)


@pytest.mark.parametrize("bad", [{"test_fraction": 0.0}, {"test_fraction": 1.0}, {"seed": "a"}])
def test_config_validation(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        PointsFileConfig(path=tmp_path / "x.npy", **bad)


def test_truncated_npy(tmp_path: Path) -> None:
    path = tmp_path / "cut.npy"
    np.save(path, POINTS)
    path.write_bytes(path.read_bytes()[:-50])
    _fails(path, "not a readable numpy")
