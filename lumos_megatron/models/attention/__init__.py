"""Frame-causal attention: mask construction (data side), core-attention modules (model side) and
the backend registry (``backends``) that pairs them."""

from lumos_megatron.lazy_exports import lazy_getattr

_LAZY = {
    "SDPACoreAttention": "lumos_megatron.models.attention.sdpa",
    "FlexCoreAttention": "lumos_megatron.models.attention.flex",
    "FrameCausalBlockMask": "lumos_megatron.models.attention.flex",
    "build_frame_causal_block_mask": "lumos_megatron.models.attention.flex",
    "TEBiasCoreAttention": "lumos_megatron.models.attention.te_bias",
    "frame_causal_attention_bias": "lumos_megatron.models.attention.te_bias",
    "frame_causal_mask": "lumos_megatron.models.frame_mask",
    "frame_segment_ids": "lumos_megatron.models.frame_mask",
    "mask_from_segment_ids": "lumos_megatron.models.frame_mask",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = list(_LAZY)
