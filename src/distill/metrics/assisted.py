"""The student as a speculative-decoding draft of its teacher, measured by running it:
transformers' assisted generation (`teacher.generate(..., assistant_model=draft)`), greedy, with
a constant draft length gamma (DistillSpec, Zhou et al. 2024, §2: acceptance rate and block
efficiency; here for greedy decoding, where a drafted token is kept when it is the teacher's
argmax).

Counted with forward pre-hooks, per prompt:
- teacher calls = verification rounds (each round scores the gamma drafted tokens at once);
- drafted tokens = the draft's forward calls (one new token each);
- tokens per teacher call = new tokens / teacher calls (block efficiency, measured);
- acceptance = (new tokens - teacher calls) / drafted tokens: each round yields the accepted
  drafted tokens plus the teacher's own next token. The last round can be cut short by
  `max_new_tokens` or EOS, so this is exact up to that round.

The analytic, teacher-forced rate 1 - E[TVD] (sampling acceptance) is `metrics.lm`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from transformers.utils import logging as hf_logging


@contextmanager
def _counting_calls(module: nn.Module) -> Iterator[list[int]]:
    counter = [0]
    handle = module.register_forward_pre_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    try:
        yield counter
    finally:
        handle.remove()


@torch.no_grad()
def assisted_draft_stats(teacher: nn.Module, draft: nn.Module, prompts: Tensor, *, gamma: int = 4,
                         max_new_tokens: int = 32, check_greedy: bool = False) -> dict[str, float]:
    """{"assisted_acceptance", "assisted_tokens_per_call"} of `draft` drafting for `teacher` on
    each prompt row of `prompts` (P, L) token ids (no padding).

    `check_greedy` also runs the teacher alone and adds "assisted_matches_greedy", the fraction
    of prompts whose assisted output equals the teacher's own greedy output (1.0 unless float
    rounding flips a near-tie); it costs one plain generation per prompt."""
    if gamma < 1 or max_new_tokens < 1:
        raise ValueError(f"gamma and max_new_tokens must be >= 1, got {gamma} and {max_new_tokens}")
    config = copy.deepcopy(draft.generation_config)
    config.num_assistant_tokens = gamma
    config.num_assistant_tokens_schedule = "constant"
    config.assistant_confidence_threshold = 0.0  # always draft gamma tokens (no early stop)
    eos = teacher.generation_config.eos_token_id
    options = {"do_sample": False, "max_new_tokens": max_new_tokens, "pad_token_id":
               eos[0] if isinstance(eos, list) else eos}
    new = calls = drafted = same = 0
    saved, verbosity = draft.generation_config, hf_logging.get_verbosity()
    was_training = teacher.training, draft.training
    try:
        draft.generation_config = config
        hf_logging.set_verbosity_error()  # transformers warns on every assisted call about its own kwargs
        teacher.eval(), draft.eval()
        for row in prompts:
            ids = row[None]
            mask = torch.ones_like(ids)
            with _counting_calls(teacher) as t_calls, _counting_calls(draft) as d_calls:
                out = teacher.generate(ids, attention_mask=mask, assistant_model=draft, **options)
            new += out.shape[1] - ids.shape[1]
            calls += t_calls[0]
            drafted += d_calls[0]
            if check_greedy:
                plain = teacher.generate(ids, attention_mask=mask, **options)
                same += int(out.shape == plain.shape and bool((out == plain).all()))
    finally:
        hf_logging.set_verbosity(verbosity)
        draft.generation_config = saved
        teacher.train(was_training[0]), draft.train(was_training[1])
    stats = {"assisted_acceptance": min(1.0, max(0.0, (new - calls) / max(drafted, 1))),
             "assisted_tokens_per_call": new / max(calls, 1)}
    if check_greedy:
        stats["assisted_matches_greedy"] = same / len(prompts)
    return stats
