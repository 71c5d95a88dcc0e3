"""Context-parallel sharding of a sequence: the one place that decides which tokens a CP rank holds.

Megatron's load-balanced order: the sequence is cut into ``2·cp`` chunks and rank ``r`` keeps
chunks ``r`` and ``2cp-1-r`` (so causal work is balanced). On the data side
(:func:`slice_batch_for_cp`) tokens, labels, loss mask and positions are sliced along the
sequence and the attention mask keeps this rank's query rows against all key columns; the
all-gather-KV CP attention (``models.attention.context_parallel``) puts gathered keys back in
sequence order with :func:`cp_chunk_order`.
"""

from __future__ import annotations

from typing import Dict, List

import torch


def cp_chunk_ids(cp_size: int, cp_rank: int) -> List[int]:
    """The two sequence chunks (of ``2·cp_size``) that ``cp_rank`` holds, in local order."""
    return [cp_rank, 2 * cp_size - 1 - cp_rank]


def cp_chunk_order(cp_size: int) -> List[int]:
    """Global chunk ids in the order an all-gather over CP ranks concatenates them."""
    return [chunk for rank in range(cp_size) for chunk in cp_chunk_ids(cp_size, rank)]


def cp_local_indices(seq_length: int, cp_size: int, cp_rank: int) -> torch.Tensor:
    """Global sequence positions held by ``cp_rank``, in local order."""
    if seq_length % (2 * cp_size):
        raise ValueError(f"sequence length {seq_length} is not divisible by 2 x CP = {2 * cp_size}")
    chunk = seq_length // (2 * cp_size)
    return torch.cat([torch.arange(c * chunk, (c + 1) * chunk) for c in cp_chunk_ids(cp_size, cp_rank)])


def slice_batch_for_cp(batch: Dict[str, torch.Tensor], cp_size: int, cp_rank: int) -> Dict[str, torch.Tensor]:
    """This CP rank's share of a micro-batch dict (``training.batch.assemble_micro_batch``).

    ``loss_rows`` index a batch's own sequence and cannot be sliced: they are computed after
    slicing (``training.batch.rank_micro_batch``), so a batch that has them is refused here."""
    if cp_size == 1:
        return batch
    if "loss_rows" in batch:
        raise ValueError("slice_batch_for_cp: the batch already has loss_rows, which index the whole "
                         "sequence; compute them after slicing (training.batch.rank_micro_batch)")
    idx = cp_local_indices(batch["tokens"].shape[-1], cp_size, cp_rank).to(batch["tokens"].device)
    out = dict(batch)
    for key in ("tokens", "labels", "loss_mask", "position_ids", "frame_index"):
        if key in batch:
            out[key] = batch[key].index_select(-1, idx)
    out["attention_mask"] = batch["attention_mask"].index_select(2, idx)
    return out
