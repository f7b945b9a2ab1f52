"""Datasets: importing this package registers every dataset in `distill.registry.DATASETS`."""

from distill.data import features_file, images, mnist1d, points_file, text, toy2d
from distill.data.base import ArrayData, DatasetConfig

__all__ = ["ArrayData", "DatasetConfig", "features_file", "images", "mnist1d", "points_file", "text", "toy2d"]
