"""TransformerEngine core attention with the frame-causal mask as a ``post_scale_bias``.

TE's fused (cuDNN) and flash kernels do not take arbitrary boolean masks; only TE's unfused
backend does, and it materialises the S x S scores in Python-level ops (docs/megatron.md §2). TE's
documented route for an arbitrary mask on the fused path is to turn it into an additive bias
applied after the softmax scale (``core_attention_bias_type="post_scale_bias"``): 0 where a pair
may attend, a very negative number where it may not, with no TE mask at all
(``attn_mask_type="no_mask"``). cuDNN takes a [b, 1, s, s] bias in forward; since our bias needs
no gradient, the missing dbias support for that shape does not matter.

The bias is built once per micro-batch on the data side (:func:`frame_causal_attention_bias`,
through the backend registry and ``models.inputs.build_model_inputs``) and arrives here as
``attention_mask``. It costs
``b x s x s`` elements of the compute dtype (1.6 GB per sample at 28k tokens in bf16), which is
why FlexAttention is the default GPU route and this one the TE alternative.

TransformerEngine is optional (``pip install -e '.[te]'``) and CUDA-only: it is imported when the
module is built, never at import time of this file, and its absence is a :class:`ConfigError`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from megatron.core import tensor_parallel
from megatron.core.transformer.module import MegatronModule

from lumos_megatron.config.recipe import ConfigError
from lumos_megatron.models.attention.te_availability import transformer_engine_problem
from lumos_megatron.models.frame_mask import mask_from_segment_ids

__all__ = ["TEBiasCoreAttention", "frame_causal_attention_bias", "import_transformer_engine"]


def import_transformer_engine():
    """``transformer_engine.pytorch``, or a one-line :class:`ConfigError` saying what to install."""
    problem = transformer_engine_problem()
    if problem:
        raise ConfigError(problem)
    import transformer_engine.pytorch as te_pytorch

    return te_pytorch


def masked_bias_value(dtype: torch.dtype) -> float:
    """The additive value of a masked-out pair: the most negative finite number of ``dtype``.

    Finite rather than -inf so that ``score + bias`` stays finite in every kernel (every row keeps
    its diagonal, so no row is fully masked and the softmax weight of masked pairs is exactly 0).
    """
    return torch.finfo(dtype).min


def frame_causal_attention_bias(segment_ids: torch.Tensor, dtype: torch.dtype = torch.float32,
                                document_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Additive frame-causal bias [B, 1, L, L] from segment ids [B, L] (and, for packed rows,
    document ids): 0 allowed, finfo.min masked."""
    allowed = mask_from_segment_ids(segment_ids, document_ids).unsqueeze(1)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return bias.masked_fill_(~allowed, masked_bias_value(dtype))


class TEBiasCoreAttention(MegatronModule):
    """Megatron ``core_attention`` running TE's ``DotProductAttention`` with a post-scale bias.

    Same constructor and forward signature as ``SDPACoreAttention``. What ``attention_mask``
    may be:

    * a floating tensor [b, 1, s, s]: the additive bias itself (what the batch carries);
    * a bool tensor (megatron's convention, True = masked out): turned into a bias here, per
      layer — a fallback for callers that did not build the bias on the data side;
    * ``None``: plain causal attention (TE's own causal mask, no bias).

    megatron's ``attention_bias`` (``extra_block_kwargs={'attention_bias': ...}``) is accepted
    as the bias when no mask is given. Packed (THD) sequences and context parallelism are not
    supported by this backend.
    """

    def __init__(self, config, layer_number: int, attn_mask_type, attention_type: str = "self",
                 attention_dropout: Optional[float] = None, softmax_scale: Optional[float] = None,
                 cp_comm_type: Optional[str] = None, pg_collection=None):
        super().__init__(config=config)
        te_pytorch = import_transformer_engine()
        self.layer_number = layer_number
        self.attn_mask_type = attn_mask_type
        tp = config.tensor_model_parallel_size
        dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        self.softmax_scale = (softmax_scale if softmax_scale is not None
                              else 1.0 / math.sqrt(config.kv_channels))
        # Heads are already split by megatron's TP linears, so TE sees this rank's heads with
        # tp_size=1; dropout still draws from megatron's TP-aware RNG stream (heads differ per rank).
        self.te_attention = te_pytorch.DotProductAttention(
            num_attention_heads=config.num_attention_heads // tp,
            kv_channels=config.kv_channels,
            num_gqa_groups=(config.num_query_groups or config.num_attention_heads) // tp,
            attention_dropout=dropout,
            qkv_format="sbhd",
            attn_mask_type="no_mask",
            tp_size=1,
            get_rng_state_tracker=tensor_parallel.get_cuda_rng_tracker if dropout > 0 else None,
            layer_number=layer_number,
            attention_type=attention_type,
            softmax_scale=self.softmax_scale,
        )

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        """[sq, b, np, hn] x [sk, b, ng, hn] → [sq, b, np*hn]."""
        if packed_seq_params is not None:
            raise NotImplementedError("packed (THD) sequences are not supported by the te_bias "
                                      "backend")
        if attention_mask is not None and attention_bias is not None:
            raise NotImplementedError("te_bias takes the frame-causal bias either as "
                                      "attention_mask or as attention_bias, not both")
        bias = attention_mask if attention_mask is not None else attention_bias
        if bias is None:
            return self.te_attention(query, key, value, qkv_format="sbhd", attn_mask_type="causal")
        if bias.dtype == torch.bool:
            bias = torch.zeros(bias.shape, dtype=query.dtype, device=bias.device).masked_fill_(
                bias, masked_bias_value(query.dtype))
        elif bias.dtype != query.dtype:
            # cuDNN wants the bias in the compute dtype; a float32 finfo.min would overflow to
            # -inf in bf16, so clamp back to the finite minimum after the cast.
            bias = bias.to(query.dtype).clamp_min_(masked_bias_value(query.dtype))
        return self.te_attention(
            query, key, value,
            qkv_format="sbhd",
            attn_mask_type="no_mask",
            core_attention_bias_type="post_scale_bias",
            core_attention_bias=bias,
        )
