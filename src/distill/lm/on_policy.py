"""On-policy LM distillation: the student learns on sequences it generated itself, scored
token by token by the teacher (GKD), and DistillSpec's draft-model distillation on such data.

A batch is on-policy with probability `on_policy_fraction` (GKD's λ): the first
`prompt_tokens` tokens of each block are kept as the prompt, the student samples the rest at
`sampling_temperature` (a separate key from the loss `temperature`), and only the sampled
tokens (up to and including a sampled EOS) are targets. The teacher is always live (a cache
of the dataset's sequences says nothing about the student's samples).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from distill.kd.losses import DivergenceName
from distill.lm.methods import LMKD
from distill.registry import METHODS
from distill.train.batches import Batch


class OnPolicyConfig(LMKD.Config):
    on_policy_fraction: float = Field(0.5, ge=0, le=1, description=(
        "probability that a batch is sampled from the student (GKD's lambda); 0: supervised KD"))
    prompt_tokens: int = Field(8, ge=1, description="tokens of each block kept as the prompt")
    sampling_temperature: float = Field(1.0, gt=0, description="the student's sampling temperature")

    @model_validator(mode="after")
    def _live_teacher(self) -> Any:
        if self.signal == "cache" and self.on_policy_fraction > 0:
            raise ValueError("on-policy batches are the student's own samples, which no cache holds: "
                             "set signal: dense or top-k")
        return self


def sample_continuations(model: torch.nn.Module, ids: torch.Tensor, prompt_tokens: int,
                         temperature: float, eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, target_mask) of shape (B, L): each block's first `prompt_tokens` ids, then tokens
    sampled from `model`; the mask is 1 on sampled tokens up to and including the first EOS."""
    length = ids.shape[1]
    if not 0 < prompt_tokens < length:
        raise ValueError(f"prompt_tokens must lie in 1..{length - 1} for blocks of {length} tokens")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids[:, :prompt_tokens],
                             attention_mask=torch.ones_like(ids[:, :prompt_tokens]),
                             do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                             max_new_tokens=length - prompt_tokens, pad_token_id=eos, eos_token_id=eos)
    model.train(was_training)
    new = torch.full((len(ids), length), eos, dtype=ids.dtype, device=ids.device)
    new[:, : out.shape[1]] = out[:, :length]
    generated = new[:, prompt_tokens:]
    ended_before = (generated == eos).long().cumsum(1) - (generated == eos).long()  # EOS strictly before
    mask = torch.zeros(new.shape, dtype=torch.float32, device=ids.device)
    mask[:, prompt_tokens:] = (ended_before == 0).float()
    return new, mask


@METHODS.register("on-policy", summary="GKD: token-level KD on a mix of the text and the student's own samples",
                  paper="On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes "
                        "(GKD, Agarwal et al., ICLR 2024)")
class OnPolicyKD(LMKD):
    """GKD (Agarwal et al. 2024, Alg. 1): with probability λ (`on_policy_fraction`) the batch
    is the student's own continuations of the blocks' prompts, else the dataset's text; the
    loss is D(p_t || p_s) per target token (generalized JSD(beta) as in the paper, or any
    divergence of `distill.kd.losses`), no gradient through the sampling.
    Implemented: λ mixing, sampling temperature, every divergence, dense or top-k live teacher.
    Not implemented: the paper's RL-augmented variant (reward on top of the divergence)."""

    class Config(OnPolicyConfig):
        name: Literal["on-policy"] = "on-policy"
        divergence: DivergenceName = "jsd"

    def __init__(self, cfg: OnPolicyConfig, **kwargs: Any) -> None:
        super().__init__(cfg, **kwargs)
        self._last_on_policy = 0.0
        self.eos = self.student.config.eos_token_id

    def prepare_batch(self, batch: Batch, micro_batches: int) -> Batch:
        cfg = self.cfg
        self._last_on_policy = 0.0
        if cfg.on_policy_fraction > 0 and float(torch.rand(())) < cfg.on_policy_fraction:
            ids, mask = sample_continuations(self.student, batch["input_ids"], cfg.prompt_tokens,
                                             cfg.sampling_temperature, self.eos)
            batch = {"input_ids": ids, "target_mask": mask}
            self._last_on_policy = 1.0
        return super().prepare_batch(batch, micro_batches)

    def step_logs(self) -> dict[str, float]:
        return {**super().step_logs(), "on_policy": self._last_on_policy}


@METHODS.register("distillspec", summary="DistillSpec: distil a speculative-decoding draft on its own samples (TVD)",
                  paper="DistillSpec: Improving Speculative Decoding via Knowledge Distillation "
                        "(Zhou et al., ICLR 2024)")
class DistillSpec(OnPolicyKD):
    """DistillSpec (Zhou et al. 2024): the draft (student) is trained to maximise its
    acceptance rate under speculative decoding, alpha = 1 - E[TVD(p_t, p_s)], on data it
    generates itself (on-policy; `on_policy_fraction` 1 by default) with TVD as the divergence
    (the paper's choice for greedy-free sampling; forward KL also available). The evaluation
    reports each model's acceptance rate and tokens per teacher call against the teacher
    (`distill.metrics.lm`), teacher-forced on the held-out text; `eval.assisted` also runs the
    draft in transformers' assisted generation (greedy) and reports the measured acceptance and
    tokens per teacher call (`distill.metrics.assisted`).
    Not implemented: the paper's teacher-generated-data variants; acceptance under sampling
    measured by running (the sampled rate is the analytic one)."""

    class Config(OnPolicyConfig):
        name: Literal["distillspec"] = "distillspec"
        divergence: DivergenceName = "tvd"
        on_policy_fraction: float = Field(1.0, ge=0, le=1, description="share of batches the draft samples")
