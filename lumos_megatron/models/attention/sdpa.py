"""Core attention on ``torch.nn.functional.scaled_dot_product_attention`` with an arbitrary mask.

megatron-core's local ``DotProductAttention`` cannot be used here: with ``causal`` its fused
softmax ignores the passed mask on GPU, it rejects context parallelism and packed sequences, and
it allocates through CUDA-only buffers. This module is the reference backend (CPU and GPU).

Mask convention at the model boundary is megatron's: a bool tensor broadcastable to
``[b, 1, sq, sk]`` where True means *masked out*. ``None`` means causal.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.module import MegatronModule


class SDPACoreAttention(MegatronModule):
    """Drop-in ``core_attention`` for megatron's ``SelfAttention`` (GQA via SDPA's enable_gqa)."""

    def __init__(self, config, layer_number: int, attn_mask_type, attention_type: str = "self",
                 attention_dropout: Optional[float] = None, softmax_scale: Optional[float] = None,
                 cp_comm_type: Optional[str] = None, pg_collection=None):
        super().__init__(config=config)
        self.layer_number = layer_number
        self.attn_mask_type = attn_mask_type
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout
        head_dim = config.kv_channels
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        """[sq, b, np, hn] x [sk, b, ng, hn] → [sq, b, np*hn]."""
        if packed_seq_params is not None:
            raise NotImplementedError("packed (THD) sequences are not supported by the SDPA backend")
        q = query.permute(1, 2, 0, 3)  # [b, np, sq, hn]
        k = key.permute(1, 2, 0, 3)
        v = value.permute(1, 2, 0, 3)
        allowed = None
        if attention_mask is not None:
            allowed = ~attention_mask.to(torch.bool)
        if attention_bias is not None:
            # Additive bias route (what TE/cuDNN call post_scale_bias): fold the mask into it.
            bias = attention_bias.to(q.dtype)
            allowed = bias if allowed is None else bias.masked_fill(~allowed, float("-inf"))
        dropout = self.dropout_p if self.training else 0.0
        kwargs = dict(attn_mask=allowed, dropout_p=dropout, is_causal=allowed is None,
                      scale=self.softmax_scale, enable_gqa=k.shape[1] != q.shape[1])
        if dropout > 0.0:
            # Different heads live on different TP ranks: draw dropout from the TP-aware stream.
            with tensor_parallel.get_cuda_rng_tracker().fork():
                out = F.scaled_dot_product_attention(q, k, v, **kwargs)
        else:
            out = F.scaled_dot_product_attention(q, k, v, **kwargs)
        sq, b = out.shape[2], out.shape[0]
        return out.permute(2, 0, 1, 3).reshape(sq, b, -1)
