"""Distribution matching distillation: a one- or few-step generator whose noised samples are
pushed towards the teacher's noised distribution by the difference of two scores at those
samples, the teacher's (real) score and a fake score trained online on the generator's own
samples (`dmd`, `dmd2`)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.discriminator import DiscriminatorHead, default_feature_path
from distill.diffusion.embedding_loss import EmbeddingLossConfig, build_embedding_loss
from distill.diffusion.fake_score import FakeScoreConfig, build_fake_score
from distill.diffusion.methods.ode_pairs import regression_loss
from distill.diffusion.methods.teacher import denoising_loss
from distill.diffusion.samplers import time_grid
from distill.diffusion.schedules import expand_time
from distill.diffusion.teacher_pairs import cached_teacher_pairs
from distill.errors import ConfigError
from distill.kd.hooks import FeatureTaps
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class DMD2Config(MethodConfig):
    name: Literal["dmd2"] = "dmd2"
    student_steps: int = Field(1, ge=1, description=(
        "generator steps; above 1 the generator's inputs come from running itself (backward simulation)"))
    fake_updates: int = Field(5, ge=1, description=(
        "k: fake-score updates per generator update (DMD2's two time-scale rule)"))
    fake_lr: float | None = Field(None, gt=0, description="learning rate of the fake score (default train.lr)")
    t_min: float = Field(0.02, ge=0, lt=1, description="smallest noise time of the score comparison")
    t_max: float = Field(0.98, gt=0, le=1, description="largest noise time of the score comparison")
    guidance: float = Field(1.0, ge=0, description="CFG scale applied to the real (teacher) score")
    gan_weight: float = Field(0.0, ge=0, description=(
        "weight of the generator's non-saturating GAN loss; > 0 adds a discriminator head on the "
        "fake score's features (needs real data)"))
    disc_weight: float = Field(1.0, ge=0, description="weight of the discriminator loss in the fake-score update")
    gan_feature: str = Field("auto", description=(
        "module path in the fake score's network whose output feeds the discriminator head; "
        "auto: the UNet's mid block, or the last hidden layer of an MLP"))
    fake_score: FakeScoreConfig = Field(default_factory=FakeScoreConfig, description=(
        "the fake score: a full trainable copy of the teacher, or LoRA adapters on its frozen "
        "weights (kind: lora; rank, alpha, targets)"))
    embedding_loss: EmbeddingLossConfig = Field(default_factory=EmbeddingLossConfig, description=(
        "the supplementary embedding loss: MMD² between generator samples and data in random "
        "networks' features (weight 0: off)"))

    @model_validator(mode="after")
    def _times(self) -> DMD2Config:
        if self.t_min >= self.t_max:
            raise ValueError(f"t_min ({self.t_min}) must be below t_max ({self.t_max})")
        return self


class DMDConfig(DMD2Config):
    name: Literal["dmd"] = "dmd"  # type: ignore[assignment]
    fake_updates: int = Field(1, ge=1, description="fake-score updates per generator update (1 in DMD)")
    regression_weight: float = Field(0.25, ge=0, description="lambda_reg of the regression loss (DMD Eq. 9)")
    pairs: int = Field(10000, gt=0, description="teacher (noise, ODE solution) pairs for the regression loss")
    teacher_steps: int = Field(64, gt=0, description="Euler steps of the teacher solve making the pairs")

    @model_validator(mode="after")
    def _one_step(self) -> DMDConfig:
        if self.student_steps != 1:
            raise ValueError("dmd trains a one-step generator (student_steps: 1); use dmd2 for "
                             "multi-step students (backward simulation)")
        if self.gan_weight:
            raise ValueError("the GAN head is part of dmd2, not dmd: set gan_weight: 0 or use dmd2")
        return self


def dmd_normalised(direction: Tensor, x: Tensor, real_x0: Tensor) -> Tensor:
    """DMD's per-sample normalisation (Yin et al. 2024a, Eq. 8): direction / mean|x - real_x0|,
    all (B, ...); the step size is then the same at every noise level."""
    dims = tuple(range(1, x.ndim))
    return direction / ((x - real_x0).abs().mean(dim=dims, keepdim=True) + 1e-6)


def distribution_matching_loss(x: Tensor, real_x0: Tensor, fake_x0: Tensor,
                               sample_weight: Tensor | None = None, anchor: Tensor | None = None) -> Tensor:
    """DMD's generator loss (Yin et al. 2024a, Eq. 7-8): the KL gradient
    (fake_x0 - real_x0) / mean|anchor - real_x0| per sample (anchor: x itself by default),
    applied to x (B, ...) through the surrogate 0.5 ||x - sg(x - grad)||² (mean over elements).
    `sample_weight` (B,) scales each sample's gradient (f-distill's h(r))."""
    with torch.no_grad():
        grad = dmd_normalised(fake_x0 - real_x0, x if anchor is None else anchor, real_x0)
        if sample_weight is not None:
            grad = grad * expand_time(sample_weight, x)
        target = x - grad
    return 0.5 * F.mse_loss(x, target)


@METHODS.register("dmd2", summary="DMD2: distribution matching with two time-scale fake-score updates, optional GAN head, backward simulation",
                  paper="Improved Distribution Matching Distillation for Fast Image Synthesis (Yin et al., NeurIPS 2024)")
class DMD2(Method):
    """Yin et al. 2024b (DMD2). The generator G (initialised from the teacher) maps noise to
    x = G(z); at t ~ U[t_min, t_max], x_t = alpha_t x + sigma_t eps, and G follows
    grad = (mu_fake(x_t) - mu_real(x_t)) / mean|x - mu_real(x_t)| (`distribution_matching_loss`),
    where mu_real is the teacher's x0 prediction (with CFG scale `guidance`) and mu_fake that of
    the fake score, a copy of the teacher trained by denoising regression on G's samples.

    Implemented: no regression loss; the two time-scale rule (the fake score is updated every
    trainer step, the generator every `fake_updates`-th step, so train.steps counts both);
    an optional GAN: a discriminator head on the fake score's features (`gan_feature`), trained
    with the fake score on real data vs generator samples noised at the same t (softplus
    losses), and the generator's non-saturating loss through the fake score's features
    (`gan_weight`); backward simulation for `student_steps` > 1 (the generator's input at step k
    is made by running the generator itself for k denoise-renoise steps, no grad), sampled with
    the multistep sampler; CFG on the real score; the embedding loss of any variant
    (`embedding_loss`, distill.diffusion.embedding_loss). Not implemented: the paper's SDXL-scale
    details (LoRA, text conditioning); its R1 regularisation of the discriminator.
    """

    Config = DMD2Config
    cfg: DMD2Config

    def __init__(self, cfg: DMD2Config, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, total_steps: int | None = None, **_: object) -> None:
        super().__init__()
        if student.conditional != teacher.conditional:
            raise ConfigError(f"{cfg.name} needs teacher and student to be both class-conditional or both not")
        if total_steps is not None and total_steps < cfg.fake_updates:
            raise ConfigError(
                f"train.steps={total_steps} with method.fake_updates={cfg.fake_updates} never updates "
                f"the generator (it steps on every {cfg.fake_updates}th trainer step); raise "
                "train.steps or lower method.fake_updates")
        self.cfg, self.student, self.teacher = cfg, student, teacher
        self.shape, self.seed = data.shape, seed
        self.fake = build_fake_score(teacher, cfg.fake_score)
        self.embedding = build_embedding_loss(cfg.embedding_loss, data)
        self.taps: FeatureTaps | None = None
        self.head: DiscriminatorHead | None = None
        if self.uses_discriminator:
            path = default_feature_path(self.fake.net) if cfg.gan_feature == "auto" else cfg.gan_feature
            self.taps = FeatureTaps(self.fake.net, [path], role="the fake score (method.gan_feature)")
            self.feature_path = path
            with torch.no_grad():
                probe = torch.zeros(2, *self.shape)
                self.fake(probe, torch.full((2,), 0.5), self.labels_for(2))
            probed = self.taps[path]
            if probed.ndim not in (2, 3, 4):
                raise ConfigError(f"method.gan_feature {path!r} outputs shape {tuple(probed.shape)}; the "
                                  "discriminator head reads (B, C), (B, L, C) or (B, C, H, W): name another module")
            self.head = DiscriminatorHead(DiscriminatorHead.feature_channels(probed), spatial=probed.ndim == 4)

    @property
    def uses_discriminator(self) -> bool:
        return self.cfg.gan_weight > 0

    def checkpoint_state(self) -> dict[str, Tensor]:
        """Everything but the teacher, and but LoRA fake scores' frozen base weights (the
        teacher's own tensors)."""
        shared = {t.data_ptr() for t in self.teacher.state_dict().values()}
        return {k: v for k, v in super().checkpoint_state().items() if v.data_ptr() not in shared}

    def labels_for(self, n: int, batch: dict[str, Tensor] | None = None,
                   device: torch.device | None = None) -> Tensor | None:
        """Class labels to generate with: the batch's, or random ones on `device` (conditional
        students only)."""
        if not self.student.conditional:
            return None
        if batch is not None and "y" in batch:
            return batch["y"][:n]
        return torch.randint(0, self.student.num_classes, (n,), device=device)

    def param_groups(self) -> list[ParamGroup]:
        fake = [p for p in self.fake.parameters() if p.requires_grad]
        fake += list(self.head.parameters()) if self.head else []
        k = self.cfg.fake_updates
        return [ParamGroup("fake_score", fake, lr=self.cfg.fake_lr),
                ParamGroup("student", self.student.parameters(), every=k, offset=k - 1)]

    # ---------------------------------------------------------------- generator

    def generate(self, n: int, labels: Tensor | None, device: torch.device) -> Tensor:
        """Generator samples x0: (n, *shape). One step: G(sigma(1) z, 1). With K steps (backward
        simulation), each row picks a step k of the K-step grid, its input x_{t_k} is made by
        the generator's own denoise-renoise steps without gradient, and the row's output is
        G(x_{t_k}, t_k), differentiable when grad is enabled."""
        return self.generate_with_times(n, labels, device)[0]

    def generate_with_times(self, n: int, labels: Tensor | None,
                            device: torch.device) -> tuple[Tensor, Tensor]:
        """`generate`'s samples (n, *shape) and each row's input time t_k (n,)."""
        schedule, steps = self.student.schedule, self.cfg.student_steps
        x = schedule.prior_scale() * torch.randn(n, *self.shape, device=device)
        if steps == 1:
            ones = torch.ones(n, device=device)
            return self.student.x0(x, ones, labels), ones
        times = time_grid(steps, device)
        k = torch.randint(0, steps, (n,), device=device)
        with torch.no_grad():
            for i in range(1, steps):
                t = times[i - 1].expand(n)
                x0 = self.student.x0(x, t, labels)
                renoised = schedule.add_noise(x0, torch.randn_like(x0), times[i].expand(n))
                x = torch.where(expand_time(k >= i, x), renoised, x)
        return self.student.x0(x, times[k], labels), times[k]

    def score_times(self, n: int, device: torch.device) -> Tensor:
        return self.cfg.t_min + (self.cfg.t_max - self.cfg.t_min) * torch.rand(n, device=device)

    def discriminate(self, x_t: Tensor, t: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """(fake score's x0 prediction, discriminator logits) at x_t."""
        x0 = self.fake.x0(x_t, t, labels)
        return x0, self.head(self.taps[self.feature_path])

    # ---------------------------------------------------------------- losses

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        rows = next(iter(batch.values()))
        n, device = len(rows), rows.device
        labels = self.labels_for(n, batch, device)
        if group == "fake_score":
            return self.fake_score_losses(batch, n, labels, device)
        losses = self.generator_losses(batch, n, labels, device)
        if self.embedding is not None:  # on a fresh generator sample, for every variant alike
            losses["embedding"] = self.embedding(self.generate(n, labels, device), batch)
        return losses

    def fake_score_losses(self, batch: dict[str, Tensor], n: int, labels: Tensor | None,
                          device: torch.device) -> dict[str, Tensor]:
        """Denoising regression of the fake score on the generator's current samples (+ the
        discriminator's loss on real vs generated, when the GAN is on)."""
        with torch.no_grad():
            x = self.generate(n, labels, device)
        t = self.score_times(n, device)
        losses = {"fake_denoising": denoising_loss(self.fake, x, labels, t).mean()}
        if self.head is not None:
            eps = torch.randn_like(x)
            _, fake_logits = self.discriminate(self.fake.schedule.add_noise(x, eps, t), t, labels)
            real = batch["x"]
            _, real_logits = self.discriminate(self.fake.schedule.add_noise(real, eps, t), t, labels)
            losses["discriminator"] = self.cfg.disc_weight * (
                F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean())
        return losses

    def noised_generator_sample(self, n: int, labels: Tensor | None,
                                device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """(x = G(z) with gradient, t ~ U[t_min, t_max], x_t = alpha_t x + sigma_t eps)."""
        x = self.generate(n, labels, device)
        t = self.score_times(n, device)
        return x, t, self.student.schedule.add_noise(x, torch.randn_like(x), t)

    def real_x0(self, x_t: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        """The real score's x0 prediction at x_t: the teacher's, with CFG scale `guidance`."""
        return self.teacher.x0(x_t, t, labels, self.cfg.guidance)

    def sample_weight(self, logits: Tensor | None) -> Tensor | None:
        """Per-sample weight of the distribution-matching gradient from the discriminator's
        logits at x_t (None: equal weights; f-distill's h(r))."""
        return None

    def generator_losses(self, batch: dict[str, Tensor], n: int, labels: Tensor | None,
                         device: torch.device) -> dict[str, Tensor]:
        x, t, x_t = self.noised_generator_sample(n, labels, device)
        losses = {}
        with torch.no_grad():
            real_x0 = self.real_x0(x_t, t, labels)
        if self.head is None:
            with torch.no_grad():
                fake_x0, logits = self.fake.x0(x_t, t, labels), None
        elif self.cfg.gan_weight > 0:  # the GAN loss needs the graph through the features
            fake_x0, logits = self.discriminate(x_t, t, labels)
            losses["gan"] = self.cfg.gan_weight * F.softplus(-logits).mean()
        else:
            with torch.no_grad():
                fake_x0, logits = self.discriminate(x_t, t, labels)
        losses["distribution_matching"] = distribution_matching_loss(
            x, real_x0, fake_x0.detach(), self.sample_weight(logits))
        return losses

    def student_steps(self) -> list[int]:
        return [self.cfg.student_steps]

    def student_sampler(self) -> str:
        return "multistep"


@METHODS.register("dmd", summary="DMD: one-step distribution matching plus regression onto teacher ODE pairs",
                  paper="One-step Diffusion with Distribution Matching Distillation (Yin et al., CVPR 2024)")
class DMD(DMD2):
    """Yin et al. 2024a (DMD): the distribution-matching gradient of `dmd2` (same fake score,
    same normalisation, Eq. 7-8) plus the regression loss lambda_reg ||G(z_ref) - y_ref||²
    on `pairs` (noise, teacher ODE solution) pairs made once before training (Eq. 9, with L2
    in place of LPIPS, which does not ship offline). Fake score and generator are updated
    alternately (`fake_updates: 1`). One-step generators only."""

    Config = DMDConfig
    cfg: DMDConfig

    def __init__(self, cfg: DMDConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, **kwargs: object) -> None:
        super().__init__(cfg, student, teacher, data, seed, **kwargs)
        num_classes = data.num_classes if student.conditional else None
        self._pairs = cached_teacher_pairs(teacher, cfg.pairs, self.shape, num_classes, seed,
                                    cfg.teacher_steps, "euler", cfg.guidance)

    def train_data(self) -> dict[str, Tensor]:
        return self._pairs

    def generator_losses(self, batch: dict[str, Tensor], n: int, labels: Tensor | None,
                         device: torch.device) -> dict[str, Tensor]:
        losses = super().generator_losses(batch, n, labels, device)
        noise = self.student.schedule.prior_scale() * batch["noise"]
        pred = self.student.x0(noise, torch.ones(n, device=device), batch.get("y"))
        losses["regression"] = self.cfg.regression_weight * regression_loss(pred, batch["target"], "l2", 0.0)
        return losses


class SiDConfig(DMD2Config):
    name: Literal["sid"] = "sid"  # type: ignore[assignment]
    fake_updates: int = Field(1, ge=1, description="fake-score updates per generator update (1 in SiD)")
    alpha: float = Field(1.2, description="alpha of the SiD loss (Eq. 21; 1.2 in the paper)")

    @model_validator(mode="after")
    def _no_gan(self) -> SiDConfig:
        if self.gan_weight:
            raise ValueError("sid has no GAN head (that is SiDA): set gan_weight: 0")
        return self


def score_identity_loss(x: Tensor, real_x0: Tensor, fake_x0: Tensor, alpha: float) -> Tensor:
    """SiD's generator loss (Zhou et al. 2024, Eq. 21 with Eq. 23's normaliser):
    (f_real - f_fake) . ((f_real - x) - alpha (f_real - f_fake)) / mean|x - f_real| per
    sample, averaged over elements; gradients flow through x and through both x0 predictions
    at the noised generator sample (the networks' weights are not updated by it)."""
    dims = tuple(range(1, x.ndim))
    with torch.no_grad():
        weight = 1.0 / (x - real_x0).abs().mean(dim=dims, keepdim=True).clamp(min=1e-5)
    diff = real_x0 - fake_x0
    return (diff * ((real_x0 - x) - alpha * diff) * weight).mean()


@METHODS.register("sid", summary="score identity distillation: data-free one-step generator from the score identity loss",
                  paper="Score identity Distillation: Exponentially Fast Distillation of Pretrained Diffusion Models for One-Step Generation (Zhou et al., ICML 2024)")
class SiD(DMD2):
    """Zhou et al. 2024 (SiD). Same generator, fake score and alternating updates as `dmd2`
    (the fake score, a copy of the teacher, is fitted by denoising regression on generator
    samples; never reads data), but the generator minimises the score-identity loss
    `score_identity_loss` with alpha = 1.2, differentiating through the teacher's and the fake
    score's predictions at the noised generator sample, not only through x as DMD does.

    Implemented: the SiD generator loss with its normaliser, alpha, alternating updates,
    few-step students through the generator's backward simulation (`student_steps`), CFG on
    the teacher. Not implemented: SiDA's adversarial term; the paper's EDM-specific
    time sampling (t ~ U[t_min, t_max] on the student's schedule instead)."""

    Config = SiDConfig
    cfg: SiDConfig

    def generator_losses(self, batch: dict[str, Tensor], n: int, labels: Tensor | None,
                         device: torch.device) -> dict[str, Tensor]:
        x, t, x_t = self.noised_generator_sample(n, labels, device)
        real_x0 = self.real_x0(x_t, t, labels)
        fake_x0 = self.fake.x0(x_t, t, labels)
        return {"score_identity": score_identity_loss(x, real_x0, fake_x0, self.cfg.alpha)}


class VSDConfig(DMD2Config):
    name: Literal["vsd"] = "vsd"  # type: ignore[assignment]
    fake_updates: int = Field(1, ge=1, description="fake-score (LoRA) updates per generator update")
    fake_score: FakeScoreConfig = Field(default_factory=lambda: FakeScoreConfig(kind="lora"), description=(
        "the fake score: LoRA adapters on the teacher's frozen weights (SwiftBrush), or kind: copy"))

    @model_validator(mode="after")
    def _no_gan(self) -> VSDConfig:
        if self.gan_weight:
            raise ValueError("vsd has no GAN head: set gan_weight: 0 (or use dmd2)")
        return self


def variational_score_loss(x: Tensor, real_eps: Tensor, fake_eps: Tensor, weight: Tensor) -> Tensor:
    """The VSD generator loss (ProlificDreamer Eq. 9, as SwiftBrush uses it): the gradient
    w(t) (eps_real(x_t) - eps_fake(x_t)) per sample, applied to x (B, ...) through the
    surrogate 0.5 ||x - sg(x - grad)||² (mean over elements); `weight` (B,) is w(t)."""
    with torch.no_grad():
        target = x - expand_time(weight, x) * (real_eps - fake_eps)
    return 0.5 * F.mse_loss(x, target)


@METHODS.register("vsd", summary="SwiftBrush: variational score distillation with a LoRA fake score, image-free",
                  paper="SwiftBrush: One-Step Text-to-Image Diffusion Model with Variational Score Distillation (Nguyen & Tran, CVPR 2024)")
class VSD(DMD2):
    """Nguyen & Tran 2024 (SwiftBrush). A one-step generator initialised from the teacher,
    trained image-free with variational score distillation: at x_t = alpha_t G(z) + sigma_t eps,
    t ~ U[t_min, t_max], the generator follows w(t) (eps_teacher(x_t) - eps_lora(x_t)) with
    w(t) = sigma_t² (`variational_score_loss`), where eps_lora is the teacher with LoRA adapters
    (peft; `fake_score`) trained by denoising regression on the generator's samples, updated
    alternately with the generator. The adapters sit on a structural copy of the teacher's
    network whose frozen weights are the teacher's own tensors: one frozen teacher in memory.

    Implemented: the VSD gradient and its weighting, the LoRA "teacher" on shared frozen
    weights, alternating updates, CFG on the teacher (`guidance`), never reading data.
    Not implemented: text conditioning and SwiftBrush's SD-scale details (its LoRA rank,
    latent space, the v2 additions: clamped CLIP loss, weight merging)."""

    Config = VSDConfig
    cfg: VSDConfig

    def generator_losses(self, batch: dict[str, Tensor], n: int, labels: Tensor | None,
                         device: torch.device) -> dict[str, Tensor]:
        x, t, x_t = self.noised_generator_sample(n, labels, device)
        with torch.no_grad():
            real_eps = self.teacher.eps(x_t, t, labels, self.cfg.guidance)
            fake_eps = self.fake.eps(x_t, t, labels)
        weight = self.student.schedule.sigma(t) ** 2
        return {"variational_score": variational_score_loss(x, real_eps, fake_eps, weight)}


F_DIVERGENCES = ("reverse-kl", "forward-kl", "js", "hellinger")


def f_divergence_weight(log_ratio: Tensor, divergence: str) -> Tensor:
    """h(r) = f''(r) r² of f-distill (Xu et al. 2025, Table 1), the weight of the score
    difference in the gradient of D_f(p_teacher || p_generator) at a noised sample, with
    r = p_teacher / p_generator given as log r (B,): reverse KL (f = -log r) 1, forward KL
    (f = r log r) r, Jensen-Shannon r / (1 + r), squared Hellinger (f = (sqrt r - 1)²) sqrt(r) / 2."""
    if divergence == "reverse-kl":
        return torch.ones_like(log_ratio)
    if divergence == "forward-kl":
        return log_ratio.exp()
    if divergence == "js":
        return torch.sigmoid(log_ratio)
    if divergence == "hellinger":
        return 0.5 * (0.5 * log_ratio).exp()
    raise ValueError(f"unknown f-divergence {divergence!r}; choose one of {F_DIVERGENCES}")


class FDistillConfig(DMD2Config):
    name: Literal["f-distill"] = "f-distill"  # type: ignore[assignment]
    divergence: Literal["reverse-kl", "forward-kl", "js", "hellinger"] = Field("js", description=(
        "the f-divergence whose gradient weighting h(r) the generator follows"))
    max_log_ratio: float = Field(5.0, gt=0, description=(
        "|log r| from the discriminator is clipped here before h(r), so one sample cannot take the batch's weight"))
    gan_weight: float = Field(0.0, ge=0, description=(
        "weight of the generator's non-saturating GAN loss (the discriminator is always trained: its logit is log r)"))


@METHODS.register("f-distill", summary="f-divergence distribution matching: DMD2 with the score difference weighted by h(r) from a discriminator",
                  paper="One-step Diffusion Models with f-Divergence Distribution Matching (Xu et al., 2025); Uni-Instruct (Wang et al., 2025)")
class FDistill(DMD2):
    """Xu et al. 2025 (f-distill), the f-divergence family that Uni-Instruct unifies. The
    generator gradient of D_f(p_teacher || p_generator) at noised samples is DMD's score
    difference weighted per sample by h(r) = f''(r) r² (`f_divergence_weight`), where the density
    ratio r = p_teacher(x_t) / p_generator(x_t) is read from the discriminator head on the fake
    score's features: trained with softplus losses on noised real data vs noised generator
    samples, its logit estimates log r. Reverse KL (h = 1) is DMD; forward KL and JS weight up
    the samples in regions the generator under-covers (r > 1), which counters mode dropping.

    Implemented: h(r) for reverse KL, forward KL, JS and squared Hellinger; r from DMD2's
    discriminator head (always trained here, needs real data), clipped at |log r| <=
    `max_log_ratio`; the weights normalised by their batch mean, so the step size stays DMD's;
    DMD's per-sample normaliser; optional GAN loss on the generator (`gan_weight`); two
    time-scale updates, backward simulation and CFG as in `dmd2`. Not implemented:
    Uni-Instruct's expanded f-divergence losses of the SiD form."""

    Config = FDistillConfig
    cfg: FDistillConfig

    @property
    def uses_discriminator(self) -> bool:
        return True

    def sample_weight(self, logits: Tensor | None) -> Tensor:
        """h(r) at log r = the clipped discriminator logit, normalised by its batch mean."""
        log_ratio = logits.detach().clamp(-self.cfg.max_log_ratio, self.cfg.max_log_ratio)
        weight = f_divergence_weight(log_ratio, self.cfg.divergence)
        return weight / weight.mean().clamp(min=1e-8)
