"""The classifier methods beyond logit KD: dual heads (dho), online KD (bd-kd), self-distillation
and feature distillation, run end to end on a small features file, with their bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill.config import validate_config
from distill.errors import ConfigError, ModelMismatchError
from distill.kd.export import load_classifier
from distill.kd.methods.online import balanced_divergence
from distill.kd.task import build_classify
from distill.models.classifiers import DualHeadClassifier, MLPClassifierConfig
from distill.runner import run
from distill.train.batches import BatchStream
from test_kd_classify import blobs_npz, classify_config


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A three-class features file and a trained teacher run on it."""
    root = tmp_path_factory.mktemp("blobs")
    data = blobs_npz(root / "three.npz", classes=3, x_unlabelled=torch.randn(120, 6).numpy())
    run(classify_config("t", data, {"name": "supervised"}, hidden=[32]), root / "teacher")
    return data, root / "teacher"


def teacher_of(path: Path) -> dict:
    return {"name": "run", "path": str(path)}


def test_dual_head_prediction_mixes_the_two_heads():
    model = MLPClassifierConfig(hidden=[8], dual_head={"alpha": 0.25, "beta": 0.5}).make_classifier((4,), 3)
    assert isinstance(model, DualHeadClassifier)
    x = torch.randn(5, 4)
    label, distill = model.heads(x)
    expected = 0.75 * label.softmax(-1) + 0.25 * (distill / 0.5).softmax(-1)
    torch.testing.assert_close(model(x).exp(), expected)
    torch.testing.assert_close(model(x).exp().sum(-1), torch.ones(5))


def test_dho_exports_one_dual_head_model_that_reloads(blobs, tmp_path: Path):
    data, teacher = blobs
    cfg = classify_config("s", data, {"name": "dho", "label_fraction": 0.5, "inference_alpha": 0.7},
                          teacher=teacher_of(teacher))
    result = run(cfg, tmp_path / "dho")
    model, meta = load_classifier(result.run_dir / "student")
    assert isinstance(model, DualHeadClassifier) and model.alpha == 0.7
    assert meta["model"]["dual_head"] == {"alpha": 0.7, "beta": 1.0}
    student = {r["model"]: r for r in result.rows}["student"]
    assert student["accuracy"] > 0.5 and 0 <= student["agreement"] <= 1


def test_online_kd_trains_a_peer_beside_the_student(blobs, tmp_path: Path):
    data, _ = blobs
    cfg = classify_config("s", data, {"name": "bd-kd", "peer": {"name": "mlp-classifier", "hidden": [32]},
                                      "peer_lr": 5e-3})
    result = run(cfg, tmp_path / "bd")
    assert [r["model"] for r in result.rows] == ["student"]  # no teacher: the peer is not exported
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "loss/peer/kd" in logged[-1]
    assert logged[0]["lr/peer"] == pytest.approx(5e-3) and logged[0]["lr/student"] == pytest.approx(1e-2)
    with pytest.raises(ConfigError, match="method.peer.name 'unet' is not a classifier backbone"):
        classify_config("s", data, {"name": "bd-kd", "peer": {"name": "unet"}})


def test_balanced_divergence_is_zero_between_equal_predictions_and_positive_otherwise():
    logits = torch.randn(6, 5)
    assert balanced_divergence(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert balanced_divergence(logits, torch.randn(6, 5), 2.0).item() > 0


def test_self_distillation_needs_a_teacher_of_the_students_architecture(blobs, tmp_path: Path):
    data, teacher = blobs
    for loss in ("mse", "kl"):  # the teacher has hidden [32], the student [16]
        cfg = classify_config("s", data, {"name": "self-distill", "loss": loss}, teacher=teacher_of(teacher))
        with pytest.raises(ModelMismatchError, match="self-distill needs a teacher with the student's architecture"):
            run(cfg, tmp_path / f"self-{loss}")
    same = classify_config("s", data, {"name": "self-distill"}, teacher=teacher_of(teacher), hidden=[32])
    assert {r["model"] for r in run(same, tmp_path / "self").rows} == {"teacher", "student"}


def test_feature_distillation_refuses_a_wrong_module_path_before_training(blobs, tmp_path: Path):
    data, teacher = blobs
    pairs = [{"student": "blocks.1", "teacher": "blocks.1"}, {"student": "blocks.1", "teacher": "blocks.9"}]
    cfg = classify_config("s", data, {"name": "features", "pairs": pairs}, teacher=teacher_of(teacher))
    with pytest.raises(ConfigError, match=r"teacher has no module at path 'blocks\.9'.*blocks\.1\.0"):
        run(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad" / "checkpoints").exists()
    pairs[1]["teacher"] = "blocks.1"
    pairs[1]["loss"] = "relation"
    result = run(classify_config("s", data, {"name": "features", "pairs": pairs}, teacher=teacher_of(teacher)),
                 tmp_path / "ok")
    assert '"loss/student/hint:blocks.1"' in (result.run_dir / "metrics.jsonl").read_text()


def test_features_config_needs_pairs():
    with pytest.raises(ConfigError, match="pairs"):
        validate_config({"name": "x", "data": {"name": "mnist1d"}, "student": {"name": "cnn1d"},
                         "method": {"name": "features"}})


def test_ofa_loss_weights_the_target_class_up_and_is_soft_targets_at_eps_one():
    from distill.kd.methods.ofa import ofa_loss

    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    target = teacher.argmax(-1)
    soft_ce = -(teacher.softmax(-1) * student.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(ofa_loss(student, teacher, target, eps=1.0), soft_ce)
    p_t, log_p_s = teacher.softmax(-1), student.log_softmax(-1)
    rows = torch.arange(4)
    weight = p_t.pow(2.0)
    weight[rows, target] = (1 + p_t[rows, target]).pow(2.0) - 1
    torch.testing.assert_close(ofa_loss(student, teacher, target, eps=2.0), -(weight * log_p_s).sum(-1).mean())


def test_ofa_trains_a_branch_per_stage(blobs, tmp_path: Path):
    data, teacher = blobs
    cfg = classify_config("s", data, {"name": "ofa", "stages": ["blocks.1"], "eps": 1.5},
                          teacher=teacher_of(teacher))
    result = run(cfg, tmp_path / "ofa")
    assert '"loss/student/ofa:blocks.1"' in (result.run_dir / "metrics.jsonl").read_text()
    assert {r["model"] for r in result.rows} == {"teacher", "student"}


def test_meal_distils_an_ensemble_and_checks_every_teacher(blobs, tmp_path: Path):
    data, teacher = blobs
    method = {"name": "meal", "teachers": [teacher_of(teacher)], "adv_weight": 0.1}
    result = run(classify_config("s", data, method, teacher=teacher_of(teacher)), tmp_path / "meal")
    logged = (result.run_dir / "metrics.jsonl").read_text()
    assert '"loss/discriminator/bce"' in logged and '"loss/student/adversarial"' in logged
    four = blobs_npz(tmp_path / "four.npz", classes=4)
    run(classify_config("t4", four, {"name": "supervised"}, hidden=[32]), tmp_path / "teacher4")
    method["teachers"] = [teacher_of(tmp_path / "teacher4")]
    with pytest.raises(ModelMismatchError, match=r"predicts 4 classes but data .*method\.teachers\[0\]"):
        run(classify_config("s", data, method, teacher=teacher_of(teacher)), tmp_path / "bad")
    with pytest.raises(ConfigError, match=r"method\.teachers\[0\] must be a teacher section"):
        classify_config("s", data, {"name": "meal", "teachers": [{"name": "nowhere"}]})


def test_multi_teacher_routes_between_teachers(blobs, tmp_path: Path):
    data, teacher = blobs
    method = {"name": "multi-teacher", "teachers": [teacher_of(teacher)], "router_width": 8}
    result = run(classify_config("s", data, method, teacher=teacher_of(teacher)), tmp_path / "mt")
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/student/router", "loss/student/kd"} <= set(logged[-1])
    with pytest.raises(ConfigError, match="teachers"):
        classify_config("s", data, {"name": "multi-teacher", "teachers": []})


def test_hsd_exports_a_network_that_exits_early(blobs, tmp_path: Path):
    data, _ = blobs
    method = {"name": "hsd", "exits": [0], "eval_exit": 0}
    result = run(classify_config("s", data, method, hidden=[16, 16]), tmp_path / "hsd")
    model, meta = load_classifier(result.run_dir / "student")
    assert meta["model"]["exits"] == [0] and meta["model"]["use_exit"] == 0
    x = torch.randn(4, 6)
    early, final = model.exit_logits(x)
    torch.testing.assert_close(model(x), early)
    assert {r["model"] for r in result.rows} == {"student"}
    with pytest.raises(ConfigError, match="eval_exit 1 is not one of exits"):
        classify_config("s", data, {"name": "hsd", "exits": [0], "eval_exit": 1})
    with pytest.raises(ConfigError, match=r"student.exits \[2\]: this mlp-classifier has blocks 0..2"):
        run(classify_config("s", data, {"name": "hsd", "exits": [2]}, hidden=[16, 16]), tmp_path / "bad")


@pytest.mark.parametrize("method", [
    {"name": "kd"}, {"name": "dkd"}, {"name": "ofa", "stages": ["blocks.0"]}, {"name": "dho"},
    {"name": "meal", "teachers": "SELF"}, {"name": "multi-teacher", "teachers": "SELF", "router_width": 8}])
def test_precomputed_teacher_outputs_equal_the_live_teacher_and_replace_its_forward(blobs, method):
    """Teacher outputs for every training row are computed once (precompute_teacher) and equal
    what the frozen teacher gives live; training steps then never run the teacher."""

    data, teacher = blobs
    if method.get("teachers") == "SELF":
        method = {**method, "teachers": [teacher_of(teacher)]}
    _, _, _, live = build_classify(classify_config("s", data, {**method, "precompute_teacher": False},
                                                   teacher=teacher_of(teacher)))
    assert "teacher_outputs" not in live.train_data()
    _, _, _, cached = build_classify(classify_config("s", data, method, teacher=teacher_of(teacher)))
    rows = cached.train_data()
    batch = {k: v[:64] for k, v in rows.items()}
    torch.testing.assert_close(batch["teacher_outputs"], live.teacher_outputs(batch["x"]))
    calls = []
    cached.teacher.register_forward_hook(lambda *_: calls.append(1))
    for group in [g.name for g in cached.param_groups()]:
        cached(batch, group, 0)
    assert calls == []
    assert calls == []
    live.teacher.register_forward_hook(lambda *_: calls.append(1))
    live({k: v for k, v in batch.items() if k != "teacher_outputs"}, live.param_groups()[0].name, 0)
    assert calls  # without precompute_teacher the teacher runs at every step


def test_kd_with_mixup_keeps_a_live_teacher(blobs):

    data, teacher = blobs
    _, _, _, method = build_classify(classify_config("s", data, {"name": "kd", "mixup": 0.4}, teacher=teacher_of(teacher)))
    assert "teacher_outputs" not in method.train_data()


def test_labelled_share_fixes_the_labelled_rows_per_batch_and_needs_unlabelled_rows(blobs, tmp_path: Path):
    data, teacher = blobs
    cfg = classify_config("s", data, {"name": "kd", "labelled_share": 0.25}, teacher=teacher_of(teacher))
    _, _, _, method = build_classify(cfg)
    rows, strata = method.train_data(), method.batch_strata()
    batch = BatchStream(rows, 32, seed=0, strata=strata).next()
    assert int((batch["y"] != -100).sum()) == 8  # 1/4 of 32, although most rows are unlabelled
    assert run(cfg, tmp_path / "kd-share").rows  # trains, exports and evaluates
    no_unlabelled = classify_config("s", data, {"name": "supervised", "labelled_share": 0.5})
    with pytest.raises(ConfigError, match="method.labelled_share=0.5 splits batches"):
        run(no_unlabelled, tmp_path / "sup-share")


def test_labelled_share_larger_than_the_labelled_rows_is_a_config_error(blobs, tmp_path: Path):
    data, teacher = blobs  # 10% of the labels: 18 labelled training rows
    cfg = classify_config("s", data, {"name": "kd", "labelled_share": 0.9, "label_fraction": 0.1},
                          teacher=teacher_of(teacher))
    with pytest.raises(ConfigError, match=r"train.batch_size=64 draws 58 rows of batch stratum 0 .*"
                                          r"only 18 of them.*method.labelled_share"):
        run(cfg, tmp_path / "too-few")


def test_stratified_batches_resume_where_they_stopped(blobs, tmp_path: Path):
    data, teacher = blobs

    def kd_run(steps: int, run_dir: Path) -> dict:
        cfg = classify_config("s", data, {"name": "kd", "labelled_share": 0.5}, teacher=teacher_of(teacher))
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": steps, "checkpoint_every": 10})})
        run(cfg, run_dir, evaluate=False)
        return load_file(run_dir / "student" / "model.safetensors")

    straight = kd_run(30, tmp_path / "straight")
    kd_run(20, tmp_path / "resumed")
    resumed = kd_run(30, tmp_path / "resumed")  # resumes from step 20's checkpoint
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
