"""``sdpa``: torch scaled-dot-product attention with a dense boolean frame-causal mask.

The reference backend: CPU and GPU, the only one that trains on CPU, and the one context
parallelism runs on (the all-gather-KV CP attention is SDPA-based).
"""

from lumos_megatron.models.attention.backends import AttentionBackend


def dense_mask(segment_ids, dtype=None, document_ids=None):
    """Megatron's convention: bool [b, 1, s, s], True = masked out."""
    from lumos_megatron.models.frame_mask import mask_from_segment_ids

    return (~mask_from_segment_ids(segment_ids, document_ids)).unsqueeze(1)


BACKEND = AttentionBackend(
    name="sdpa",
    summary="torch SDPA with a dense boolean mask (CPU and GPU; the CPU training path; supports CP)",
    core_attention="lumos_megatron.models.attention.sdpa:SDPACoreAttention",
    build_mask=dense_mask,
    context_parallel_core_attention="lumos_megatron.models.attention.context_parallel:AllGatherCPCoreAttention",
)
