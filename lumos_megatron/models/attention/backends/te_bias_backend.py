"""``te_bias``: TransformerEngine fused attention with the mask as a post-scale bias.

Needs TransformerEngine (``pip install -e '.[te]'``, CUDA only). The [b, 1, s, s] bias is built in
the compute dtype on the GPU, so it is never copied host-to-device per micro-batch.
"""

from lumos_megatron.models.attention.backends import AttentionBackend
from lumos_megatron.models.attention.te_availability import transformer_engine_problem


def additive_bias(segment_ids, dtype=None, document_ids=None):
    """Additive bias [b, 1, s, s] in ``dtype``: 0 allowed, ``finfo(dtype).min`` masked."""
    import torch

    from lumos_megatron.models.attention.te_bias import frame_causal_attention_bias

    return frame_causal_attention_bias(segment_ids, dtype or torch.float32, document_ids)


BACKEND = AttentionBackend(
    name="te_bias",
    summary="TransformerEngine fused attention with the mask as a post-scale bias (needs TE, CUDA)",
    core_attention="lumos_megatron.models.attention.te_bias:TEBiasCoreAttention",
    build_mask=additive_bias,
    mask_on_accelerator=True,
    runtime_problem=transformer_engine_problem,
)
