"""BatchStream: uniform batches, and stratified batches (a fixed share of labelled rows)."""

from __future__ import annotations

import pytest
import torch

from distill.train.batches import BatchStream, split_batch, stratum_counts


def labelled_rows(labelled: int = 40, unlabelled: int = 200) -> tuple[dict, torch.Tensor]:
    """Rows whose "i" is their index and "y" their label (-100: unlabelled), with the stratum per row."""
    y = torch.cat([torch.arange(labelled) % 4, torch.full((unlabelled,), -100)])
    rows = {"i": torch.arange(labelled + unlabelled), "y": y}
    return rows, (y == -100).long()


def test_uniform_batches_cover_each_row_once_per_epoch():
    stream = BatchStream(torch.arange(12), 4, seed=3)
    epoch = torch.cat([stream.next() for _ in range(3)])
    assert sorted(epoch.tolist()) == list(range(12))


def test_stratified_batches_hold_each_strata_share_and_cycle_it_apart():
    rows, stratum = labelled_rows(labelled=48)
    stream = BatchStream(rows, 32, seed=0, strata=(stratum, (0.5, 0.5)))
    seen = []
    for _ in range(6):  # 6 × 16 labelled draws: two epochs of the 48 labelled rows
        batch = stream.next()
        assert int((batch["y"] != -100).sum()) == 16
        seen += batch["i"][batch["y"] != -100].tolist()
    assert sorted(seen[:48]) == list(range(48)) and sorted(seen[48:]) == list(range(48))
    assert seen[:48] != seen[48:]  # a fresh permutation each epoch


def test_stratified_batches_are_interleaved_for_processes_and_micro_batches():
    rows, stratum = labelled_rows()
    full = BatchStream(rows, 32, seed=1, strata=(stratum, (0.25, 0.75))).next()
    for part in split_batch(full, 4):  # accumulation micro-batches
        assert int((part["y"] != -100).sum()) == 2
    shards = [BatchStream(rows, 32, seed=1, rank=r, world=2, strata=(stratum, (0.25, 0.75))).next()
              for r in range(2)]
    assert [int((s["y"] != -100).sum()) for s in shards] == [4, 4]
    assert sorted(torch.cat([s["i"] for s in shards]).tolist()) == sorted(full["i"].tolist())


def test_stratified_position_resumes_exactly():
    rows, stratum = labelled_rows()
    strata = (stratum, (0.5, 0.5))
    a = BatchStream(rows, 32, seed=2, strata=strata)
    for _ in range(3):
        a.next()
    b = BatchStream(rows, 32, seed=2, strata=strata)
    b.load_state_dict(a.state_dict())
    for _ in range(4):
        torch.testing.assert_close(a.next()["i"], b.next()["i"])
    with pytest.raises(ValueError, match="other batch shares"):
        BatchStream(rows, 32, seed=2).load_state_dict(a.state_dict())


def test_stratum_counts_round_to_the_batch_and_refuse_bad_shares():
    assert stratum_counts((0.5, 0.5), 7) == [3, 4]  # round(3.5) = 4 each; the first absorbs -1
    assert sum(stratum_counts((0.01, 0.99), 10)) == 10 and stratum_counts((0.01, 0.99), 10)[0] == 1
    with pytest.raises(ValueError, match="sum to 1"):
        stratum_counts((0.5, 0.6), 8)
    rows, stratum = labelled_rows(labelled=4)
    with pytest.raises(ValueError, match="stratum 0 has 4 rows"):
        BatchStream(rows, 32, seed=0, strata=(stratum, (0.5, 0.5)))
