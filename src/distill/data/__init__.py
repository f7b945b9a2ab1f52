"""Datasets: importing this package registers every dataset in `distill.registry.DATASETS`."""

from distill.data import points_file, toy2d
from distill.data.base import DatasetConfig, PointData

__all__ = ["DatasetConfig", "PointData", "points_file", "toy2d"]
