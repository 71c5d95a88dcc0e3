"""Frame-causal attention: mask construction (data side) and core-attention backends (model side)."""

import importlib

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


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lumos_megatron.models.attention' has no attribute {name!r}")


__all__ = list(_LAZY)
