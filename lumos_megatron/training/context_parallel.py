"""CP slicing of a micro-batch: the one place that decides which tokens a CP rank holds.

Megatron's load-balanced order: the sequence is cut into ``2·cp`` chunks and rank ``r`` keeps
chunks ``r`` and ``2cp-1-r`` (so causal work is balanced). Tokens, labels, loss mask and
positions are sliced along the sequence; the attention mask keeps this rank's query rows and
all key columns (keys are all-gathered inside the attention).
"""

from __future__ import annotations

from typing import Dict

import torch


def cp_local_indices(seq_length: int, cp_size: int, cp_rank: int) -> torch.Tensor:
    """Global sequence positions held by ``cp_rank``, in local order."""
    if seq_length % (2 * cp_size):
        raise ValueError(f"sequence length {seq_length} is not divisible by 2 x CP = {2 * cp_size}")
    chunk = seq_length // (2 * cp_size)
    first = torch.arange(cp_rank * chunk, (cp_rank + 1) * chunk)
    second_id = 2 * cp_size - 1 - cp_rank
    second = torch.arange(second_id * chunk, (second_id + 1) * chunk)
    return torch.cat([first, second])


def slice_batch_for_cp(batch: Dict[str, torch.Tensor], cp_size: int, cp_rank: int) -> Dict[str, torch.Tensor]:
    """This CP rank's share of a batch built by ``training.batch.build_model_inputs``."""
    if cp_size == 1:
        return batch
    idx = cp_local_indices(batch["tokens"].shape[-1], cp_size, cp_rank).to(batch["tokens"].device)
    out = dict(batch)
    for key in ("tokens", "labels", "loss_mask", "position_ids", "frame_index"):
        if key in batch:
            out[key] = batch[key].index_select(-1, idx)
    out["attention_mask"] = batch["attention_mask"].index_select(2, idx)
    return out
