"""The benchmark scripts name only recipes that ship: every method a bench runs has a config
that validates (a bench that dies an hour in on a missing file loses the hour)."""

from __future__ import annotations

import importlib
import sys

import pytest

from conftest import REPO
from distill.config import load_config

sys.path.insert(0, str(REPO / "bench"))


@pytest.mark.parametrize(("script", "configs", "pattern"), [
    ("digits", "digits", "{method}-digits.yaml"),
    ("step_distillation", "toy2d", "{method}-8gaussians.yaml"),
])
def test_every_benchmarked_method_has_a_valid_recipe(script: str, configs: str, pattern: str):
    methods = importlib.import_module(script).METHODS
    for method in methods:
        path = REPO / "configs" / configs / pattern.format(method=method)
        assert path.is_file(), f"bench/{script}.py runs {method!r} but {path} does not exist"
        assert load_config(path).method.name == method, path
