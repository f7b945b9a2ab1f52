"""Image metrics on scikit-learn's 8x8 digits: the cached feature net, FID and precision/recall.

One feature net is trained for the whole module (a few seconds, in the session's
$DISTILL_CACHE from conftest.py); the cache tests train tiny throwaway nets in tmp dirs.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.datasets import load_digits
from torch.nn import functional as F

from distill.metrics.feature_net import (
    FeatureNet,
    _cache_key,
    load_or_train_feature_net,
    train_feature_net,
)
from distill.metrics.fid import frechet_distance, image_metrics, kernel_distance, precision_recall

STEPS = 300  # held-out accuracy ~0.99 in ~2.5 s on 2 cores (the default, 600, is ~5 s)

Digits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def digits() -> Digits:
    """(train_x (1437, 1, 8, 8), train_y, test_x (360, 1, 8, 8), test_y), images in [-1, 1]."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16 * 2 - 1
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    train, test = order[:1437], order[1437:]
    return x[train], y[train], x[test], y[test]


@pytest.fixture(scope="module")
def trained(digits: Digits) -> tuple[FeatureNet, dict, float]:
    """The module's feature net, its info and the wall time of load_or_train (training)."""
    start = time.perf_counter()
    net, info = load_or_train_feature_net(*digits, steps=STEPS)
    return net, info, time.perf_counter() - start


def test_feature_net_is_accurate_and_frozen(digits: Digits, trained: tuple) -> None:
    net, info, seconds = trained
    print(f"feature net: {seconds:.2f} s, held-out accuracy {info['test_accuracy']:.4f}")
    assert info["test_accuracy"] >= 0.95
    assert (info["train_size"], info["test_size"], info["steps"]) == (1437, 360, STEPS)
    assert seconds < 30
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    test_x = digits[2]
    assert net(test_x).shape == (360, 10)
    assert net.features(test_x).shape == (360, net.feature_dim)
    assert 64 <= net.feature_dim <= 128
    assert FeatureNet(**info["config"]).config == net.config
    assert Path(info["path"]).parent == Path(os.environ["DISTILL_CACHE"]) / "feature-nets"


def test_feature_net_takes_larger_images() -> None:
    net = FeatureNet(channels=1, size=16, num_classes=10)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    assert net(x).shape == (4, 10)
    assert net.features(x).shape == (4, net.feature_dim)
    with pytest.raises(ValueError, match="at least 8x8"):
        FeatureNet(size=4)


def test_cache_is_hit_the_second_time(digits: Digits, trained: tuple) -> None:
    net, info, train_seconds = trained
    weights = Path(info["path"]) / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    start = time.perf_counter()
    # the same resolved hyperparameters, partly spelled out: the same entry
    again, again_info = load_or_train_feature_net(*digits, steps=STEPS, seed=0, augment=True)
    seconds = time.perf_counter() - start
    assert again_info["cached"] is True
    assert again_info["path"] == info["path"]
    assert again_info["test_accuracy"] == info["test_accuracy"]
    assert weights.stat().st_mtime_ns == mtime
    assert seconds < 1.0
    if not info["cached"]:  # (DISTILL_TEST_CACHE may hold it from an earlier session)
        assert seconds < train_seconds / 2
    assert not again.training and not any(p.requires_grad for p in again.parameters())
    for (name, a), (_, b) in zip(net.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_cache_key_covers_data_and_hyperparameters(digits: Digits) -> None:
    tensors = list(digits)
    hyper = {"steps": 10, "lr": 1e-3}
    key = _cache_key(tensors, hyper)
    assert _cache_key([t.clone() for t in tensors], dict(hyper)) == key
    assert _cache_key(tensors, {**hyper, "steps": 11}) != key
    changed = tensors[0].clone()
    changed[0, 0, 0, 0] += 0.5
    assert _cache_key([changed, *tensors[1:]], hyper) != key


@pytest.mark.parametrize("damage", ["garbage-weights", "missing-weights", "garbage-info"])
def test_corrupt_cache_entry_is_retrained_with_a_warning(
    digits: Digits, tmp_path: Path, damage: str
) -> None:
    _, info = load_or_train_feature_net(*digits, steps=10, cache_dir=tmp_path)
    entry = Path(info["path"])
    assert info["cached"] is False and entry.parent == tmp_path
    if damage == "garbage-weights":
        (entry / "model.safetensors").write_bytes(b"\x00not a safetensors file")
    elif damage == "missing-weights":
        (entry / "model.safetensors").unlink()
    else:
        (entry / "info.json").write_text("{truncated")
    with pytest.warns(UserWarning, match="unreadable") as record:
        net, retrained = load_or_train_feature_net(*digits, steps=10, cache_dir=tmp_path)
    assert str(entry) in str(record[0].message)
    assert retrained["cached"] is False
    assert net(digits[2][:5]).shape == (5, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, hit = load_or_train_feature_net(*digits, steps=10, cache_dir=tmp_path)
    assert hit["cached"] is True
    # only the entry and its lock file: no temporary directories left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([entry.name, entry.name + ".lock"])


def test_concurrent_callers_train_once(digits: Digits, tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(
            lambda _: load_or_train_feature_net(*digits, steps=5, cache_dir=tmp_path)[1], range(2)))
    assert sorted(info["cached"] for info in results) == [False, True]


def test_training_is_deterministic_per_seed(digits: Digits) -> None:
    a, _ = train_feature_net(*digits, steps=5, seed=3)
    b, _ = train_feature_net(*digits, steps=5, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_frechet_distance_closed_forms() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 16, generator=generator, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shift = torch.linspace(-1, 1, 16, dtype=torch.float64)
    # a shift moves only the mean: FID = |shift|^2 exactly
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-9)
    # 1-D Gaussians: FID = (mu1 - mu2)^2 + (s1 - s2)^2, exactly with the sample statistics
    x = 1.0 + 2.0 * torch.randn(20000, 1, generator=generator, dtype=torch.float64)
    y = -0.5 + 0.5 * torch.randn(20000, 1, generator=generator, dtype=torch.float64)
    exact = float((x.mean() - y.mean()) ** 2 + (x.std() - y.std()) ** 2)
    assert frechet_distance(x, y) == pytest.approx(exact, rel=1e-9)
    assert frechet_distance(x, y) == pytest.approx(1.5**2 + 1.5**2, rel=0.03)


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    generator = torch.Generator().manual_seed(1)
    mix = torch.randn(8, 8, generator=generator, dtype=torch.float64)
    a = torch.randn(500, 8, generator=generator, dtype=torch.float64) @ mix
    b = torch.randn(700, 8, generator=generator, dtype=torch.float64) * 0.7 + 0.3
    an, bn = a.numpy(), b.numpy()
    cov_a, cov_b = np.cov(an, rowvar=False), np.cov(bn, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((an.mean(0) - bn.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(float(expected), rel=1e-8)
    # fewer samples than dimensions: singular covariances, still finite and non-negative
    value = frechet_distance(a[:5] @ torch.ones(8, 32, dtype=torch.float64), b[:6] @ mix.repeat(1, 4))
    assert math.isfinite(value) and value >= 0
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(a, b[:, :4])


def test_precision_recall_sanity() -> None:
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(1000, 8, generator=generator)
    assert precision_recall(real, real.clone()) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(real, real + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0}
    # a collapsed generator: every sample is realistic, but it covers a small part of real
    subset = precision_recall(real, real[real[:, 0] > 1.0])
    assert subset["precision"] == 1.0 and subset["recall"] < 0.5
    other = precision_recall(real, torch.randn(1000, 8, generator=generator))
    assert other["precision"] > 0.6 and other["recall"] > 0.6
    with pytest.raises(ValueError, match="more than k=3"):
        precision_recall(real, real[:3])


def _blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def _shuffle_pixels(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flat = x.flatten(1)
    order = torch.rand(flat.shape, generator=generator).argsort(dim=1)
    return flat.gather(1, order).view_as(x)


def test_image_metrics_rank_real_above_corrupted(digits: Digits, trained: tuple) -> None:
    net, info, _ = trained
    train_x, _, test_x, test_y = digits
    generator = torch.Generator().manual_seed(0)
    real = image_metrics(test_x, train_x, net, fake_labels=test_y)
    assert set(real) == {"fid", "kid", "kid_se", "precision", "recall", "class_accuracy"}
    assert abs(real["kid"]) < 3 * real["kid_se"] + 1e-3  # two draws of the same digits: KID ~ 0
    assert real["class_accuracy"] >= 0.95
    assert real["class_accuracy"] == pytest.approx(info["test_accuracy"])
    assert real["precision"] > 0.7 and real["recall"] > 0.7
    corrupted = {
        "noise": torch.rand(360, 1, 8, 8, generator=generator) * 2 - 1,
        "blurred": _blur(test_x),
        "shuffled": _shuffle_pixels(test_x, generator),
    }
    for name, images in corrupted.items():
        metrics = image_metrics(images, train_x, net)
        assert "class_accuracy" not in metrics
        assert metrics["fid"] > 5 * real["fid"], (name, metrics, real)
        assert metrics["kid"] - 3 * metrics["kid_se"] > real["kid"] + 3 * real["kid_se"], (name, metrics, real)
        # k-NN balls of outlying real samples are wide, so some junk lands inside: loose bounds
        assert metrics["precision"] < 0.5 and metrics["recall"] < 0.3, (name, metrics, real)
    wrong = image_metrics(test_x, train_x, net, fake_labels=(test_y + 1) % 10)
    assert wrong["class_accuracy"] < 0.05
    assert wrong["fid"] == real["fid"]


def test_image_metrics_rejects_the_wrong_size(digits: Digits, trained: tuple) -> None:
    net = trained[0]
    train_x = digits[0]
    with pytest.raises(ValueError, match=r"\(4, 1, 16, 16\).*8x8"):
        image_metrics(torch.zeros(4, 1, 16, 16), train_x, net)
    with pytest.raises(ValueError, match="fake images"):
        image_metrics(torch.zeros(4, 3, 8, 8), train_x, net)
    with pytest.raises(ValueError, match="fake_labels"):
        image_metrics(train_x[:10], train_x, net, fake_labels=torch.zeros(9, dtype=torch.long))


def test_kernel_distance_is_unbiased_and_resolves_a_shift() -> None:
    """KID between two draws of one Gaussian averages 0 (unbiased: no small-sample floor, unlike
    FID), a shifted draw lies far outside its interval, the value is the plain U-statistic,
    and the jackknife error is near the spread over independent draws."""
    gen = torch.Generator().manual_seed(0)
    draws = [kernel_distance(torch.randn(200, 8, generator=gen), torch.randn(300, 8, generator=gen))
             for _ in range(30)]
    values = np.array([v for v, _ in draws])
    assert abs(values.mean()) < 3 * values.std() / np.sqrt(len(values))
    a, b = torch.randn(400, 8, generator=gen), torch.randn(300, 8, generator=gen)
    shifted, se = kernel_distance(a + 0.5, b)
    assert shifted > 10 * se > 0
    x, y = a.double().numpy(), b.double().numpy()
    k = lambda u, v: (u @ v.T / 8 + 1) ** 3  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    u_stat = ((kxx.sum() - np.trace(kxx)) / (400 * 399) + (kyy.sum() - np.trace(kyy)) / (300 * 299)
              - 2 * k(x, y).mean())
    assert kernel_distance(a, b)[0] == pytest.approx(u_stat, rel=1e-9, abs=1e-12)
    # the reference fixed, fresh fake draws: their spread is what the jackknife estimates
    fixed = [kernel_distance(torch.randn(200, 8, generator=gen) + 0.3, b) for _ in range(30)]
    spread = np.std([v for v, _ in fixed])
    assert 0.5 * spread < np.mean([e for _, e in fixed]) < 2 * spread
