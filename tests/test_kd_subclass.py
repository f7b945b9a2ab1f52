"""Few-class distillation (lelp): merged classes, the pseudo-subclass fit, the subclass
classifier, an end-to-end run, and its bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data.features_file import FeaturesFileConfig
from distill.data.mnist1d import Mnist1DConfig
from distill.errors import ConfigError, DataError
from distill.kd.export import load_classifier
from distill.kd.methods.subclass import fit_pseudo_subclasses
from distill.models.classifiers import MLPClassifierConfig, SubclassClassifier
from distill.runner import run
from test_kd_classify import blobs_npz, classify_config

GROUPS = [[0, 1], [2, 3]]


def test_class_groups_merge_labels_into_group_indices(tmp_path: Path):
    data = Mnist1DConfig(class_groups=[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]).build()
    digits = Mnist1DConfig().build()
    assert data.num_classes == 2
    assert torch.equal(data.train_labels, (digits.train_labels >= 5).long())
    assert torch.equal(data.test_labels, (digits.test_labels >= 5).long())
    path = blobs_npz(tmp_path / "four.npz", classes=4)
    plain = FeaturesFileConfig(path=path).build().train_labels
    merged = FeaturesFileConfig(path=path, class_groups=[[0, 3], [1, 2]]).build().train_labels
    assert torch.equal(merged, torch.tensor([0, 1, 1, 0])[plain])


def test_class_groups_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(ValueError, match="more than one group"):
        Mnist1DConfig(class_groups=[[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="at least two non-empty groups"):
        Mnist1DConfig(class_groups=[list(range(10))])
    with pytest.raises(DataError, match=r"leaves classes \[5, 6, 7, 8, 9\] of 'mnist1d' out"):
        Mnist1DConfig(class_groups=[[0, 1], [2, 3, 4]]).build()
    with pytest.raises(DataError, match="names class 12 but 'mnist1d' has classes 0..9"):
        Mnist1DConfig(class_groups=[list(range(10)), [12]]).build()


def test_subclass_classifier_sums_subclass_probabilities():
    model = MLPClassifierConfig(hidden=[8], subclasses=3).make_classifier((4,), 2)
    assert isinstance(model, SubclassClassifier) and model.head.out_features == 6
    x = torch.randn(5, 4)
    sub = model.subclass_logits(x)
    assert sub.shape == (5, 2, 3)
    torch.testing.assert_close(model(x).softmax(-1), sub.flatten(1).softmax(-1).view(5, 2, 3).sum(-1))
    with pytest.raises(ValueError, match="at most one of"):
        MLPClassifierConfig(hidden=[8], subclasses=3, exits=[0])


def test_pseudo_subclass_axes_ignore_the_head_and_standardise_each_class():
    gen = torch.Generator().manual_seed(0)
    head = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    embeddings = torch.randn(400, 6, generator=gen, dtype=torch.float64) * torch.tensor([1, 2, 3, 4, 5, 6.0])
    predicted = (embeddings @ head.T).argmax(-1)
    axes, offsets = fit_pseudo_subclasses(embeddings, predicted, head, num_classes=2, directions=3)
    assert axes.shape == (2, 3, 6) and offsets.shape == (2, 3)
    # every axis is orthogonal to the head's rows: the class evidence is not re-used
    torch.testing.assert_close(axes.double() @ head.T, torch.zeros(2, 3, 2, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    for c in range(2):
        proj = embeddings[predicted == c].float() @ axes[c].T - offsets[c]
        torch.testing.assert_close(proj.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
        torch.testing.assert_close(proj.var(0), torch.ones(3), atol=1e-3, rtol=0)
        # principal directions: decreasing unstandardised variance, orthogonal to each other
        unit = axes[c] / axes[c].norm(dim=1, keepdim=True)
        torch.testing.assert_close(unit @ unit.T, torch.eye(3), atol=1e-4, rtol=0)
        spread = (embeddings[predicted == c].float() @ unit.T).var(0)
        assert spread[0] >= spread[1] >= spread[2]
    with pytest.raises(ConfigError, match="directions 6 must be below the teacher's embedding width 6"):
        fit_pseudo_subclasses(embeddings, predicted, head, num_classes=2, directions=6)
    with pytest.raises(ConfigError, match="predicts class 1 for only 0 training rows"):
        fit_pseudo_subclasses(embeddings, torch.zeros(400, dtype=torch.long), head, 2, 3)


@pytest.fixture(scope="module")
def two_class_blobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four blobs merged into two classes, and a teacher trained on the two classes."""
    root = tmp_path_factory.mktemp("few")
    data = blobs_npz(root / "four.npz", classes=4, x_unlabelled=np.random.default_rng(1).normal(size=(120, 6)).astype(np.float32))
    cfg = classify_config("t", data, {"name": "supervised"}, hidden=[32])
    cfg = cfg.model_copy(update={"data": FeaturesFileConfig(path=data, class_groups=GROUPS)})
    run(cfg, root / "teacher")
    return data, root / "teacher"


def lelp_config(data: Path, teacher: Path, **method):
    cfg = classify_config("s", data, {"name": "lelp", "directions": 2, **method},
                          teacher={"name": "run", "path": str(teacher)})
    return cfg.model_copy(update={"data": FeaturesFileConfig(path=data, class_groups=GROUPS)})


def test_teacher_subclass_targets_keep_the_teachers_class_probabilities(two_class_blobs, tmp_path: Path):
    from distill.kd.task import build_classify  # the method as the runner builds it

    data, teacher = two_class_blobs
    method = build_classify(lelp_config(data, teacher))[3]
    x = torch.randn(7, 6)
    sub = method.teacher_subclass_logits(x)
    assert sub.shape == (7, 2, 4)
    torch.testing.assert_close(sub.flatten(1).softmax(-1).view(7, 2, 4).sum(-1), method.teacher(x).softmax(-1))


def test_lelp_exports_a_subclass_student_that_reloads(two_class_blobs, tmp_path: Path):
    data, teacher = two_class_blobs
    result = run(lelp_config(data, teacher), tmp_path / "lelp")
    model, meta = load_classifier(result.run_dir / "student")
    assert isinstance(model, SubclassClassifier) and meta["model"]["subclasses"] == 4
    student = {r["model"]: r for r in result.rows}["student"]
    assert student["accuracy"] > 0.9 and student["agreement"] > 0.9


def test_lelp_refuses_a_head_that_is_not_a_linear_layer(two_class_blobs, tmp_path: Path):
    data, teacher = two_class_blobs
    with pytest.raises(ConfigError, match="method.head 'blocks.1' is a Sequential, not the teacher's final nn.Linear"):
        run(lelp_config(data, teacher, head="blocks.1"), tmp_path / "bad")
    with pytest.raises(ConfigError, match="teacher has no module at path 'classifier'; its module paths are: blocks"):
        run(lelp_config(data, teacher, head="classifier"), tmp_path / "bad2")
