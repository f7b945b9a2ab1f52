"""Config validation: errors name the key path, the bad value and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import apply_overrides, dump_config, load_config, validate_config
from distill.errors import ConfigError

GOOD = {
    "name": "x",
    "data": {"name": "8gaussians"},
    "teacher": {"name": "run", "path": "runs/t"},
    "student": {"name": "mlp", "init": "teacher"},
    "method": {"name": "ode-pairs"},
}


def with_changes(**sections) -> dict:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in GOOD.items()}
    for key, value in sections.items():
        raw[key] = value
    return raw


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    return str(info.value)


def test_good_config_validates_with_typed_sections():
    cfg = validate_config(GOOD)
    assert cfg.method.name == "ode-pairs" and cfg.method.student_steps == 1
    assert cfg.train.steps == 1000 and cfg.eval.nfe == [1, 2, 4, 8, 16, 32, 64]


def test_unknown_method_lists_registered_ones_and_suggests():
    message = error_of(with_changes(method={"name": "ode-pair"}))
    assert "method.name" in message and "'ode-pair'" in message
    assert "Did you mean 'ode-pairs'" in message
    assert "progressive" in message and "teacher" in message


def test_misspelt_key_suggests_closest():
    message = error_of(with_changes(method={"name": "ode-pairs", "teacher_stepz": 8}))
    assert "method.teacher_stepz: unknown key" in message
    assert "Did you mean 'method.teacher_steps'" in message


def test_misspelt_top_level_section():
    raw = dict(GOOD, trian={"steps": 5})
    assert "Did you mean 'train'" in error_of(raw)


@pytest.mark.parametrize("steps", [0, -5])
def test_non_positive_steps_rejected(steps):
    message = error_of(dict(GOOD, train={"steps": steps}))
    assert "train.steps" in message and f"got {steps}" in message


def test_wrong_type_names_key_and_value():
    message = error_of(dict(GOOD, train={"batch_size": "big"}))
    assert "train.batch_size" in message and "'big'" in message


def test_unknown_dataset_name():
    message = error_of(with_changes(data={"name": "8gausians"}))
    assert "data.name" in message and "Did you mean '8gaussians'" in message


def test_missing_method_name():
    assert "method.name is missing" in error_of(with_changes(method={"pairs": 3}))


def test_overrides_are_typed():
    raw = apply_overrides(GOOD, ["train.steps=200", "eval.nfe=[1,2,4]", "train.ema_decay=0.99",
                                 "method.loss=pseudo-huber"])
    cfg = validate_config(raw)
    assert cfg.train.steps == 200 and cfg.eval.nfe == [1, 2, 4]
    assert cfg.train.ema_decay == 0.99 and cfg.method.loss == "pseudo-huber"


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides(GOOD, ["train.steps"])


def test_load_config_reports_file_problems(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_resolved_config_round_trips(tmp_path: Path):
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(GOOD))
    cfg = load_config(path, ["train.steps=7"])
    again = validate_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg and again.train.steps == 7


def test_every_shipped_config_validates():
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)
