"""``flex``: FlexAttention with a frame-causal block mask that skips empty tiles.

Trains on CUDA (compiled kernel); forward-only on CPU, where PyTorch has no FlexAttention
backward. The block mask is built on the GPU, where the compiled builder never materialises the
L x L mask.
"""

from typing import Optional

from lumos_megatron.models.attention.backends import AttentionBackend


def block_mask(segment_ids, dtype=None, document_ids=None):
    """A ``FrameCausalBlockMask`` (a BlockMask whose ``.to`` also moves its segment ids)."""
    from lumos_megatron.models.attention.flex import build_frame_causal_block_mask

    return build_frame_causal_block_mask(segment_ids, document_ids=document_ids)


def runtime_problem(training: bool) -> Optional[str]:
    """Training needs CUDA: FlexAttention has no CPU backward."""
    import torch

    if training and not torch.cuda.is_available():
        return (f"model.attention_backend='flex' cannot train without CUDA: FlexAttention has no CPU "
                f"backward (torch {torch.__version__}); train with model.attention_backend=sdpa on "
                "CPU (flex runs forward-only there)")
    return None


BACKEND = AttentionBackend(
    name="flex",
    summary="FlexAttention with a block mask that skips empty tiles (trains on CUDA; CPU forward only)",
    core_attention="lumos_megatron.models.attention.flex:FlexCoreAttention",
    build_mask=block_mask,
    mask_on_accelerator=True,
    runtime_problem=runtime_problem,
)
