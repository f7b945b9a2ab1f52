"""Teacher pairs are made once per teacher and settings, then read back from the cache."""

from __future__ import annotations

import pytest
import torch

from distill.diffusion import teacher_pairs as pairs_module
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.teacher_pairs import cached_teacher_pairs, teacher_pairs
from distill.models.mlp import TimeMLP


def teacher(seed: int) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8))


def test_pairs_are_made_once_then_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    made = cached_teacher_pairs(teacher(0), 64, (2,), None, seed=0, steps=4)
    torch.testing.assert_close(made["target"], teacher_pairs(teacher(0), 64, (2,), None, 0, 4)["target"])

    def refuse(*args, **kwargs):
        raise AssertionError("the pairs should have come from the cache")

    monkeypatch.setattr(pairs_module, "teacher_pairs", refuse)
    again = cached_teacher_pairs(teacher(0), 64, (2,), None, seed=0, steps=4)
    assert again.keys() == made.keys() and all(torch.equal(again[k], made[k]) for k in made)
    with pytest.raises(AssertionError, match="from the cache"):  # other weights: other pairs
        cached_teacher_pairs(teacher(1), 64, (2,), None, seed=0, steps=4)
    with pytest.raises(AssertionError, match="from the cache"):  # other steps: other pairs
        cached_teacher_pairs(teacher(0), 64, (2,), None, seed=0, steps=8)


def test_a_broken_cache_entry_is_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    made = cached_teacher_pairs(teacher(0), 32, (2,), 3, seed=1, steps=2)
    assert made["y"].shape == (32,)
    (entry,) = (tmp_path / "pairs").iterdir()
    entry.write_bytes(b"not a safetensors file")
    again = cached_teacher_pairs(teacher(0), 32, (2,), 3, seed=1, steps=2)
    assert torch.equal(again["target"], made["target"])
    assert entry.read_bytes() != b"not a safetensors file"
