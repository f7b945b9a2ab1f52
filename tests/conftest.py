"""Shared fixtures: an isolated teacher cache, tiny configs, and the repo's config dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "toy2d"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gate-methods", metavar="PATH", help=(
        "write the registered methods that the selected `gate` tests cover (not counting xfail "
        "ones) to PATH as JSON: tests/test_gate_coverage.py reads it"))


def gate_methods(item: pytest.Item) -> set[str]:
    """The methods a `gate` test checks: the names given to its marker, `@pytest.mark.gate("dmd")`,
    and the value of its `method` parameter when it is parametrized by one."""
    names = {name for mark in item.iter_markers("gate") for name in mark.args}
    params = getattr(getattr(item, "callspec", None), "params", {})
    if isinstance(params.get("method"), str):
        names.add(params["method"])
    return names


def pytest_collection_finish(session: pytest.Session) -> None:
    path = session.config.getoption("--gate-methods")
    if path:
        covered = set().union(*(gate_methods(item) for item in session.items
                                if item.get_closest_marker("xfail") is None), set())
        Path(path).write_text(json.dumps(sorted(covered)))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n 2`), one intra-op thread per worker: the small models here are
    overhead-bound, so two single-threaded workers beat one two-threaded process."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


# The heaviest test files, heaviest first (worker seconds of their `make test` selection, from
# `pytest --durations`; the digits files are `slow` only): they are handed out first, so the two
# xdist workers (`make test`: --dist loadfile --no-loadscope-reorder) finish together instead
# of one running a long gate file alone at the end. The toy gates come first so that their
# teacher (cached, file-locked) is trained while the second worker runs files that do not need
# it. The `slow` digits files are deselected by `make test`; under `make test-all` they start at once.
HEAVY_FILES = (
    "test_gates_toy2d.py",  # ~165 s (8gaussians; ~640 s with its checkerboard twins): trains the toy teacher
    "test_gates_lm.py",  # ~70 s, SmolLM2; no toy teacher, so the second worker starts here
    "test_gates_consistency.py",  # ~420 s (cd, mcd, scm, tscd, slam and their options)
    "test_gates_digits.py",  # 550 s + meanflow ~500 s, instaflow ~170 s, scm ~140 s; trains the digits teachers (slow)
    "test_gates_digits_dmd2.py",  # 174 s on the cached digits teacher (slow)
    "test_gates_distribution_matching.py",  # ~320 s
    "test_gates_flow_map.py",  # ~260 s
    "test_gates_reward.py",  # ~200 s (dmd-flash: the joint run and its reward-alone branch)
    "test_gates_pso.py",  # ~150 s: trains the 2-step DMD2 student it tunes
    "test_gates_dmd_variants.py",  # ~260 s, trains the 2-class teacher
    "test_gates_tmd.py",  # ~90 s (tmd and its frozen-fake ablation)
    "test_gates_rectified_flow.py",  # ~230 s
    "test_gates_kd_teachers.py",  # ~80 s, trains the mnist1d teacher
    "test_gates_render.py",  # ~60 s: trains the MLP digits teacher and the feature classifier
    "test_gates_kd_online.py",
    "test_gates_kd.py",
    "test_gates_lm_synthetic.py",
    "test_gates_kd_few_class.py",
    "test_schedule_training.py",
    "test_gates_kd_semi.py",
    "test_metric_resolution.py",
    "test_resume.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heaviest files first (a stable sort: the other files and each file's tests keep their order)."""
    rank = {name: i for i, name in enumerate(HEAVY_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Teachers trained by recipe go to one cache per test session (never ~/.cache), shared by
    the xdist workers (entries are file-locked, so a teacher is trained once)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the workers' common temporary root
    cache = Path(os.environ.get("DISTILL_TEST_CACHE") or base / "distill-cache")
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["DISTILL_CACHE"] = str(cache)
    return cache


def tiny_teacher_yaml(path: Path, steps: int = 300, dataset: str = "8gaussians") -> Path:
    """A fast teacher-training config (a few seconds) for tests of the machinery."""
    path.write_text(
        f"name: tiny-teacher\n"
        f"data: {{name: {dataset}, n: 4096, n_test: 2048}}\n"
        f"student: {{name: mlp, hidden: 64, depth: 2}}\n"
        f"method: {{name: teacher}}\n"
        f"train: {{steps: {steps}, batch_size: 256, lr: 2.0e-3, checkpoint_every: 100, progress: false}}\n"
        f"eval: {{nfe: [1, 4], n_samples: 1000, timing_repeats: 1}}\n"
    )
    return path


@pytest.fixture(scope="session")
def tiny_trained_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of a tiny 8gaussians teacher (600 steps, a few seconds), trained once per
    worker and shared by the short method runs (cd, dmd2, ...)."""
    from distill.config import load_config
    from distill.runner import run

    root = tmp_path_factory.mktemp("tiny-teacher")
    run(load_config(tiny_teacher_yaml(root / "teacher.yaml", steps=600)), root / "run", evaluate=False)
    return root / "run"
