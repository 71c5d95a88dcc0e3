"""Context parallelism for the frame-causal mask: the all-gather-KV scheme.

megatron-core's CP lives in TE, whose attention kernels under CP accept only causal/no masks
(docs/megatron.md §6). Here each CP rank keeps its query rows (Megatron's load-balanced chunks
``r`` and ``2cp-1-r``), all-gathers keys and values (reduce-scatter of their gradients in
backward), restores global sequence order, and attends with the rows of the full mask that
belong to its queries. The data side slices tokens, positions and mask rows in
:mod:`lumos_megatron.models.cp_sharding`, which owns the chunk rule.
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel.mappings import gather_from_sequence_parallel_region

from lumos_megatron.models.attention.sdpa import SDPACoreAttention
from lumos_megatron.models.cp_sharding import cp_chunk_order


def restore_global_order(gathered: torch.Tensor, cp_size: int) -> torch.Tensor:
    """[cp * local_s, ...] in rank order → [S, ...] in sequence order (dim 0 is the sequence)."""
    chunks = gathered.chunk(2 * cp_size, dim=0)
    by_position = sorted(zip(cp_chunk_order(cp_size), chunks), key=lambda item: item[0])
    return torch.cat([chunk for _, chunk in by_position], dim=0)


class AllGatherCPCoreAttention(SDPACoreAttention):
    """SDPA core attention over CP-sharded sequences; expects ``attention_mask`` rows of the local
    queries against the *full* key sequence ([b, 1, s_local, S], True = masked out)."""

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        cp_size = parallel_state.get_context_parallel_world_size()
        if cp_size > 1:
            group = parallel_state.get_context_parallel_group()
            key = restore_global_order(gather_from_sequence_parallel_region(key, group=group), cp_size)
            value = restore_global_order(gather_from_sequence_parallel_region(value, group=group), cp_size)
            if attention_mask is None:
                raise ValueError("context parallelism needs an explicit attention mask (rows of the "
                                 "local queries against the full sequence)")
        return super().forward(query, key, value, attention_mask, attn_mask_type, attention_bias,
                               packed_seq_params)
