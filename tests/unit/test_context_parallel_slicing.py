"""CP slicing (data side) and the global-order restore of the all-gather CP attention."""

import torch

from lumos_megatron.models.cp_sharding import cp_local_indices, slice_batch_for_cp


def test_load_balanced_chunks():
    assert cp_local_indices(8, 2, 0).tolist() == [0, 1, 6, 7]
    assert cp_local_indices(8, 2, 1).tolist() == [2, 3, 4, 5]
    held = torch.cat([cp_local_indices(24, 3, r) for r in range(3)])
    assert sorted(held.tolist()) == list(range(24))


def test_all_gather_order_is_restored():
    from lumos_megatron.models.attention.context_parallel import restore_global_order

    seq = torch.arange(24).view(24, 1)
    for cp in (2, 3):
        gathered = torch.cat([seq[cp_local_indices(24, cp, r)] for r in range(cp)])
        assert torch.equal(restore_global_order(gathered, cp), seq)


def test_slice_batch_keeps_query_rows_and_all_key_columns():
    s = 8
    batch = {
        "tokens": torch.arange(s)[None],
        "labels": torch.arange(s)[None] + 100,
        "loss_mask": torch.ones(1, s),
        "position_ids": torch.arange(s).expand(3, 1, s),
        "attention_mask": torch.triu(torch.ones(s, s, dtype=torch.bool), 1)[None, None],
    }
    local = slice_batch_for_cp(batch, 2, 1)
    assert local["tokens"].tolist() == [[2, 3, 4, 5]]
    assert local["position_ids"].shape == (3, 1, 4)
    assert local["attention_mask"].shape == (1, 1, 4, s)
    assert torch.equal(local["attention_mask"][0, 0], batch["attention_mask"][0, 0, 2:6])
    assert slice_batch_for_cp(batch, 1, 0) is batch
