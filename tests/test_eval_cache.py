"""The teacher's evaluation rows are cached by weights and settings, never its timings."""

from __future__ import annotations

import torch

import distill.diffusion.evaluate as evaluate
from distill.config import EvalConfig
from distill.data.toy2d import TOY_CONFIGS
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.eval_cache import row_key
from distill.models.mlp import TimeMLP


def test_teacher_rows_come_from_the_cache_until_weights_or_settings_change(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    data = TOY_CONFIGS["8gaussians"](n=256, n_test=512).build()
    cfg = EvalConfig(n_samples=300, timing_repeats=1, timing_samples=50, plot_points=20)
    torch.manual_seed(0)
    teacher = Denoiser(TimeMLP((2,), 16, 2, 8))
    calls: list[int] = []
    real_generate = evaluate.generate
    monkeypatch.setattr(evaluate, "generate", lambda gen, noise, *a, **k: calls.append(len(noise))
                        or real_generate(gen, noise, *a, **k))
    context = {"data": "8gaussians"}

    def rows():
        calls.clear()
        found, samples = evaluate.evaluate_generators(
            {"teacher": evaluate.Generator(teacher, [1, 4]), "student": evaluate.Generator(teacher, [1])},
            data, cfg, cache_context=context, cached=("teacher",))
        return found, samples, [n for n in calls if n == cfg.n_samples]

    first, first_samples, generated = rows()
    assert len(generated) == 3  # two teacher rows and the student row
    second, second_samples, generated = rows()
    assert len(generated) == 1  # the student only; the teacher's rows are read back
    for a, b in zip(first, second, strict=True):
        assert {k: v for k, v in a.items() if k != "ms_per_sample"} == \
            {k: v for k, v in b.items() if k != "ms_per_sample"}
        assert "ms_per_sample" in b  # timed anew in every run
    torch.testing.assert_close(first_samples["teacher/nfe=4"], second_samples["teacher/nfe=4"])

    context = {"data": "checkerboard"}  # other settings: computed again
    assert len(rows()[2]) == 3
    with torch.no_grad():
        teacher.net.layers[0].bias.add_(0.1)  # other weights: computed again
    assert len(rows()[2]) == 3


def test_a_broken_cache_entry_is_recomputed(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    data = TOY_CONFIGS["8gaussians"](n=256, n_test=512).build()
    cfg = EvalConfig(n_samples=200, timing_repeats=0, plot_points=10)
    teacher = Denoiser(TimeMLP((2,), 16, 2, 8))
    models = {"teacher": evaluate.Generator(teacher, [2])}
    first, _ = evaluate.evaluate_generators(models, data, cfg, cache_context={}, cached=("teacher",))
    key = row_key(teacher, {"model": "teacher", "sampler": "euler", "steps": 2, "guidance": 1.0, "eta": 0.0})
    entry = tmp_path / "eval" / f"{key}.safetensors"
    assert entry.is_file()
    entry.write_bytes(b"not a safetensors file")
    again, _ = evaluate.evaluate_generators(models, data, cfg, cache_context={}, cached=("teacher",))
    assert again == first and entry.stat().st_size > 100


def test_the_data_floor_is_computed_once_per_context(monkeypatch, tmp_path):
    from distill.diffusion.eval_cache import cached_floor

    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"swd": 0.01, "mmd": 0.002}

    assert cached_floor({"data": "8gaussians"}, compute) == {"swd": 0.01, "mmd": 0.002}
    assert cached_floor({"data": "8gaussians"}, compute) == {"swd": 0.01, "mmd": 0.002}
    assert len(calls) == 1
    cached_floor({"data": "checkerboard"}, compute)
    assert len(calls) == 2
