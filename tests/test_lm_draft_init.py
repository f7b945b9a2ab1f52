"""`student.init: teacher-layers` on tiny random Llama teachers (no SmolLM2): the student is
exactly the teacher cut after its first layers, and a student of other widths is refused
with the settings to change."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distill.errors import ModelMismatchError
from distill.models.causal_lm import LlamaStudentConfig

V = 97


def teacher_llama(tied: bool = True, layers: int = 3) -> LlamaForCausalLM:
    """A random Llama with settings a default student would not have (rotary base, norm eps,
    head_dim, grouped-query attention), so a copy that ignores them shows in the logits."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=V, hidden_size=24, intermediate_size=40, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         max_position_embeddings=64, tie_word_embeddings=tied, rms_norm_eps=1e-3,
                         rope_theta=37.0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norms, so the final norm's copy matters too
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def student(layers: int = 2, **fields) -> LlamaStudentConfig:
    options = {"hidden": 24, "heads": 4, "kv_heads": 2, "intermediate": 40, **fields}
    return LlamaStudentConfig(init="teacher-layers", layers=layers, **options)


def first_layers_of(teacher: LlamaForCausalLM, layers: int) -> LlamaForCausalLM:
    """The reference: the teacher's own config with fewer layers, loaded from its weights."""
    config = LlamaConfig.from_dict({**teacher.config.to_dict(), "num_hidden_layers": layers})
    model = LlamaForCausalLM(config).eval()
    state = {k: v for k, v in teacher.state_dict().items()
             if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers}
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_truncated_student_computes_the_teachers_first_layers(tied: bool, layers: int):
    teacher = teacher_llama(tied)
    model = student(layers, tie_embeddings=tied).build_lm(teacher, None, seed=5).eval()
    ids = torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(input_ids=ids).logits
        want = first_layers_of(teacher, layers)(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    if layers == 3:  # all the teacher's layers: the teacher itself
        torch.testing.assert_close(got, teacher(input_ids=ids).logits, rtol=0, atol=1e-5)
    # the copy is a copy: training the student leaves the teacher alone
    assert model.get_input_embeddings().weight.data_ptr() != teacher.get_input_embeddings().weight.data_ptr()
    assert model.config.num_hidden_layers == layers and model.config.eos_token_id == 2


def test_truncated_student_differs_from_a_random_student():
    teacher = teacher_llama()
    ids = torch.randint(0, V, (2, 7), generator=torch.Generator().manual_seed(2))
    random_init = LlamaStudentConfig(layers=2, hidden=24, heads=4, kv_heads=2, intermediate=40)
    with torch.no_grad():
        a = student().build_lm(teacher, None, seed=0)(input_ids=ids).logits
        b = random_init.build_lm(teacher, None, seed=0)(input_ids=ids).logits
    assert not torch.allclose(a, b)


def test_other_widths_name_each_setting_and_the_value_to_set():
    teacher = teacher_llama()
    with pytest.raises(ModelMismatchError) as err:
        student(hidden=32, heads=8, kv_heads=4, intermediate=40).build_lm(teacher, None, seed=0)
    message = str(err.value)
    assert "teacher-layers" in message
    assert "student.hidden: 24 (now 32)" in message
    assert "student.heads: 4 (now 8)" in message
    assert "student.kv_heads: 2 (now 4)" in message
    assert "intermediate" not in message  # only the settings that differ
    with pytest.raises(ModelMismatchError, match=r"student.intermediate: 40 \(now 64\)"):
        student(intermediate=64).build_lm(teacher, None, seed=0)
    with pytest.raises(ModelMismatchError, match=r"student.layers: at most 3 \(now 4\)"):
        student(4).build_lm(teacher, None, seed=0)
    with pytest.raises(ModelMismatchError, match=r"student.tie_embeddings: false \(now True\)"):
        student().build_lm(teacher_llama(tied=False), None, seed=0)


def test_a_teacher_with_other_tensor_names_is_refused():
    class Renamed(torch.nn.Module):
        """A Llama config whose state dict has none of the Llama names."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = teacher_llama()
            self.config = self.inner.config

        def get_output_embeddings(self) -> torch.nn.Module:
            return self.inner.get_output_embeddings()

    with pytest.raises(ModelMismatchError, match="model.embed_tokens.weight missing"):
        student().build_lm(Renamed(), None, seed=0)
