"""Checkpoints are atomic and verified: corrupt or half-written ones are skipped, and a
failed write (full disk) leaves the previous good checkpoint as `latest`."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from distill.errors import CheckpointError
from distill.train import checkpoint
from test_trainer import Regression, make_trainer


def trained(tmp_path: Path, steps: int = 10, every: int = 5):
    trainer = make_trainer(Regression(), tmp_path, steps=steps)
    trainer.cfg.checkpoint_every = every
    trainer.cfg.keep_checkpoints = 5
    trainer.fit()
    return trainer


def test_truncated_checkpoint_is_reported_and_skipped(tmp_path: Path):
    trained(tmp_path)
    root = tmp_path / "checkpoints"
    newest = root / "step-00000010" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:40])
    good, problems = checkpoint.latest_valid(root)
    assert good.name == "step-00000005"
    assert "step-00000010" in problems[0] and "truncated" in problems[0]
    # a trainer resuming here moves the broken one aside and continues from step 5
    trainer = make_trainer(Regression(), tmp_path, steps=10)
    assert trainer.resume() == 5
    assert (root / "corrupt" / "step-00000010").is_dir()
    trainer.fit()  # re-reaches step 10 and writes a fresh, valid checkpoint
    assert checkpoint.verify(root / "step-00000010") is None


def test_flipped_byte_is_detected(tmp_path: Path):
    trained(tmp_path)
    path = tmp_path / "checkpoints" / "step-00000010" / "optimizers.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "checksum" in checkpoint.verify(path.parent)


def test_half_written_checkpoints_are_ignored(tmp_path: Path):
    trained(tmp_path)
    root = tmp_path / "checkpoints"
    (root / ".tmp-step-00000015").mkdir()  # killed while staging
    unfinished = root / "step-00000020"
    unfinished.mkdir()  # a directory with no manifest
    good, problems = checkpoint.latest_valid(root)
    assert good.name == "step-00000010" and "MANIFEST" in problems[0]


def test_full_disk_during_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch):
    trainer = make_trainer(Regression(), tmp_path, steps=10)
    trainer.cfg.checkpoint_every = 5
    real_save = checkpoint.save_file
    calls = {"n": 0}

    def failing_save(tensors, path, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, path, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", failing_save)
    with pytest.raises(CheckpointError) as info:
        trainer.fit()
    assert "No space left" in str(info.value) and "step-00000005 is intact" in str(info.value)
    root = tmp_path / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-00000005"]
    assert checkpoint.verify(root / "step-00000005") is None


def test_keep_prunes_old_checkpoints(tmp_path: Path):
    trainer = make_trainer(Regression(), tmp_path, steps=20)
    trainer.cfg.checkpoint_every = 5
    trainer.fit()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000015", "step-00000020"]


def test_rng_state_round_trips():
    state = checkpoint.rng_state()
    a = torch.rand(3)
    checkpoint.set_rng_state(state)
    assert torch.equal(a, torch.rand(3))
