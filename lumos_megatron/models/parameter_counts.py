"""Parameters of a Lumos decoder, counted from the tensor shapes megatron allocates for it.

Per layer: the input RMSNorm ``h``; the fused QKV ``(heads + 2 groups) d x h`` (megatron's GQA
layout); the optional q/k LayerNorm (weight and bias of size d each, shared by all heads); the
output projection ``h x heads d``; the pre-MLP RMSNorm ``h``; SwiGLU ``fc1`` ``2f x h`` and ``fc2``
``h x f``; optional biases of the four linear layers. Then the final RMSNorm, the input embedding
and the LM head (``V x h`` each, one tensor when tied). ``non_embedding`` is everything but the
input embedding and the LM head (the scaling-law convention of Kaplan et al. 2020). Groups are
named as ``lumos-inspect`` names them: embedding, output_layer, attention, mlp, norms.

This module is the one source of the decoder's layer shapes: the checkpoint converters read
their megatron-side shapes from ``layer_parameter_shapes`` too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Tuple

from lumos_megatron.config.schema import ModelConfig

Shape = Tuple[int, ...]


def layer_parameter_shapes(hidden: int, ffn: int, heads: int, groups: int, head_dim: int,
                           qk_layernorm: bool = True, bias: bool = False) -> Dict[str, Shape]:
    """Per-layer megatron parameters (names under ``decoder.layers.``) and their shapes."""
    h, d = hidden, head_dim
    qkv_rows = (heads + 2 * groups) * d
    shapes: Dict[str, Shape] = {"input_layernorm.weight": (h,),
                                "self_attention.linear_qkv.weight": (qkv_rows, h)}
    if qk_layernorm:
        shapes.update({f"self_attention.{n}_layernorm.{p}": (d,) for n in ("q", "k") for p in ("weight", "bias")})
    shapes.update({"self_attention.linear_proj.weight": (h, heads * d), "pre_mlp_layernorm.weight": (h,),
                   "mlp.linear_fc1.weight": (2 * ffn, h), "mlp.linear_fc2.weight": (h, ffn)})
    if bias:
        shapes.update({"self_attention.linear_qkv.bias": (qkv_rows,), "self_attention.linear_proj.bias": (h,),
                       "mlp.linear_fc1.bias": (2 * ffn,), "mlp.linear_fc2.bias": (h,)})
    return shapes


def model_layer_shapes(model: ModelConfig) -> Dict[str, Shape]:
    """``layer_parameter_shapes`` of a model section (``LumosConfig.model``)."""
    heads = model.num_attention_heads
    return layer_parameter_shapes(model.hidden_size, model.ffn_hidden_size, heads,
                                  model.num_query_groups or heads, model.kv_channels or model.hidden_size // heads,
                                  qk_layernorm=model.qk_layernorm, bias=model.add_bias_linear)


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters of a Lumos decoder, by part."""

    total: int
    """Every parameter (a tied embedding/LM head counted once)."""
    embedding: int
    """Input embedding ``V x h``."""
    output_layer: int
    """LM head ``V x h`` (0 when tied to the embedding)."""
    by_group: Dict[str, int] = field(default_factory=dict)
    """embedding, output_layer, attention, mlp, norms."""

    @property
    def non_embedding(self) -> int:
        """Total minus the input embedding and the LM head."""
        return self.total - self.embedding - self.output_layer


def parameter_group(name: str) -> str:
    """Group of a megatron parameter or checkpoint key (``decoder.layers.``-prefixed, or a layer's
    own name such as ``mlp.linear_fc1.weight``): embedding, output_layer, attention, mlp or norms."""
    if name.startswith("embedding."):
        return "embedding"
    if name.startswith("output_layer."):
        return "output_layer"
    if "self_attention." in name:
        return "attention"
    if "mlp." in name:
        return "mlp"
    return "norms"


def parameter_counts(model: ModelConfig) -> ParameterCounts:
    """Parameter counts of a model section (``LumosConfig.model``), from its shapes alone."""
    groups = {"embedding": model.vocab_size * model.hidden_size,
              "output_layer": 0 if model.tie_embeddings else model.vocab_size * model.hidden_size,
              "attention": 0, "mlp": 0, "norms": model.hidden_size}  # norms: the final RMSNorm
    for name, shape in model_layer_shapes(model).items():
        groups[parameter_group(name)] += model.num_layers * math.prod(shape)
    return ParameterCounts(total=sum(groups.values()), embedding=groups["embedding"],
                           output_layer=groups["output_layer"], by_group=groups)
