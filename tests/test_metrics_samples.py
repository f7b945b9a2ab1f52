"""Sample distances against closed forms for Gaussians, and mode coverage on 8gaussians."""

from __future__ import annotations

import math

import pytest
import torch

from distill.data.toy2d import EIGHT_GAUSSIANS_STD, eight_gaussians_modes, sample_8gaussians
from distill.metrics import samples
from distill.metrics.samples import (
    BANDWIDTHS,
    _rbf_sum,
    energy_distance,
    energy_self_term,
    mmd_rbf,
    mmd_self_term,
    mode_coverage,
    mode_shares,
    sliced_wasserstein,
    subset_share,
)


def _gaussians(n: int, dim: int, shift: list[float], seed: int) -> tuple[torch.Tensor, ...]:
    """a ~ N(0, I), b ~ N(shift, I): both (n, dim)."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, dim, generator=generator)
    return a, torch.randn(n, dim, generator=generator) + torch.tensor(shift)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_identical_sets_are_at_distance_zero() -> None:
    a, b = _gaussians(2000, 2, [0.0, 0.0], seed=0)
    assert sliced_wasserstein(a, a) == 0.0
    assert sliced_wasserstein(a, a.clone()) == 0.0
    assert abs(energy_distance(a, a)) < 2e-3  # U-statistics: O(1/N) below zero
    assert abs(mmd_rbf(a, a)) < 5e-3
    assert sliced_wasserstein(a, b) < 0.1  # same distribution, 2000 points
    assert abs(energy_distance(a, b)) < 5e-3
    assert abs(mmd_rbf(a, b)) < 5e-3


def test_sliced_wasserstein_shifted_gaussians() -> None:
    # Projection on theta: N(0, 1) vs N(theta.mu, 1), W2 = |theta.mu|, E[(theta.mu)^2] = |mu|^2/D.
    mu = [2.0, 1.0]
    expected = math.hypot(*mu) / math.sqrt(2)
    a, b = _gaussians(10_000, 2, mu, seed=1)
    assert sliced_wasserstein(a, b, n_projections=512) == pytest.approx(expected, rel=0.05)
    assert sliced_wasserstein(a, b[:4000], n_projections=512) == pytest.approx(expected, rel=0.05)
    assert sliced_wasserstein(a[:999], b) == sliced_wasserstein(a[:999], b)  # same directions
    assert sliced_wasserstein(a[:5], b[:9]) >= 0.0


def test_mmd_shifted_gaussians() -> None:
    # E k_h(X, Y) = (h^2 / (h^2 + 2 s^2))^(D/2) exp(-|mu|^2 / (2 (h^2 + 2 s^2))), s = 1, summed over h.
    mu, dim, bandwidths = [1.5, 0.0], 2, (0.5, 1.0, 2.0)
    expected = sum(
        2 * (h * h / (h * h + 2)) ** (dim / 2) * (1 - math.exp(-(mu[0] ** 2) / (2 * (h * h + 2))))
        for h in bandwidths
    )
    a, b = _gaussians(6000, dim, mu, seed=2)
    assert mmd_rbf(a, b, bandwidths) == pytest.approx(expected, rel=0.06)


def test_energy_distance_shifted_gaussians_1d() -> None:
    # 2 E|Z| - E|X - X'| - E|Y - Y'|, Z = X - Y ~ N(mu, 2), X - X' ~ N(0, 2) so E|X - X'| = 2/sqrt(pi).
    mu, s = 1.0, math.sqrt(2)
    mean_abs = s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s * s)) + mu * (
        1 - 2 * _normal_cdf(-mu / s)
    )
    expected = 2 * mean_abs - 4 / math.sqrt(math.pi)
    a, b = _gaussians(5000, 1, [mu], seed=3)
    assert energy_distance(a, b) == pytest.approx(expected, rel=0.04)


@pytest.mark.parametrize(("dim", "rel"), [(3, 1e-7), (samples.DIRECT_DIMS + 4, 1e-9)])
def test_chunking_matches_direct_formulas(monkeypatch: pytest.MonkeyPatch, dim: int, rel: float) -> None:
    """Against float64 formulas: low-dimensional points (float32 kernel values, float64 sums)
    to 1e-7, wider vectors (float64 throughout) to 1e-9; chunking changes nothing."""
    a, b = _gaussians(50, dim, [0.5] + [0.0] * (dim - 1), seed=4)
    b = b[:37]
    expected_energy = energy_distance(a, b)
    expected_mmd = mmd_rbf(a, b)
    expected_swd = sliced_wasserstein(a, b)

    a64, b64 = a.double(), b.double()
    off = ~torch.eye(50, dtype=torch.bool)
    off_b = ~torch.eye(37, dtype=torch.bool)
    dab, daa, dbb = torch.cdist(a64, b64), torch.cdist(a64, a64), torch.cdist(b64, b64)
    direct_energy = 2 * dab.mean() - daa[off].mean() - dbb[off_b].mean()
    assert expected_energy == pytest.approx(direct_energy.item(), rel=rel, abs=1e-12)

    def k(d: torch.Tensor) -> torch.Tensor:
        return sum(torch.exp(-(d**2) / (2 * h * h)) for h in (0.05, 0.1, 0.2, 0.5, 1.0, 2.0))

    direct_mmd = k(daa)[off].mean() + k(dbb)[off_b].mean() - 2 * k(dab).mean()
    assert expected_mmd == pytest.approx(direct_mmd.item(), rel=rel, abs=1e-12)

    monkeypatch.setattr(samples, "CHUNK_ELEMENTS", 7)  # many tiny chunks, diagonal at offsets
    assert energy_distance(a, b) == pytest.approx(expected_energy, rel=1e-12)
    assert mmd_rbf(a, b) == pytest.approx(expected_mmd, rel=1e-12)
    assert sliced_wasserstein(a, b) == pytest.approx(expected_swd, rel=1e-12)
    cache: dict = {}  # the reference's sorted projections, kept across calls
    assert [sliced_wasserstein(x, b, b_cache=cache) for x in (a, a[:40], a)] == \
        [sliced_wasserstein(x, b) for x in (a, a[:40], a)]


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="got"):
        energy_distance(torch.zeros(5, 2), torch.zeros(5, 3))


def test_mode_coverage_full_and_partial() -> None:
    modes = eight_gaussians_modes()
    x = sample_8gaussians(4000, torch.Generator().manual_seed(0))
    full = mode_coverage(x, modes, EIGHT_GAUSSIANS_STD)
    assert full["mode_coverage"] == 1.0
    assert full["in_mode_fraction"] > 0.97  # 3 std in 2-D holds 1 - exp(-4.5) = 98.9 %
    assert 0.1 < full["min_mode_fraction"] <= 0.125

    generator = torch.Generator().manual_seed(1)
    which = torch.randint(0, 2, (1000,), generator=generator)
    two = modes[which] + EIGHT_GAUSSIANS_STD * torch.randn(1000, 2, generator=generator)
    partial = mode_coverage(two, modes, EIGHT_GAUSSIANS_STD)
    assert partial["mode_coverage"] == 0.25
    assert partial["min_mode_fraction"] == 0.0

    far = mode_coverage(torch.full((10, 2), 10.0), modes, EIGHT_GAUSSIANS_STD)
    assert far == {"mode_coverage": 0.0, "in_mode_fraction": 0.0, "min_mode_fraction": 0.0}


def test_mode_shares_count_each_sample_for_its_nearest_mode_within_3_std() -> None:
    modes = eight_gaussians_modes()
    x = torch.stack([modes[0], modes[0] + 0.25, modes[3], modes[3] + 0.5, torch.zeros(2)])
    shares = mode_shares(x, modes, EIGHT_GAUSSIANS_STD)
    # 0.25 off along both axes is 0.35 from the mode, beyond 3 std (0.3); 0.5 off is too
    assert shares.tolist() == [0.2, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0]
    assert mode_coverage(x, modes, EIGHT_GAUSSIANS_STD)["in_mode_fraction"] == pytest.approx(0.4)
    assert subset_share(x, modes, EIGHT_GAUSSIANS_STD, torch.arange(8) == 3) == pytest.approx(0.5)
    assert subset_share(x[-1:], modes, EIGHT_GAUSSIANS_STD, torch.arange(8) == 3) == 0.0  # none on a mode


def test_precomputed_reference_terms_give_the_same_distances():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(300, 2, generator=gen), torch.randn(400, 2, generator=gen) + 0.3
    assert mmd_rbf(a, b, b_self=mmd_self_term(b)) == mmd_rbf(a, b)
    assert energy_distance(a, b, b_self=energy_self_term(b)) == energy_distance(a, b)


@pytest.mark.parametrize("bandwidths", [BANDWIDTHS, (0.3, 0.7), (1.0, 0.5, 0.25, 3.0)])
def test_rbf_kernel_equals_the_sum_of_exponentials(bandwidths):
    """Exponents clamped at -60 (for speed) leave every value within 1e-26 of the exact one."""
    sq = torch.rand(300, 200, dtype=torch.float64) * 40
    direct = sum(torch.exp(-sq / (2 * h * h)) for h in bandwidths)
    torch.testing.assert_close(_rbf_sum(bandwidths)(sq), direct, rtol=1e-13, atol=1e-25)


def test_block_estimates_with_cached_reference_terms_equal_the_uncached():
    from distill.metrics.samples import energy_blocks, mmd_blocks

    gen = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(400, 2, generator=gen) for _ in range(3))
    cache: dict = {}
    for x in (a, c):  # the second set reuses the reference blocks' terms
        assert mmd_blocks(x, b, (0.1, 1.0), b_self=cache) == pytest.approx(mmd_blocks(x, b, (0.1, 1.0)), rel=1e-12)
        assert energy_blocks(x, b, b_self=cache) == pytest.approx(energy_blocks(x, b), rel=1e-12)
    assert len(cache) == 2 * 10  # one term per reference block and statistic
