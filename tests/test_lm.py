"""LM distillation machinery on tiny random Llamas (no pretrained teacher): the chunked
vocabulary loss against the naive one, sparse targets with a tail bucket, per-token
normalisation under gradient accumulation, the offline teacher cache, text data, and the
mismatch errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from distill.data.text import Document, TextDataConfig, TokenData, pack_blocks, read_documents
from distill.errors import CheckpointError, ConfigError, DataError, ModelMismatchError
from distill.kd.losses import DIVERGENCES
from distill.lm.cache import build_topk_cache, cache_identity, load_topk_cache
from distill.lm.chunked import chunked_vocab_loss, naive_vocab_loss
from distill.lm.loading import check_gguf, check_same_vocabulary, converted_gguf_dir, smollm2_gguf
from distill.lm.methods import LMKD, LMCrossEntropy
from distill.lm.targets import DenseTargets, SparseTargets, token_divergence
from distill.train.batches import split_batch
from distill.train.checkpoint import load_tensors, save_tensors

V = 97


def tiny_llama(seed: int, hidden: int = 16, vocab: int = V) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


class CharTokenizer:
    """A stand-in tokenizer: one id per character (mod 90), EOS = 96."""

    eos_token_id = 96

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) % 90 for c in text]}

    def get_vocab(self) -> dict[str, int]:
        return {chr(i): i for i in range(V)}

    def __len__(self) -> int:
        return V


# --------------------------------------------------------------------- chunked loss


def _problem(n: int = 37, d: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, d, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(n, V, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, V, (n,), generator=gen)
    weights = (torch.rand(n, generator=gen, dtype=torch.float64) > 0.3).double() / n
    return hidden, weight, teacher, labels, weights


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
@pytest.mark.parametrize("sparse", [False, True])
def test_chunked_loss_equals_naive_values_and_gradients(name: str, sparse: bool):
    hidden, weight, teacher, labels, weights = _problem()
    top = teacher.log_softmax(-1).topk(10, -1)
    targets = SparseTargets(top.indices, top.values) if sparse else None
    temperature = 1.0 if sparse else 2.0

    def row_loss(logits, rows):
        target = targets.chunk(rows) if sparse else teacher[rows]
        return {"kd": 0.7 * token_divergence(logits, target, name=name, temperature=temperature),
                "ce": 0.3 * F.cross_entropy(logits, labels[rows], reduction="none")}

    naive = naive_vocab_loss(hidden, weight, row_loss, weights)
    g_naive = torch.autograd.grad(naive, (hidden, weight))
    chunked, parts = chunked_vocab_loss(hidden, weight, row_loss, weights, chunk_size=5)
    g_chunked = torch.autograd.grad(chunked, (hidden, weight))
    assert torch.allclose(chunked, naive, rtol=1e-5, atol=1e-7)
    assert torch.allclose(parts["kd"] + parts["ce"], naive, rtol=1e-5, atol=1e-7)
    for a, b in zip(g_chunked, g_naive, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)


def test_chunked_loss_skips_zero_weight_rows_and_checks_shapes():
    hidden, weight, teacher, labels, _ = _problem(n=6)
    seen = []

    def row_loss(logits, rows):
        seen.extend(rows.tolist())
        return {"ce": F.cross_entropy(logits, labels[rows], reduction="none")}

    weights = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    chunked_vocab_loss(hidden, weight, row_loss, weights, chunk_size=2)
    assert seen == [0, 3, 5]
    with pytest.raises(ValueError, match="same D"):
        chunked_vocab_loss(hidden, weight[:, :3], row_loss, weights)
    with pytest.raises(ValueError, match="row_weights"):
        chunked_vocab_loss(hidden, weight, row_loss, weights[:3])


def test_sparse_targets_with_every_id_equal_the_dense_divergence():
    _, _, teacher, _, _ = _problem(n=5)
    student = torch.randn(5, V, dtype=torch.float64)
    full = teacher.log_softmax(-1).topk(V, -1)
    sparse = token_divergence(student, SparseTargets(full.indices, full.values), name="forward-kl")
    dense = token_divergence(student, teacher, name="forward-kl")
    assert torch.allclose(sparse, dense, atol=1e-5)


def test_sparse_tail_bucket_is_the_missing_mass():
    """Student equal to the teacher: every divergence on top-k + tail buckets is 0; a student
    that moves mass only inside the tail is invisible, one that moves it out of the top-k is not."""
    _, _, teacher, _, _ = _problem(n=4)
    top = teacher.log_softmax(-1).topk(5, -1)
    target = SparseTargets(top.indices, top.values)
    assert token_divergence(teacher, target, name="forward-kl").abs().max() < 1e-6
    inside_tail = teacher.clone()
    tail_ids = teacher.topk(V, -1).indices[:, 10:20]
    # shift logits among tail ids while keeping the tail's total mass: swap two tail entries
    a, b = tail_ids[:, 0:1], tail_ids[:, 1:2]
    va, vb = inside_tail.gather(1, a), inside_tail.gather(1, b)
    inside_tail.scatter_(1, a, vb)
    inside_tail.scatter_(1, b, va)
    assert token_divergence(inside_tail, target, name="forward-kl").abs().max() < 1e-6
    flattened = teacher.clone()
    flattened.scatter_(1, top.indices[:, :1], teacher.gather(1, top.indices[:, :1]) - 3)
    assert token_divergence(flattened, target, name="forward-kl").min() > 1e-3


def test_sparse_targets_refuse_a_temperature():
    _, _, teacher, _, _ = _problem(n=3)
    top = teacher.topk(4, -1)
    with pytest.raises(ValueError, match="temperature"):
        token_divergence(teacher, SparseTargets(top.indices, top.values), name="forward-kl",
                         temperature=2.0)
    with pytest.raises(Exception, match="temperature"):
        LMKD.Config(signal="cache", temperature=2.0)


def test_dense_targets_topk_matches_full_softmax():
    gen = torch.Generator().manual_seed(3)
    dense = DenseTargets(torch.randn(9, 8, generator=gen), torch.randn(V, 8, generator=gen))
    top = dense.topk(6, chunk_size=4)
    ref = (dense.hidden @ dense.weight.T).log_softmax(-1).topk(6, -1)
    assert torch.equal(top.indices, ref.indices)
    assert torch.allclose(top.logprobs, ref.values, atol=1e-6)


# --------------------------------------------------------------------- methods


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V - 1, (4, 12), generator=gen)
    mask = torch.ones(4, 12)
    mask[0, 3:] = 0.0  # the first half of the batch has far fewer target tokens
    mask[1, 8:] = 0.0
    return {"input_ids": ids, "target_mask": mask, "row": torch.arange(4)}


def _method(cls, **options):
    batch = _batch()
    data = TokenData("test", batch["input_ids"], batch["target_mask"], batch["input_ids"], batch["target_mask"])
    return cls(cls.Config(**options), student=tiny_llama(0), teacher=tiny_llama(1).eval(),
               data=data, seed=0, total_steps=1)


@pytest.mark.parametrize("cls, options", [
    (LMKD, {"alpha": 0.6, "divergence": "jsd", "temperature": 2.0}),
    (LMKD, {"signal": "top-k", "top_k": 8}),
    (LMCrossEntropy, {}),
])
def test_gradient_accumulation_equals_one_big_batch(cls, options):
    """Per-token normalisation over the whole batch: two micro-batches with different token
    counts accumulate to exactly the gradient of the one big batch."""
    method = _method(cls, **options)
    params = list(method.student.parameters())

    def grads(micro_batches: int) -> list[torch.Tensor]:
        method.zero_grad()
        batch = method.prepare_batch(_batch(), micro_batches)
        for micro in split_batch(batch, micro_batches):
            sum(method(micro, "student", 0).values()).div(micro_batches).backward()
        return [p.grad.clone() for p in params]

    one, two = grads(1), grads(2)
    for a, b in zip(one, two, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    # and the loss is the mean over target tokens of the per-token loss
    batch = method.prepare_batch(_batch(), 1)
    value = sum(method(batch, "student", 0).values())
    assert math.isfinite(float(value.detach()))


def test_lm_ce_is_mean_token_cross_entropy():
    method = _method(LMCrossEntropy)
    batch = method.prepare_batch(_batch(), 1)
    loss = method(batch, "student", 0)["ce"]
    logits = method.student(input_ids=batch["input_ids"]).logits[:, :-1]
    mask = batch["target_mask"][:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, V), batch["input_ids"][:, 1:].reshape(-1), reduction="none")
    assert torch.allclose(loss, (ce * mask.reshape(-1)).sum() / mask.sum(), rtol=1e-5)


def test_cached_signal_reads_the_cache_rows(tmp_path: Path):
    teacher = tiny_llama(1).eval()
    ids = _batch()["input_ids"]
    build_topk_cache(tmp_path, teacher, ids, 8, shard_rows=3, progress=False)
    cached = load_topk_cache(tmp_path, cache_identity(teacher, ids, 8))
    live = _method(LMKD, signal="top-k", top_k=8)
    live.teacher = teacher
    from_cache = _method(LMKD, signal="cache", top_k=8)
    from_cache.cached_targets = cached
    from_cache.student.load_state_dict(live.student.state_dict())
    batch = live.prepare_batch(_batch(), 1)
    assert torch.allclose(live(batch, "student", 0)["kd"], from_cache(batch, "student", 0)["kd"], atol=1e-5)


# --------------------------------------------------------------------- teacher cache


def test_cache_resumes_after_a_kill_and_never_reads_partial_shards(tmp_path: Path):
    teacher = tiny_llama(1).eval()
    ids = torch.randint(0, V, (7, 10))
    calls = {"n": 0}
    forward = teacher.model.forward

    def dies_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return forward(*args, **kwargs)

    teacher.model.forward = dies_on_third_batch
    with pytest.raises(KeyboardInterrupt):
        build_topk_cache(tmp_path, teacher, ids, 4, shard_rows=2, batch_rows=1, progress=False)
    teacher.model.forward = forward
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert list(manifest["shards"]) == ["0"]
    identity = cache_identity(teacher, ids, 4)
    with pytest.raises(CheckpointError, match="incomplete"):
        load_topk_cache(tmp_path, identity)
    build_topk_cache(tmp_path, teacher, ids, 4, shard_rows=2, batch_rows=1, progress=False)
    cached = load_topk_cache(tmp_path, identity)
    assert cached.indices.shape == (7, 9, 4)
    fresh = tmp_path / "fresh"
    build_topk_cache(fresh, teacher, ids, 4, shard_rows=5, progress=False)
    again = load_topk_cache(fresh, identity)
    assert torch.equal(cached.indices, again.indices)
    assert torch.allclose(cached.logprobs, again.logprobs, atol=1e-5)


def test_cache_refuses_another_teacher_or_data(tmp_path: Path):
    ids = torch.randint(0, V, (3, 10))
    build_topk_cache(tmp_path, tiny_llama(1), ids, 4, progress=False)
    with pytest.raises(CheckpointError, match="another teacher"):
        build_topk_cache(tmp_path, tiny_llama(2), ids, 4, progress=False)
    with pytest.raises(CheckpointError, match="tokens"):
        load_topk_cache(tmp_path, cache_identity(tiny_llama(1), ids.flip(0), 4))
    # a cache with a larger k serves a smaller one: its first k entries by rank
    small = load_topk_cache(tmp_path, cache_identity(tiny_llama(1), ids, 2))
    full = load_topk_cache(tmp_path, cache_identity(tiny_llama(1), ids, 4))
    assert torch.equal(small.indices, full.indices[..., :2])
    with pytest.raises(CheckpointError, match="k: cache 4"):
        load_topk_cache(tmp_path, cache_identity(tiny_llama(1), ids, 8))
    shard = tmp_path / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_topk_cache(tmp_path, cache_identity(tiny_llama(1), ids, 4))


# --------------------------------------------------------------------- data, files, errors


def test_text_file_documents_and_jsonl_prompts(tmp_path: Path):
    txt = tmp_path / "a.txt"
    txt.write_text("first doc\nstill first\n\n\nsecond doc\n")
    assert [d.text for d in read_documents(txt)] == ["first doc\nstill first", "second doc"]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"prompt": "Q?", "completion": "A."}\n{"text": "plain"}\n')
    docs = read_documents(jsonl)
    assert docs[0] == Document("A.", prompt="Q?") and docs[1] == Document("plain")
    ids, mask = pack_blocks(docs, CharTokenizer(), 4)
    # "Q?" masked, "A." EOS "plain" EOS trained, padding masked; a block's first token is
    # never a target (nothing before it in the block predicts it)
    assert mask.reshape(-1).tolist() == [0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0]
    assert ids.shape == (3, 4) and ids[2, 3] == CharTokenizer.eos_token_id


@pytest.mark.parametrize("content, match", [
    (b"", "holds no text"),
    (b"\xff\xfe\x00bad", "not UTF-8"),
    (b'{"text": 1}\n', "line 1 has neither"),
    (b"{oops\n", "line 1 is not JSON"),
])
def test_bad_text_files_name_the_file(tmp_path: Path, content: bytes, match: str):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        read_documents(path)
    assert str(path) in str(err.value)


def test_builtin_corpus_splits_documents_not_blocks():
    data = TextDataConfig(builtin="python-docs", block_size=16, max_test_blocks=4)
    docs = data.documents()
    assert len(docs) > 200 and len({d.text for d in docs}) == len(docs)
    tokens = data.build_tokens(CharTokenizer())
    assert tokens.train_ids.shape[1] == 16 and tokens.test_ids.shape == (4, 16)
    with pytest.raises(Exception, match="exactly one of path"):
        TextDataConfig()
    with pytest.raises(ConfigError, match="LM method"):
        data.build()


def test_vocabulary_mismatch_names_both_and_points_to_cross_tokenizer():
    class Other(CharTokenizer):
        def get_vocab(self):
            return {"x" + chr(i): i for i in range(V)}

    teacher, student = tiny_llama(0), tiny_llama(1, vocab=V + 3)
    with pytest.raises(ModelMismatchError, match="cross-tokenizer"):
        check_same_vocabulary(teacher, CharTokenizer(), tiny_llama(1), Other())
    with pytest.raises(ModelMismatchError, match="padded vocabulary"):
        check_same_vocabulary(teacher, CharTokenizer(), student, CharTokenizer())
    assert check_same_vocabulary(teacher, CharTokenizer(), student, CharTokenizer(), truncate_vocab=True) == V


def test_gguf_check_refuses_other_files(tmp_path: Path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(CheckpointError, match="not a GGUF file"):
        check_gguf(fake)
    with pytest.raises(ConfigError, match="does not exist"):
        check_gguf(tmp_path / "missing.gguf")


def test_a_truncated_gguf_names_the_file_and_caches_nothing(tmp_path: Path, monkeypatch):
    """The real SmolLM2 GGUF cut in half: its header reads, its tensors do not (~5 s)."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    source = smollm2_gguf()
    cut = tmp_path / source.name
    with open(source, "rb") as full, open(cut, "wb") as half:
        half.write(full.read(source.stat().st_size // 2))
    with pytest.raises(CheckpointError, match=f"{cut}.*may be truncated: download or copy it again"):
        converted_gguf_dir(cut)
    assert not list((tmp_path / "cache").rglob("config.json")), "a half conversion was cached"


def test_tied_weights_checkpoint_round_trip(tmp_path: Path):
    model = tiny_llama(0)
    state = model.state_dict()
    save_tensors(state, tmp_path / "m.safetensors")
    loaded = load_tensors(tmp_path / "m.safetensors")
    assert set(loaded) == set(state)
    assert loaded["lm_head.weight"].data_ptr() == loaded["model.embed_tokens.weight"].data_ptr()
    fresh = tiny_llama(5)
    fresh.load_state_dict(loaded)
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)


# --------------------------------------------------------------------- TAID


def test_taid_target_interpolates_with_the_detached_student():
    _, _, teacher, _, _ = _problem(n=4)
    student = torch.randn(4, V, dtype=torch.float64, requires_grad=True)
    full = token_divergence(student, teacher, name="forward-kl")
    assert torch.allclose(token_divergence(student, teacher, name="forward-kl", interpolate=1.0), full)
    half = token_divergence(student, teacher, name="forward-kl", interpolate=0.5)
    mix = 0.5 * student.detach() + 0.5 * teacher
    assert torch.allclose(half, token_divergence(student, mix, name="forward-kl"))
    assert (half < full).all()  # the intermediate target is closer to the student
    assert token_divergence(student, teacher, name="forward-kl", interpolate=0.0).abs().max() < 1e-12


def test_taid_schedule_rises_adaptively_and_round_trips():
    from distill.lm.methods import TAIDConfig, TAIDSchedule

    cfg = TAIDConfig(t_start=0.4, t_end=0.9, alpha=0.05)
    fast, slow = TAIDSchedule(cfg, 100), TAIDSchedule(cfg, 100)
    for step in range(10):
        fast.update(10.0 * 0.8 ** step, step)  # loss falling fast: t grows faster
        slow.update(10.0, step)  # flat loss: still at least the linear schedule
    assert fast.t > slow.t >= 0.4 + 0.5 * 10 / 100 - 1e-12
    for step in range(10, 400):
        fast.update(1.0, step)
    assert fast.t == 0.9
    restored = TAIDSchedule(cfg, 100)
    restored.load(json.loads(json.dumps(slow.state())))
    assert restored.state() == slow.state()
    with pytest.raises(Exception, match="below"):
        TAIDConfig(t_start=0.5, t_end=0.3)


def test_lm_kd_with_taid_logs_t_and_checkpoints_it():
    method = _method(LMKD, taid={"t_start": 0.4, "alpha": 0.1})
    batch = method.prepare_batch(_batch(), 1)
    method.before_step(0)
    method(batch, "student", 0)
    method.after_step(0, ["student"])
    assert method.step_logs()["taid/t"] > 0.4
    state = method.extra_state()
    other = _method(LMKD, taid={"t_start": 0.4, "alpha": 0.1})
    other.load_extra_state(json.loads(json.dumps(state)))
    assert other.taid.state() == method.taid.state()


def test_acceptance_rate_is_one_minus_tvd_and_block_efficiency():
    from distill.metrics.lm import block_efficiency, lm_scores

    teacher, student = tiny_llama(1).eval(), tiny_llama(0).eval()
    ids, mask = _batch()["input_ids"], _batch()["target_mask"]
    scores = lm_scores({"teacher": teacher, "student": student}, ids, mask, batch_rows=3)
    with torch.no_grad():
        pt = teacher(input_ids=ids).logits[:, :-1].softmax(-1)
        ps = student(input_ids=ids).logits[:, :-1].softmax(-1)
    keep = mask[:, 1:] > 0
    tvd = 0.5 * (pt - ps).abs().sum(-1)[keep].mean()
    assert scores["student"]["acceptance_rate"] == pytest.approx(1 - float(tvd), abs=1e-5)
    same = lm_scores({"teacher": teacher, "student": teacher}, ids, mask)
    assert same["student"]["acceptance_rate"] == pytest.approx(1.0, abs=1e-5)
    assert block_efficiency(1.0, 4) == 5.0 and block_efficiency(0.0, 4) == 1.0
    assert block_efficiency(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)


# --------------------------------------------------------------------- on-policy


def test_sampled_continuations_keep_the_prompt_and_mask_after_eos():
    from distill.lm.on_policy import sample_continuations

    model = tiny_llama(0).eval()
    ids = _batch()["input_ids"]
    torch.manual_seed(0)
    new, mask = sample_continuations(model, ids, 4, 1.0, eos=96)
    assert new.shape == ids.shape and torch.equal(new[:, :4], ids[:, :4])
    assert (mask[:, :4] == 0).all() and mask[:, 4:].sum() > 0
    for row, m in zip(new, mask, strict=True):  # targets stop right after the first sampled EOS
        eos = (row[4:] == 96).nonzero()
        if len(eos):
            first = 4 + int(eos[0])
            assert m[first] == 1 and (m[first + 1:] == 0).all()
    with pytest.raises(ValueError, match="prompt_tokens"):
        sample_continuations(model, ids, 12, 1.0, eos=96)


def test_on_policy_batches_replace_the_text_with_student_samples():
    from distill.lm.on_policy import DistillSpec, OnPolicyKD

    method = _method(OnPolicyKD, on_policy_fraction=1.0, prompt_tokens=3)
    batch = _batch()
    prepared = method.prepare_batch(batch, 1)
    assert method.step_logs()["on_policy"] == 1.0
    assert torch.equal(prepared["input_ids"][:, :3], batch["input_ids"][:, :3])
    assert "row" not in prepared and prepared["target_mask"][:, :3].sum() == 0
    losses = method(prepared, "student", 0)
    assert set(losses) == {"kd"} and torch.isfinite(losses["kd"])
    off = _method(OnPolicyKD, on_policy_fraction=0.0)
    assert torch.equal(off.prepare_batch(batch, 1)["input_ids"], batch["input_ids"])
    assert DistillSpec.Config().divergence == "tvd" and DistillSpec.Config().on_policy_fraction == 1.0
    with pytest.raises(Exception, match="no cache holds"):
        OnPolicyKD.Config(signal="cache")


# --------------------------------------------------------------------- teacher hacking


def test_hacking_verdict_flags_golden_rising_while_proxy_falls():
    from distill.lm.monitor import hacking_verdict

    def log(proxy, golden):
        return [{"step": 10 * (i + 1), "monitor/proxy_kl": p, "monitor/golden_nll": g}
                for i, (p, g) in enumerate(zip(proxy, golden, strict=True))] + [{"step": 99, "loss": 1.0}]

    hacked = hacking_verdict(log([3.0, 2.0, 1.5, 1.0], [5.0, 4.5, 4.7, 4.9]))
    assert hacked["hacking"] and "fell 2.000 -> 1.000" in hacked["message"] and hacked["steps"] == [10, 20, 30, 40]
    healthy = hacking_verdict(log([3.0, 2.0, 1.5], [5.0, 4.5, 4.4]))
    assert not healthy["hacking"]
    both_worse = hacking_verdict(log([3.0, 2.0, 2.5], [5.0, 4.5, 4.9]))  # proxy rose too: not hacking
    assert not both_worse["hacking"]
    assert hacking_verdict([{"step": 1, "loss": 2.0}]) is None
