"""Visual cross-entropy: the reference from full logits and the fused chunked vocab-parallel one.

``visual_rows`` is the one rule for which positions carry the AR-DF loss. Names are resolved
lazily so that the reference (pure torch) can be used without loading megatron-core.
"""

from lumos_megatron.lazy_exports import lazy_getattr

_LAZY = {
    "fused_visual_cross_entropy": "lumos_megatron.losses.fused",
    "visual_shard": "lumos_megatron.losses.fused",
    "visual_cross_entropy": "lumos_megatron.losses.reference",
    "visual_loss_rows": "lumos_megatron.losses.reference",
    "visual_rows": "lumos_megatron.losses.reference",
    "visual_token_losses": "lumos_megatron.losses.reference",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = sorted(_LAZY)
