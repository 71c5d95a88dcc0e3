"""Visual cross-entropy: the reference from full logits and the fused chunked vocab-parallel one."""

from lumos_megatron.losses.fused import fused_visual_cross_entropy, visual_shard
from lumos_megatron.losses.reference import visual_cross_entropy, visual_rows, visual_token_losses

__all__ = ["fused_visual_cross_entropy", "visual_cross_entropy", "visual_rows",
           "visual_shard", "visual_token_losses"]
