"""distill.kd.losses: values pinned against hand / numpy computations, exact GKD endpoints, T²
scaling, masks and reductions, -inf teacher logits, float64 gradchecks and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distill.kd import losses as L

F64 = torch.float64

# (name, fn) for every loss; labels-taking ones get labels through the lambda
DIVERGENCES = {
    "forward_kl": L.forward_kl,
    "reverse_kl": L.reverse_kl,
    "jsd": lambda s, t, **kw: L.generalized_jsd(s, t, beta=0.3, **kw),
    "skew_forward_kl": lambda s, t, **kw: L.skew_forward_kl(s, t, alpha=0.2, **kw),
    "skew_reverse_kl": lambda s, t, **kw: L.skew_reverse_kl(s, t, alpha=0.2, **kw),
    "total_variation": L.total_variation,
}


def _labels_for(s: torch.Tensor) -> torch.Tensor:
    return torch.arange(s[..., 0].numel()).reshape(s.shape[:-1]) % s.shape[-1]


ALL_LOSSES = {
    **DIVERGENCES,
    "dkd": lambda s, t, **kw: L.dkd(s, t, _labels_for(s), alpha=1.0, beta=2.0, **kw),
    "pld": lambda s, t, **kw: L.pld(s, t, _labels_for(s), **kw),
    "pld_nolabel": lambda s, t, **kw: L.pld(s, t, **kw),
    "cprd": lambda s, t, **kw: L.cprd(s, t, _labels_for(s), num_negatives=3, **kw),
}


# --------------------------------------------------------------------------- numpy references


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * (np.log(p) - np.log(q))).sum(-1)


def rand_logits(*shape: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64), 2 * torch.randn(
        *shape, generator=g, dtype=F64
    )


# --------------------------------------------------------------------------- pinned values


def test_hand_computed_three_class_values():
    # student uniform (1/3 each), teacher (1/2, 1/4, 1/4)
    s = torch.zeros(1, 3, dtype=F64)
    t = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=F64))
    # KL(p_t || u) = .5 log(1.5) + .5 log(.75) = .5 log(9/8)
    assert L.forward_kl(s, t).item() == pytest.approx(0.5 * math.log(9 / 8), abs=1e-12)
    assert L.forward_kl(s, t).item() == pytest.approx(0.0588915178, abs=1e-9)
    # KL(u || p_t) = 1/3 [log(2/3) + 2 log(4/3)] = 1/3 log(32/27)
    assert L.reverse_kl(s, t).item() == pytest.approx(math.log(32 / 27) / 3, abs=1e-12)
    assert L.reverse_kl(s, t).item() == pytest.approx(0.0566330123, abs=1e-9)
    # TVD = 1/2 (|1/2 - 1/3| + 2 |1/4 - 1/3|) = 1/6
    assert L.total_variation(s, t).item() == pytest.approx(1 / 6, abs=1e-12)


def test_divergences_match_numpy_at_temperature_two():
    s, t = rand_logits(4, 3)
    T = 2.0
    ps, pt = np.exp(np_log_softmax(s.numpy() / T)), np.exp(np_log_softmax(t.numpy() / T))
    beta, alpha = 0.3, 0.2
    m = beta * pt + (1 - beta) * ps
    expected = {
        "forward_kl": np_kl(pt, ps),
        "reverse_kl": np_kl(ps, pt),
        "jsd": beta * np_kl(pt, m) + (1 - beta) * np_kl(ps, m),
        "skew_forward_kl": np_kl(pt, alpha * pt + (1 - alpha) * ps),
        "skew_reverse_kl": np_kl(ps, alpha * ps + (1 - alpha) * pt),
        "total_variation": 0.5 * np.abs(pt - ps).sum(-1),
    }
    for name, fn in DIVERGENCES.items():
        got = fn(s, t, temperature=T, reduction="none").numpy()
        np.testing.assert_allclose(got, T**2 * expected[name], rtol=1e-10, err_msg=name)
        assert fn(s, t, temperature=T).item() == pytest.approx(T**2 * expected[name].mean())


@pytest.mark.parametrize("name", sorted(DIVERGENCES) + ["dkd"])
def test_t_squared_scaling(name: str):
    fn = ALL_LOSSES[name]
    s, t = rand_logits(3, 5)
    for T in (0.5, 2.0, 4.0):
        scaled = fn(s, t, temperature=T)
        plain = fn(s / T, t / T, temperature=1.0)
        assert scaled.item() == pytest.approx(T**2 * plain.item(), rel=1e-12)


# --------------------------------------------------------------------------- GKD / skew endpoints


def test_generalized_jsd_endpoints_are_exact():
    s, t = rand_logits(2, 3, 7)
    for T in (1.0, 3.0):
        fwd = L.forward_kl(s, t, temperature=T, reduction="none")
        rev = L.reverse_kl(s, t, temperature=T, reduction="none")
        assert torch.equal(L.generalized_jsd(s, t, beta=0.0, temperature=T, reduction="none"), fwd)
        assert torch.equal(L.generalized_jsd(s, t, beta=1.0, temperature=T, reduction="none"), rev)
    # inside (0, 1) the mixture vanishes at the ends like beta * KL(p_t || p_s) (forward side)
    # and (1 - beta) * KL(p_s || p_t) (reverse side): the endpoints are special cases
    eps = 1e-5
    small = L.generalized_jsd(s, t, beta=eps) / eps
    large = L.generalized_jsd(s, t, beta=1 - eps) / eps
    assert small.item() == pytest.approx(L.forward_kl(s, t).item(), rel=1e-3)
    assert large.item() == pytest.approx(L.reverse_kl(s, t).item(), rel=1e-3)
    # beta = 1/2 is the symmetric JSD, bounded by log 2
    half = L.generalized_jsd(s, t, beta=0.5)
    assert half.item() == pytest.approx(L.generalized_jsd(t, s, beta=0.5).item(), rel=1e-12)
    assert 0 < half.item() < math.log(2)


def test_skew_kl_endpoints():
    s, t = rand_logits(3, 6)
    assert torch.equal(L.skew_forward_kl(s, t, alpha=0.0), L.forward_kl(s, t))
    assert torch.equal(L.skew_reverse_kl(s, t, alpha=0.0), L.reverse_kl(s, t))
    assert L.skew_forward_kl(s, t, alpha=1.0).item() == 0.0
    assert L.skew_reverse_kl(s, t, alpha=1.0).item() == 0.0
    # skewing only shrinks the divergence
    assert L.skew_forward_kl(s, t, alpha=0.1) < L.forward_kl(s, t)
    assert L.skew_reverse_kl(s, t, alpha=0.1) < L.reverse_kl(s, t)


# --------------------------------------------------------------------------- DKD


def test_dkd_matches_numpy_and_decomposes_kd():
    s, t = rand_logits(4, 5, seed=3)
    y = torch.tensor([0, 3, 4, 1])
    T = 2.0
    tckd, nckd = [], []
    for i, yi in enumerate(y.tolist()):
        ps, pt = (np.exp(np_log_softmax(x[i].numpy() / T)) for x in (s, t))
        bs, bt = np.array([ps[yi], 1 - ps[yi]]), np.array([pt[yi], 1 - pt[yi]])
        keep = np.arange(5) != yi
        tckd.append(np_kl(bt, bs))
        nckd.append(np_kl(pt[keep] / pt[keep].sum(), ps[keep] / ps[keep].sum()))
    tckd, nckd = np.array(tckd), np.array(nckd)
    got = L.dkd(s, t, y, alpha=1.5, beta=8.0, temperature=T, reduction="none").numpy()
    np.testing.assert_allclose(got, T**2 * (1.5 * tckd + 8.0 * nckd), rtol=1e-10)
    # Zhao et al.: KD = TCKD + (1 - p_t(y)) NCKD
    only_t = L.dkd(s, t, y, alpha=1.0, beta=0.0, reduction="none")
    only_n = L.dkd(s, t, y, alpha=0.0, beta=1.0, reduction="none")
    pt_y = torch.softmax(t, -1).gather(-1, y[:, None]).squeeze(-1)
    kd = L.forward_kl(s, t, reduction="none")
    torch.testing.assert_close(only_t + (1 - pt_y) * only_n, kd, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- PLD


def np_pld(s: np.ndarray, t: np.ndarray, y: int | None, T: float) -> float:
    order = list(np.argsort(-t, kind="stable"))
    if y is not None:
        order.remove(y)
        order.insert(0, y)
    w = np.exp(np_log_softmax(t / T))
    total = 0.0
    for k, c in enumerate(order):
        rest = s[order[k:]]
        total += w[c] * (np.log(np.exp(rest).sum()) - s[c])
    return total


def test_pld_matches_numpy_plackett_luce():
    # hand-sized case: teacher ranks 2 > 0 > 1, label 1 goes first -> pi = (1, 2, 0)
    s = torch.tensor([[0.5, 1.0, -1.0]], dtype=F64)
    t = torch.tensor([[1.0, 0.0, 2.0]], dtype=F64)
    w = np.exp(np_log_softmax(t[0].numpy()))
    a, b, c = 0.5, 1.0, -1.0  # student logits of classes 0, 1, 2
    by_hand = (
        w[1] * (np.log(np.exp(b) + np.exp(c) + np.exp(a)) - b)
        + w[2] * (np.log(np.exp(c) + np.exp(a)) - c)
        + w[0] * 0.0
    )
    assert L.pld(s, t, torch.tensor([1])).item() == pytest.approx(by_hand, abs=1e-12)

    s, t = rand_logits(3, 6, seed=5)
    y = torch.tensor([2, 0, 5])
    for T in (1.0, 3.0):
        got = L.pld(s, t, y, temperature=T, reduction="none").numpy()
        want = [np_pld(s[i].numpy(), t[i].numpy(), int(y[i]), T) for i in range(3)]
        np.testing.assert_allclose(got, want, rtol=1e-10)
        got = L.pld(s, t, temperature=T, reduction="none").numpy()
        want = [np_pld(s[i].numpy(), t[i].numpy(), None, T) for i in range(3)]
        np.testing.assert_allclose(got, want, rtol=1e-10)


def test_pld_properties():
    s, t = rand_logits(4, 7, seed=6)
    y = torch.tensor([0, 1, 2, 3])
    base = L.pld(s, t, y, reduction="none")
    # translation-invariant in the student logits, not tempered by T (T only moves the weights)
    torch.testing.assert_close(L.pld(s + 3.0, t, y, reduction="none"), base)
    # top_k=1 keeps the first rank only: p_t(y) * cross-entropy(s, y)
    ce = torch.nn.functional.cross_entropy(s, y, reduction="none")
    pt_y = torch.softmax(t, -1).gather(-1, y[:, None]).squeeze(-1)
    torch.testing.assert_close(L.pld(s, t, y, top_k=1, reduction="none"), pt_y * ce)
    assert torch.all(L.pld(s, t, y, top_k=3, reduction="none") <= base)
    torch.testing.assert_close(L.pld(s, t, y, top_k=7, reduction="none"), base)


# --------------------------------------------------------------------------- CPRD


def np_cprd(s: np.ndarray, t: np.ndarray, y: int | None, k: int, tau: float) -> float:
    cand = [c for c in np.argsort(-s, kind="stable") if c != y][:k]
    ranked = sorted(cand, key=lambda c: -t[c])
    z = s[ranked] / tau
    terms = [np.log(np.exp(z[i:]).sum()) - z[i] for i in range(len(z) - 1)]
    return float(np.mean(terms))


def test_cprd_matches_numpy_hard_negative_ranking():
    # hand-sized: positive 0; student's hardest negatives are 3 (2.0) and 1 (1.0), not 2 (-3.0);
    # teacher orders them 1 > 3, so the single term is -log softmax([s_1, s_3])[0]
    s = torch.tensor([[5.0, 1.0, -3.0, 2.0]], dtype=F64)
    t = torch.tensor([[9.0, 4.0, 8.0, 0.0]], dtype=F64)
    by_hand = math.log(math.exp(1.0) + math.exp(2.0)) - 1.0
    got = L.cprd(s, t, torch.tensor([0]), num_negatives=2)
    assert got.item() == pytest.approx(by_hand, abs=1e-12)

    s, t = rand_logits(3, 8, seed=7)
    y = torch.tensor([1, 7, 0])
    for k, tau in ((3, 1.0), (5, 0.5), (20, 1.0)):
        got = L.cprd(s, t, y, num_negatives=k, temperature=tau, reduction="none").numpy()
        want = [np_cprd(s[i].numpy(), t[i].numpy(), int(y[i]), k, tau) for i in range(3)]
        np.testing.assert_allclose(got, want, rtol=1e-10)
    # only the teacher's order matters, not its score scale
    torch.testing.assert_close(L.cprd(s, t, y), L.cprd(s, torch.exp(t) * 10, y))


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_gradcheck_float64(name: str):
    fn = ALL_LOSSES[name]
    s, t = rand_logits(2, 3, 5, seed=11)
    s.requires_grad_(True)
    t.requires_grad_(True)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, temperature=1.7), (s, t))
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, mask=mask, reduction="sum"), (s, t))


# --------------------------------------------------------------------------- masks, reductions


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_masks_and_reductions(name: str):
    fn = ALL_LOSSES[name]
    s, t = rand_logits(2, 4, 6, seed=13)
    rows = fn(s, t, reduction="none")
    assert rows.shape == (2, 4)
    assert fn(s, t, reduction="sum").item() == pytest.approx(rows.sum().item(), rel=1e-12)
    assert fn(s, t).item() == pytest.approx(rows.mean().item(), rel=1e-12)

    mask = torch.tensor([[True, True, False, False], [False, True, True, False]])
    masked = fn(s, t, mask=mask, reduction="none")
    torch.testing.assert_close(masked, torch.where(mask, rows, torch.zeros_like(rows)))
    assert fn(s, t, mask=mask).item() == pytest.approx(rows[mask].mean().item(), rel=1e-12)
    assert fn(s, t, mask=mask, reduction="sum").item() == pytest.approx(rows[mask].sum().item())
    # float masks are row weights
    w = torch.tensor([[0.5, 2.0, 0.0, 1.0], [1.0, 0.0, 0.0, 3.0]], dtype=F64)
    weighted = (w * rows).sum() / w.sum()
    assert fn(s, t, mask=w).item() == pytest.approx(weighted.item(), rel=1e-12)

    # garbage in dropped rows reaches neither the value nor the gradient
    s_bad = s.clone()
    s_bad[~mask] = float("nan")
    s_bad.requires_grad_(True)
    value = fn(s_bad, t, mask=mask)
    value.backward()
    assert value.item() == pytest.approx(rows[mask].mean().item(), rel=1e-12)
    assert torch.isfinite(s_bad.grad).all() and (s_bad.grad[~mask] == 0).all()

    # nothing selected: mean is 0, not NaN
    empty = torch.zeros(2, 4, dtype=torch.bool)
    assert fn(s, t, mask=empty).item() == 0.0


@pytest.mark.parametrize("fn", [L.dkd, L.pld, L.cprd])
def test_ignore_index_labels_drop_rows(fn):
    s, t = rand_logits(2, 3, 5, seed=17)
    y = torch.tensor([[1, -100, 4], [-100, 0, 2]])
    keep = y != -100
    rows = fn(s, t, y.clamp(min=0), reduction="none")
    got = fn(s, t, y, reduction="none")
    torch.testing.assert_close(got, torch.where(keep, rows, torch.zeros_like(rows)))
    assert fn(s, t, y).item() == pytest.approx(rows[keep].mean().item(), rel=1e-12)


# --------------------------------------------------------------------------- -inf teacher logits


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_neg_inf_teacher_logits(name: str):
    fn = ALL_LOSSES[name]
    s, t = rand_logits(3, 6, seed=19)
    t[:, 4:] = -math.inf  # masked vocabulary entries: teacher probability exactly 0
    for T in (1.0, 2.0):
        s_ = s.clone().requires_grad_(True)
        value = fn(s_, t, temperature=T)
        value.backward()
        if name == "reverse_kl":  # the student has mass where the teacher has none
            assert value.item() == math.inf
            continue
        assert torch.isfinite(value), name
        assert torch.isfinite(s_.grad).all(), name

    # masked in both models: every loss equals the loss on the vocabulary without those entries
    s_both = s.clone()
    s_both[:, 4:] = -math.inf
    s_both.requires_grad_(True)
    value = fn(s_both, t)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s_both.grad).all(), name
    assert (s_both.grad[:, 4:] == 0).all()
    assert value.item() == pytest.approx(fn(s[:, :4], t[:, :4]).item(), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_finite_fast_path_matches_the_masked_path(name: str):
    """Finite logits skip the -inf masking; a -inf entry in another row of the same call
    switches the masked path on, and the finite rows' values and gradients must not change."""
    fn = DIVERGENCES[name]
    s, t = rand_logits(3, 6, seed=29)
    extra_t = torch.zeros(1, 6, dtype=t.dtype)
    extra_t[0, 5] = -math.inf
    fast_s = s.clone().requires_grad_(True)
    fast = fn(fast_s, t, temperature=2.0, reduction="none")
    fast.sum().backward()
    masked_s = torch.cat([s, torch.zeros(1, 6, dtype=s.dtype)]).requires_grad_(True)
    masked = fn(masked_s, torch.cat([t, extra_t]), temperature=2.0, reduction="none")
    masked[:3].sum().backward()
    torch.testing.assert_close(masked[:3], fast, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(masked_s.grad[:3], fast_s.grad, rtol=1e-12, atol=1e-12)


def test_teacher_neg_inf_only_kl_family_values():
    s, t = rand_logits(2, 5, seed=23)
    t[:, 0] = -math.inf
    ps, pt = torch.softmax(s, -1), torch.softmax(t, -1)
    keep = pt > 0
    fwd = (pt[keep] * (pt[keep].log() - ps[keep].log())).reshape(2, 4).sum(-1)
    torch.testing.assert_close(L.forward_kl(s, t, reduction="none"), fwd)
    assert not torch.isnan(L.reverse_kl(s, t)).any()
    # the skewed reverse KL stays finite: bounded by -log(alpha)
    assert 0 < L.skew_reverse_kl(s, t, alpha=0.1).item() < -math.log(0.1)


def test_half_precision_is_computed_in_float32():
    s, t = rand_logits(2, 3, 5, seed=29)
    got = L.forward_kl(s.to(torch.bfloat16), t.to(torch.bfloat16))
    assert got.dtype == torch.float32
    ref = L.forward_kl(s.to(torch.bfloat16).double(), t.to(torch.bfloat16).double())
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises(name: str, bad: float):
    s, t = rand_logits(2, 4)
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0"):
        ALL_LOSSES[name](s, t, temperature=bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_mixing_coefficients_outside_unit_interval_raise(bad: float):
    s, t = rand_logits(2, 4)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
        L.generalized_jsd(s, t, beta=bad)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        L.skew_forward_kl(s, t, alpha=bad)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        L.skew_reverse_kl(s, t, alpha=bad)


def test_other_argument_errors():
    s, t = rand_logits(2, 4)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"beta must be a finite number >= 0"):
        L.dkd(s, t, y, beta=-1.0)
    with pytest.raises(ValueError, match=r"alpha must be a finite number >= 0"):
        L.dkd(s, t, y, alpha=float("nan"))
    with pytest.raises(ValueError, match=r"top_k must be an integer >= 1"):
        L.pld(s, t, y, top_k=0)
    with pytest.raises(ValueError, match=r"num_negatives must be an integer >= 2"):
        L.cprd(s, t, y, num_negatives=1)
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        L.forward_kl(s, t, reduction="batchmean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mask must have the leading shape \(2,\)"):
        L.forward_kl(s, t, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"labels must have the leading shape"):
        L.dkd(s, t, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels must be an integer tensor"):
        L.pld(s, t, torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_vocabulary_mismatch_names_both_sizes(name: str):
    s, _ = rand_logits(2, 5)
    _, t = rand_logits(2, 7)
    with pytest.raises(ValueError, match=r"student vocabulary size 5 .* teacher vocabulary size 7"):
        ALL_LOSSES[name](s, t)


# --------------------------------------------------------------------------- adaptive KL


def test_adaptive_kl_hand_computed_and_weights():
    """p_t = (0.6, 0.3, 0.1), p_s = (0.3, 0.3, 0.4), mu 0.5: the head is {0} (0.6 >= 0.5);
    g_head = 0.3, g_tail = 0 + 0.3 = 0.3, so AKL = (FKL + RKL) / 2."""
    pt = torch.tensor([[0.6, 0.3, 0.1]], dtype=F64)
    ps = torch.tensor([[0.3, 0.3, 0.4]], dtype=F64)
    fkl = float((pt * (pt / ps).log()).sum())
    rkl = float((ps * (ps / pt).log()).sum())
    value = L.adaptive_kl(ps.log(), pt.log(), mu=0.5)
    assert value.item() == pytest.approx(0.5 * fkl + 0.5 * rkl, rel=1e-12)
    # mu = 0.95: head {0, 1} (0.6 + 0.3 < 0.95 needs the third too) -> head is every entry
    assert L.adaptive_kl(ps.log(), pt.log(), mu=0.95).item() == pytest.approx(fkl, rel=1e-12)
    same = L.adaptive_kl(pt.log(), pt.log())
    assert same.item() == pytest.approx(0.0, abs=1e-15)
    # the weights are constants: the gradient is w·grad(FKL) + (1 - w)·grad(RKL)
    x = ps.log().clone().requires_grad_()
    (g_akl,) = torch.autograd.grad(L.adaptive_kl(x, pt.log()), x)
    (g_f,) = torch.autograd.grad(L.forward_kl(x, pt.log()), x)
    (g_r,) = torch.autograd.grad(L.reverse_kl(x, pt.log()), x)
    assert torch.allclose(g_akl, 0.5 * g_f + 0.5 * g_r, atol=1e-12)
    s, t = rand_logits(3, 7)
    with pytest.raises(ValueError, match="mu"):
        L.adaptive_kl(s, t, mu=1.5)
