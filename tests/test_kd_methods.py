"""The classifier methods beyond logit KD: dual heads (dho), online KD (bd-kd), self-distillation
and feature distillation, run end to end on a small features file, with their bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


def test_meal_checks_every_teacher(blobs, tmp_path: Path):
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


def specialist_npz(path: Path, wrong_on: int | None) -> Path:
    """3-class blobs whose last input is a domain flag (+1 / -1 on alternate rows); the labels of
    the rows of domain `wrong_on` are rotated (y + 1 mod 3), so a teacher trained on them is
    right on one domain and systematically wrong on the other (None: the true labels)."""
    rng = np.random.default_rng(0)
    def split(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        y = r.integers(0, 3, rows)
        domain = np.where(np.arange(rows) % 2 == 0, 1.0, -1.0)
        x = np.concatenate([centres[y] + r.normal(size=(rows, 4)), domain[:, None]], 1).astype(np.float32)
        if wrong_on is not None:
            y = np.where(domain == wrong_on, (y + 1) % 3, y)
        return x, y
    centres = rng.normal(size=(3, 4)) * 3
    (x, y), (x_test, y_test) = split(600, 1), split(300, 2)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    return path


def steps(cfg, n: int):
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": n})})


@pytest.fixture(scope="module")
def specialists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], torch.Tensor]:
    """The true-label features file, two teacher runs each wrong on one domain, and the
    held-out predictions of the two teachers' averaged softmax (test rows,)."""
    root = tmp_path_factory.mktemp("specialists")
    truth = specialist_npz(root / "truth.npz", None)
    teachers = []
    for wrong_on in (1, -1):
        data = specialist_npz(root / f"wrong{wrong_on}.npz", wrong_on)
        run(steps(classify_config(f"t{wrong_on}", data, {"name": "supervised"}, hidden=[32]), 300),
            root / f"t{wrong_on}")
        teachers.append(teacher_of(root / f"t{wrong_on}"))
    with torch.no_grad():
        x = torch.from_numpy(np.load(truth)["x_test"])
        mean = sum(load_classifier(Path(t["path"]) / "student")[0](x).softmax(-1) for t in teachers) / 2
    return truth, teachers, mean.argmax(-1)


@pytest.mark.gate("multi-teacher")
def test_multi_teacher_routes_each_input_to_the_teacher_that_is_right_there(specialists, tmp_path: Path):
    """Two specialists, each right on one domain and wrong on the other: distilling the routed
    mixture alone (alpha 1, no labels in the student's loss) the student is right on both,
    which neither teacher nor their plain average is (the router, trained on labels, picks
    per input)."""
    truth, teachers, averaged_prediction = specialists
    method = {"name": "multi-teacher", "teachers": [teachers[1]], "router_width": 16, "alpha": 1.0}
    rows = {r["model"]: r for r in run(steps(classify_config("s", truth, method, teacher=teachers[0], hidden=[32]),
                                             300), tmp_path / "mt").rows}
    y = torch.from_numpy(np.load(truth)["y_test"])
    averaged = (averaged_prediction == y).double().mean().item()
    print(f"multi-teacher accuracy {rows['student']['accuracy']:.3f}, teacher {rows['teacher']['accuracy']:.3f}, "
          f"the teachers' average {averaged:.3f}")
    assert rows["teacher"]["accuracy"] <= 0.7 and averaged <= 0.8  # each wrong on half the rows
    assert rows["student"]["accuracy"] >= 0.9
    logged = [json.loads(line) for line in (tmp_path / "mt" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/student/router", "loss/student/kd"} <= set(logged[-1])
    with pytest.raises(ConfigError, match="teachers"):
        classify_config("s", truth, {"name": "multi-teacher", "teachers": []})


@pytest.mark.gate("meal")
def test_meal_student_learns_the_teachers_average_not_one_teacher(specialists, tmp_path: Path):
    """MEAL's target is the teachers' averaged soft labels: between two specialists, one saying
    class y and the other y + 1 on every row, the student splits its probability between the
    two classes (about half each), where a student of one teacher would be sure."""
    truth, teachers, _ = specialists
    method = {"name": "meal", "teachers": [teachers[1]], "adv_weight": 0.1}
    result = run(steps(classify_config("s", truth, method, teacher=teachers[0], hidden=[32]), 300), tmp_path / "meal")
    one = run(steps(classify_config("k", truth, {"name": "kd", "alpha": 1.0}, teacher=teachers[0], hidden=[32]), 300),
              tmp_path / "kd")
    test = np.load(truth)
    y = torch.from_numpy(test["y_test"])
    found = {}
    for name, run_dir in (("meal", result.run_dir), ("kd of one teacher", one.run_dir)):
        with torch.no_grad():
            p = load_classifier(run_dir / "student")[0](torch.from_numpy(test["x_test"])).softmax(-1)
        both = (p.gather(1, y[:, None]) + p.gather(1, ((y + 1) % 3)[:, None])).mean().item()
        found[name] = (both, p.max(-1).values.mean().item())
    print(f"(mass on the two teachers' classes, mean top-1 probability): {found}")
    assert found["meal"][0] >= 0.9 and found["meal"][1] <= 0.75, found
    assert found["kd of one teacher"][1] >= 0.85, found


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
