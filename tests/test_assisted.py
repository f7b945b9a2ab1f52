"""The student as a draft in transformers' assisted generation (distill.metrics.assisted): a
draft with the teacher's own weights has every drafted token accepted, a random draft almost
none, and the assisted output is the teacher's greedy output."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distill.metrics.assisted import assisted_draft_stats


def tiny_lm(layers: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=0, eos_token_id=63)).eval()


@pytest.fixture(scope="module")
def prompts() -> torch.Tensor:
    return torch.randint(1, 60, (3, 8), generator=torch.Generator().manual_seed(1))


def test_a_draft_equal_to_the_teacher_is_always_accepted(prompts: torch.Tensor):
    stats = assisted_draft_stats(tiny_lm(2, 0), tiny_lm(2, 0), prompts, gamma=4, max_new_tokens=20,
                                 check_greedy=True)
    assert stats == {"assisted_acceptance": 1.0, "assisted_tokens_per_call": 5.0,
                     "assisted_matches_greedy": 1.0}


def test_a_random_draft_is_rejected_and_the_output_stays_greedy(prompts: torch.Tensor):
    teacher, draft = tiny_lm(2, 0), tiny_lm(1, 1)
    before = draft.generation_config.to_dict()
    stats = assisted_draft_stats(teacher, draft, prompts, gamma=3, max_new_tokens=12, check_greedy=True)
    assert stats["assisted_acceptance"] < 0.2
    assert 1.0 <= stats["assisted_tokens_per_call"] < 1.5
    assert stats["assisted_matches_greedy"] == 1.0
    assert draft.generation_config.to_dict() == before  # the draft's own settings are restored


def test_bad_lengths_raise(prompts: torch.Tensor):
    with pytest.raises(ValueError, match="gamma"):
        assisted_draft_stats(tiny_lm(1, 0), tiny_lm(1, 0), prompts, gamma=0)
