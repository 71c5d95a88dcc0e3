"""Visual cross-entropy: the reference from full logits and the fused chunked vocab-parallel one.

``visual_rows`` is the one rule for which positions carry the AR-DF loss. Names are resolved
lazily so that the reference (pure torch) can be used without loading megatron-core.
"""

import importlib

_LAZY = {
    "fused_visual_cross_entropy": "lumos_megatron.losses.fused",
    "visual_shard": "lumos_megatron.losses.fused",
    "visual_cross_entropy": "lumos_megatron.losses.reference",
    "visual_rows": "lumos_megatron.losses.reference",
    "visual_token_losses": "lumos_megatron.losses.reference",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lumos_megatron.losses' has no attribute {name!r}")


__all__ = sorted(_LAZY)
