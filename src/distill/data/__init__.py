"""Datasets: importing this package registers every dataset in `distill.registry.DATASETS`."""

from distill.data import images, mnist1d, points_file, toy2d
from distill.data.base import ArrayData, DatasetConfig

__all__ = ["ArrayData", "DatasetConfig", "images", "mnist1d", "points_file", "toy2d"]
