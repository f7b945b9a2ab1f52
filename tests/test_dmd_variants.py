"""The distribution-matching variants (`disback`, `dmd-phased`, `tdm`, `twinflow`,
`dmd-decoupled`, `multi-student`) and the class-conditional toy data they use: their
mechanisms, checked on tiny networks without training runs (those are the gates)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from distill.data.toy2d import TOY_CONFIGS, interior_modes
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.decoupled_dmd import DecoupledDMD
from distill.diffusion.methods.disback import DisBack, record_degradation_path
from distill.diffusion.methods.distribution_matching import score_identity_loss
from distill.diffusion.methods.multi_student import MultiStudent
from distill.diffusion.methods.phased_dmd import (
    PhasedDMD,
    diffuse_from,
    subinterval_velocity_target,
)
from distill.diffusion.methods.tdm import TDM, trajectory_noise
from distill.diffusion.methods.twinflow import TwinFlow, robust_error
from distill.errors import ConfigError
from distill.metrics.samples import mode_accuracy
from distill.models.experts import ClassExperts, TimeExperts, class_expert_index, expert_index
from distill.models.mlp import MLPConfig, TimeMLP

CPU = torch.device("cpu")


def toy_data():
    return TOY_CONFIGS["8gaussians"](n=256, n_test=256).build()


def mlp_denoiser(seed: int = 0, two_time: bool = False) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8, two_time=two_time))


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


# ------------------------------------------------------------------------------ disback

def test_degradation_path_walks_away_from_the_teacher_towards_the_generator():
    teacher = mlp_denoiser(1).requires_grad_(False)
    blob = lambda g: (0.1 * torch.randn(128, 2, generator=g) + 3.0, None)  # noqa: E731 (a generator far from the teacher)
    path = record_degradation_path(teacher, blob, steps=60, points=3, lr=1e-2, t_min=0.02, t_max=0.98, seed=0)
    assert len(path) == 3
    start = torch.cat([v.flatten() for v in teacher.state_dict().values()])
    distances = [(torch.cat([v.flatten() for v in state.values()]) - start).norm() for state in path]
    assert 0 < distances[0] < distances[1] < distances[2]
    assert flat(teacher).equal(start)  # the teacher itself is untouched


def test_disback_records_a_class_conditional_path_with_the_generators_labels():
    """With a class-conditional teacher, the recording fits the generator's samples under the
    labels they were drawn for: the recorded score moves towards each class's own samples."""
    data, teacher = labelled_data(), conditional_denoiser(1).requires_grad_(False)
    cfg = DisBack.Config(path_points=2, record_steps=20, record_batch_size=32, backtrack_steps=5)
    method = DisBack(cfg, conditional_denoiser(2), teacher, data)
    assert len(method.path) == 2 and method.student.conditional
    batch = {"x": data.train[:16], "y": data.train_labels[:16]}
    assert torch.isfinite(method(batch, "student", 0)["distribution_matching"])


def test_disback_backtracks_from_the_generator_to_the_teacher():
    data, teacher = toy_data(), mlp_denoiser(1).requires_grad_(False)
    cfg = DisBack.Config(path_points=3, record_steps=30, record_batch_size=64, backtrack_steps=10)
    method = DisBack(cfg, mlp_denoiser(1), teacher, data)
    # the fake score starts at the path's end, which fits the initial generator
    assert all(torch.equal(a, b) for a, b in zip(method.fake.state_dict().values(), method.path[-1].values(), strict=True))
    expected = [method.path[1], method.path[0], teacher.state_dict()]  # s_2, s_1, then s_0 = the teacher
    for step, state in [(0, expected[0]), (10, expected[1]), (25, expected[2]), (500, expected[2])]:
        method.before_step(step)
        assert all(torch.equal(a, b) for a, b in zip(method.target.state_dict().values(), state.values(), strict=True)), step
    assert not any(k.startswith("target.") for k in method.checkpoint_state())
    losses = method({"x": data.train[:32]}, "student", 4)
    losses["distribution_matching"].backward()
    assert all(p.grad is None for p in method.target.parameters())
    again = DisBack(cfg, mlp_denoiser(1), teacher, data)  # a resumed run records the same path
    assert all(torch.equal(a[k], b[k]) for a, b in zip(method.path, again.path, strict=True) for k in a)
    with pytest.raises(ValidationError, match="path_points"):
        DisBack.Config(path_points=5, record_steps=4)
    with pytest.raises(ConfigError, match="fake_score.kind: copy"):
        DisBack(DisBack.Config(fake_score={"kind": "lora"}), mlp_denoiser(), teacher, data)
    with pytest.raises(ValidationError, match="one-step"):
        DisBack.Config(student_steps=2)


def test_disback_on_sid_scores_the_generator_against_the_current_target():
    """`base: sid`: SiD's score-identity loss with the backtracked checkpoint in the teacher's
    place, differentiated through the target's and the fake score's predictions into the
    generator only."""
    data, teacher = toy_data(), mlp_denoiser(1).requires_grad_(False)
    cfg = DisBack.Config(base="sid", alpha=1.2, path_points=2, record_steps=20, record_batch_size=64,
                         backtrack_steps=10)
    method = DisBack(cfg, mlp_denoiser(1), teacher, data)
    method.before_step(0)
    torch.manual_seed(3)
    losses = method({"x": data.train[:32]}, "student", 0)
    assert set(losses) == {"score_identity"}
    losses["score_identity"].backward()
    assert all(p.grad is not None for p in method.student.parameters())
    assert all(p.grad is None for p in method.target.parameters())
    assert all(p.grad is None for p in method.teacher.parameters())
    # against the target s_1 (the same noise replayed), which is not the teacher
    torch.manual_seed(3)
    x, t, x_t = method.noised_generator_sample(32, None, CPU)
    expected = score_identity_loss(x, method.target.x0(x_t, t, None), method.fake.x0(x_t, t, None), 1.2)
    torch.testing.assert_close(losses["score_identity"], expected)
    with_teacher = score_identity_loss(x, teacher.x0(x_t, t, None), method.fake.x0(x_t, t, None), 1.2)
    assert not torch.allclose(with_teacher, expected)
    with pytest.raises(ValidationError, match="GAN"):
        DisBack.Config(base="sid", gan_weight=0.1)


# ------------------------------------------------------------------------------ dmd-phased

def test_time_experts_route_each_row_to_its_phase():
    assert expert_index(torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]), 2).tolist() == [0, 0, 1, 1, 1]
    assert expert_index(torch.linspace(1, 0, 4)[:-1], 3).tolist() == [0, 1, 2]
    nets = [TimeMLP((2,), hidden=8, depth=1, time_dim=4) for _ in range(2)]
    experts = TimeExperts(nets)
    x, t = torch.randn(4, 2), torch.tensor([1.0, 0.3, 0.9, 0.5])
    out = experts(x, t)
    torch.testing.assert_close(out[[0, 2]], nets[0](x[[0, 2]], t[[0, 2]]))
    torch.testing.assert_close(out[[1, 3]], nets[1](x[[1, 3]], t[[1, 3]]))
    experts.load_single_state(nets[0].state_dict())
    torch.testing.assert_close(experts(x, t), nets[0](x, t))


def test_student_experts_config():
    cfg = MLPConfig(hidden=8, depth=1, experts=3)
    denoiser = cfg.make_denoiser((2,), None)
    assert isinstance(denoiser.net, TimeExperts) and len(denoiser.net.experts) == 3
    with pytest.raises(ValidationError, match="do not combine"):
        MLPConfig(experts=2, two_time=True)


def test_subinterval_target_is_the_velocity_of_the_diffused_marginal():
    """x_s of a point mass c: x_t = diffuse_from(x_s) is exactly (1 - t) c + t N(0, 1), whose
    velocity is (x_t - c) / t; regressing Eq. 11's target on x_t recovers it (the naive target
    eps - x_s does not)."""
    torch.manual_seed(0)
    n, c, s, t = 200_000, 0.7, 0.4, 0.6
    x_s = (1 - s) * c + s * torch.randn(n, 1)
    eps = torch.randn(n, 1)
    s_, t_ = torch.full((n,), s), torch.full((n,), t)
    x_t, sigma = diffuse_from(x_s, s_, t_, eps)
    assert abs(x_t.std().item() - t) < 0.01 and abs(x_t.mean().item() - (1 - t) * c) < 0.01
    target = subinterval_velocity_target(x_s, eps, s_, t_, sigma)
    design = torch.cat([x_t, torch.ones(n, 1)], 1)
    slope, intercept = torch.linalg.lstsq(design, target).solution.flatten().tolist()
    assert abs(slope - 1 / t) < 0.03 and abs(intercept + c / t) < 0.03, (slope, intercept)
    naive = torch.linalg.lstsq(design, eps - x_s).solution.flatten().tolist()
    assert abs(naive[0] - 1 / t) > 0.1
    # at s = 0 the target is the ordinary flow-matching velocity eps - x0
    zero = torch.zeros(n)
    x_t0, sigma0 = diffuse_from(x_s, zero, t_, eps)
    torch.testing.assert_close(subinterval_velocity_target(x_s, eps, zero, t_, sigma0), eps - x_s)


def phased_method(**options) -> PhasedDMD:
    torch.manual_seed(0)
    student = Denoiser(TimeExperts([TimeMLP((2,), hidden=16, depth=2, time_dim=8) for _ in range(2)]))
    return PhasedDMD(PhasedDMD.Config(**options), student, mlp_denoiser(1).requires_grad_(False),
                     toy_data(), total_steps=20)


def test_phased_dmd_trains_one_expert_and_one_fake_score_per_phase():
    method = phased_method(phases=2, fake_updates=1)
    assert method.phase_ends == [10, 20] and [method.phase_at(s) for s in (0, 9, 10, 19, 99)] == [0, 0, 1, 1, 1]
    assert method.student_steps() == [2] and method.student_sampler() == "euler"
    batch = {"x": toy_data().train[:32]}
    for step, phase in [(3, 0), (12, 1)]:
        method.zero_grad(set_to_none=True)
        losses = method(batch, "student", step)
        losses["distribution_matching"].backward()
        trained = [e for e in method.student.net.experts if any(p.grad is not None for p in e.parameters())]
        assert trained == [method.student.net.experts[phase]], step
        method.zero_grad(set_to_none=True)
        method(batch, "fake_score", step)["fake_subinterval"].backward()
        assert [any(p.grad is not None for p in f.parameters()) for f in method.fakes] == [phase == 0, phase == 1]
    with pytest.raises(ConfigError, match="student.experts: 3"):
        PhasedDMD(PhasedDMD.Config(phases=3), mlp_denoiser(), mlp_denoiser(1), toy_data())
    with pytest.raises(ConfigError, match="phase_steps sum to 30"):
        phased_method(phase_steps=[10, 20])
    with pytest.raises(ValidationError, match="student_steps must equal phases"):
        PhasedDMD.Config(phases=2, student_steps=4)
    with pytest.raises(ConfigError, match=r"phases \[1\] get fewer trainer steps"):
        phased_method(phase_steps=[10, 3], fake_updates=5)
    with pytest.raises(ValidationError, match="comparison times"):
        PhasedDMD.Config(phases=50)


# ------------------------------------------------------------------------------ tdm

def test_trajectory_noise_rebuilds_the_diffused_state():
    torch.manual_seed(0)
    x0, eps, z = torch.randn(8, 2), torch.randn(8, 2), torch.randn(8, 2)
    s, tau = torch.full((8,), 0.5), torch.full((8,), 0.7)
    x_s = 0.5 * x0 + 0.5 * eps
    m = trajectory_noise(eps, s, tau, z)
    x_tau, _ = diffuse_from(x_s, s, tau, z)
    torch.testing.assert_close((1 - 0.7) * x0 + 0.7 * m, x_tau)
    torch.testing.assert_close(trajectory_noise(eps, torch.zeros(8), tau, z), z)  # the last step: fresh noise


def test_tdm_replays_one_step_and_compares_on_its_own_interval():
    data = toy_data()
    method = TDM(TDM.Config(student_steps=4), mlp_denoiser(), mlp_denoiser(1).requires_grad_(False), data)
    step = method.replay_step(256, None, CPU)
    assert step["x0"].requires_grad and not step["eps"].requires_grad
    assert set(step["t"].tolist()) == {1.0, 0.75, 0.5, 0.25}
    tau = method.comparison_times(step["t"], step["s"])
    assert bool(((tau >= step["s"].clamp(min=0.02)) & (tau <= step["t"].clamp(max=0.98))).all())
    losses = method({"x": data.train[:32]}, "student", 0)
    losses["distribution_matching"].backward()
    assert all(p.grad is not None for p in method.student.parameters())
    assert all(p.grad is None for p in method.fake.parameters())
    assert set(method({"x": data.train[:32]}, "fake_score", 0)) == {"fake_trajectory"}
    with pytest.raises(ValidationError):
        TDM.Config(student_steps=1)
    with pytest.raises(ValidationError, match="above t_max"):
        TDM.Config(student_steps=60)


# ------------------------------------------------------------------------------ twinflow

def test_twinflow_rectifies_the_one_step_map_by_the_twin_velocity_gap():
    data = toy_data()
    teacher = mlp_denoiser(1).requires_grad_(False)
    with pytest.raises(ConfigError, match="two_time: true"):
        TwinFlow(TwinFlow.Config(), mlp_denoiser(), teacher, data)
    method = TwinFlow(TwinFlow.Config(), mlp_denoiser(2, two_time=True), teacher, data)
    losses = method({"x": data.train[:64]}, "student", 0)
    assert set(losses) == {"real_flow", "rectify", "fake_flow"}
    # the fake branch is the same network at negative times
    x, t = torch.randn(4, 2), torch.full((4,), 0.5)
    assert not torch.allclose(method.velocity(x, -t), method.velocity(x, t))
    assert method.student_steps() == [1] and method.student_sampler() == "flow-map"
    with pytest.raises(ValidationError, match="t_min"):
        TwinFlow.Config(t_min=0.5, t_max=0.4)


def test_rectification_moves_each_one_step_sample_along_the_velocity_gap():
    """The reweighted error's gradient at u with target sg(u - gap) is a positive multiple of
    gap per sample, so a descent step lowers u by gap and moves x_g = eps - u along it."""
    u, gap = torch.randn(5, 2, requires_grad=True), torch.randn(5, 2)
    robust_error(u, (u - gap).detach()).backward()
    scale = (u.grad * gap).sum(1) / gap.pow(2).sum(1)
    assert bool((scale > 0).all())
    torch.testing.assert_close(u.grad, scale[:, None] * gap)


# ------------------------------------------------------------------------------ class-conditional toy

def labelled_data():
    return TOY_CONFIGS["8gaussians"](n=256, n_test=256, labelled=True).build()


def conditional_denoiser(seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8, num_classes=8), num_classes=8)


def test_labelled_8gaussians_labels_each_point_by_its_mode():
    data = labelled_data()
    assert data.num_classes == 8 and data.train_labels.shape == (256,)
    # modes 2 apart with std 0.1 never overlap: every point's nearest mode is its own
    assert mode_accuracy(data.train, data.train_labels, data.modes) == 1.0
    assert mode_accuracy(data.train, (data.train_labels + 1) % 8, data.modes) == 0.0
    plain = TOY_CONFIGS["8gaussians"](n=256, n_test=256).build()
    assert torch.equal(plain.train, data.train) and plain.train_labels is None  # the same points
    with pytest.raises(ValidationError, match="labelled: true needs 8gaussians"):
        TOY_CONFIGS["moons"](labelled=True)


def test_labelled_8gaussians_grouped_into_2_classes_labels_each_arc_of_4_modes():
    data = TOY_CONFIGS["8gaussians"](n=256, n_test=256, labelled=True,
                                     class_groups=[[0, 1, 2, 3], [4, 5, 6, 7]]).build()
    modes = labelled_data().train_labels
    assert data.num_classes == 2 and torch.equal(data.train_labels, modes // 4)
    assert torch.equal(data.mode_classes, torch.arange(8) // 4)
    assert mode_accuracy(data.train, data.train_labels, data.modes, data.mode_classes) == 1.0
    assert mode_accuracy(data.train, 1 - data.train_labels, data.modes, data.mode_classes) == 0.0
    # the label is what counts, not sharpness: a sample at any mode of its class, or blurred
    # towards the class's mean, follows label 0; one nearest a mode of the other class does not
    at = torch.stack([data.modes[3], data.modes[0], 0.6 * data.modes[:4].mean(0), data.modes[5] * 1.2])
    assert mode_accuracy(at, torch.tensor([0, 0, 0, 0]), data.modes, data.mode_classes) == 3 / 4
    # guidance's favoured modes: those whose both neighbours on the circle share their class
    assert interior_modes(data.mode_classes).nonzero().flatten().tolist() == [1, 2, 5, 6]
    assert not interior_modes(torch.arange(8)).any()  # one mode per class: none
    with pytest.raises(ValidationError, match="set labelled: true"):
        TOY_CONFIGS["8gaussians"](class_groups=[[0, 1, 2, 3], [4, 5, 6, 7]])


# ------------------------------------------------------------------------------ dmd-decoupled

def test_decoupled_terms_add_up_to_guided_dmd_with_shared_noise():
    data = labelled_data()
    teacher = conditional_denoiser(1).requires_grad_(False)
    method = DecoupledDMD(DecoupledDMD.Config(guidance=3.0), conditional_denoiser(), teacher, data)
    x, labels = torch.randn(16, 2), torch.arange(16) % 8
    t, eps = torch.rand(16) * 0.9 + 0.05, torch.randn(16, 2)
    dm, ca = method.term_directions(x, labels, t, t, eps, eps)
    x_t = teacher.schedule.add_noise(x, eps, t)
    real = teacher.x0(x_t, t, labels, 3.0)
    torch.testing.assert_close(dm + ca, (method.fake.x0(x_t, t, labels) - real)
                               / ((x - real).abs().mean(1, keepdim=True) + 1e-6))
    losses = method({"x": data.train[:16], "y": data.train_labels[:16]}, "student", 4)
    losses["decoupled_dmd"].backward()
    assert all(p.grad is not None for p in method.student.parameters())
    with pytest.raises(ConfigError, match="class-conditional"):
        DecoupledDMD(DecoupledDMD.Config(), mlp_denoiser(), mlp_denoiser(1), toy_data())
    with pytest.raises(ValidationError, match="both 0"):
        DecoupledDMD.Config(dm_weight=0, ca_weight=0)
    with pytest.raises(ValidationError, match="ca_t_min"):
        DecoupledDMD.Config(ca_t_min=0.9, ca_t_max=0.5)


# ------------------------------------------------------------------------------ multi-student

def test_class_experts_route_by_label_and_train_only_their_own_student():
    cfg = MLPConfig(hidden=16, depth=2, time_dim=8, experts=4, expert_routing="class")
    student = cfg.make_denoiser((2,), 8)
    assert isinstance(student.net, ClassExperts)
    assert class_expert_index(torch.arange(9), 4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3]
    with pytest.raises(ConfigError, match="at least 4 classes"):
        cfg.make_denoiser((2,), None)
    data = labelled_data()
    method = MultiStudent(MultiStudent.Config(students=4), student, conditional_denoiser(1).requires_grad_(False), data)
    batch = {"x": data.train[:8], "y": torch.tensor([2, 3, 2, 3, 2, 3, 2, 3])}  # all for student 1
    method(batch, "student", 4)["distribution_matching"].backward()
    trained = [any(p.grad is not None for p in e.parameters()) for e in student.net.experts]
    assert trained == [False, True, False, False]
    with pytest.raises(ConfigError, match="expert_routing: class"):
        MultiStudent(MultiStudent.Config(students=2), conditional_denoiser(), conditional_denoiser(1), data)
    with pytest.raises(ValidationError, match="needs experts > 1"):
        MLPConfig(expert_routing="class")


def test_teacher_score_matching_pretrains_the_students_before_distribution_matching(tmp_path):
    """MSD's TSM stage: for tsm_steps trainer steps only the students move (towards the
    teacher's velocity at noised training points); then the fake score and the generator."""
    data, teacher = labelled_data(), conditional_denoiser(1).requires_grad_(False)
    student = MLPConfig(hidden=16, depth=2, time_dim=8, experts=2, expert_routing="class").make_denoiser((2,), 8)
    cfg = MultiStudent.Config(students=2, tsm_steps=6, fake_updates=2)
    method = MultiStudent(cfg, student, teacher, data, total_steps=12)
    groups = {g.name: g for g in method.param_groups()}
    assert list(groups) == ["student_tsm", "fake_score", "student"]
    due = lambda name: [s for s in range(12) if groups[name].is_due(s)]  # noqa: E731
    assert (due("student_tsm"), due("fake_score"), due("student")) == ([0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [7, 9, 11])
    batch = {"x": data.train[:32], "y": data.train_labels[:32]}
    loss = method(batch, "student_tsm", 0)["teacher_score_matching"]
    labels = data.train_labels[:32]
    torch.manual_seed(0)
    t = torch.rand(32)
    x_t = student.schedule.add_noise(data.train[:32], torch.randn(32, 2), t)
    torch.manual_seed(0)
    again = method(batch, "student_tsm", 0)["teacher_score_matching"]
    expected = (student.velocity(x_t, t, labels) - teacher.velocity(x_t, t, labels)).pow(2).mean()
    torch.testing.assert_close(again, expected)
    assert loss.requires_grad and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ConfigError, match="no distribution-matching generator update"):
        MultiStudent(MultiStudent.Config(students=2, tsm_steps=11, fake_updates=2), student, teacher, data, total_steps=12)
    plain = MLPConfig(hidden=16, depth=2, time_dim=8).make_denoiser((2,), 8)
    MultiStudent(MultiStudent.Config(students=1, tsm_steps=2), plain, teacher, data, total_steps=12)  # the baseline
    with pytest.raises(ConfigError, match="student.experts: 1"):
        MultiStudent(MultiStudent.Config(students=1), student, teacher, data)


def test_mixed_rows_reach_only_their_own_experts_also_under_autocast():
    student = MLPConfig(hidden=16, depth=2, time_dim=8, experts=4, expert_routing="class").make_denoiser((2,), 8)
    x, t, labels = torch.randn(6, 2), torch.rand(6), torch.tensor([0, 7, 1, 6, 0, 7])
    out = student.net(x, t, labels)
    for k in (0, 3):  # classes 0-1 -> expert 0, 6-7 -> expert 3
        rows = class_expert_index(labels, 4, 8) == k
        torch.testing.assert_close(out[rows], student.net.experts[k](x[rows], t[rows], labels[rows]))
    out[labels == 7].sum().backward()
    assert [any(p.grad is not None for p in e.parameters()) for e in student.net.experts] == [True, False, False, True]
    assert not any(p.grad.abs().sum() > 0 for p in student.net.experts[0].parameters() if p.grad is not None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert student.net(x, t, labels).dtype == torch.bfloat16
