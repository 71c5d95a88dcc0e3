"""Tensor-by-tensor mapping between the official layout and megatron-core's.

Official (Hugging Face, Chameleon) keys, per layer ``N``::

    model.layers.N.self_attn.{q,k,v,o}_proj.weight
    model.layers.N.self_attn.{q_norm,k_norm}.{weight,bias}     # [model_parallel_size, head_dim]
    model.layers.N.mlp.{gate,up,down}_proj.weight
    model.layers.N.{input_layernorm,post_attention_layernorm}.weight
  plus model.embed_tokens.weight, model.norm.weight, lm_head.weight (model.vqmodel.* is ignored)

Megatron-core keys of our decoder, as its sharded state dict names them: the layers are stacked
along a leading axis of size ``num_layers`` (``decoder.layers.self_attention.linear_qkv.weight``
is ``[num_layers, (heads + 2 groups) * d, hidden]``), and those global tensors are what every
TP/PP layout shards on load, so a converter only ever deals with whole, unsharded tensors:

* ``linear_qkv`` holds, for each query group in turn, that group's query heads, then its key
  head, then its value head (megatron's GQA layout, which TP splits by contiguous groups);
* ``linear_fc1`` is ``[gate; up]`` (SwiGLU);
* the QK-norm is one (gamma, beta) shared by all heads: an official ``[model_parallel_size, d]``
  parameter converts exactly only when its rows are equal (each row is repeated over its shard's
  heads, docs/method.md §6.1), and is refused otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch

from lumos_megatron.config.schema import ModelConfig
from lumos_megatron.conversion.errors import ConversionError
from lumos_megatron.models.parameter_counts import Shape, layer_parameter_shapes

EMBEDDING = "embedding.word_embeddings.weight"
FINAL_NORM = "decoder.final_layernorm.weight"
OUTPUT_LAYER = "output_layer.weight"
LAYERS = "decoder.layers."
LINEAR_MODULES = ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1",
                  "mlp.linear_fc2")
"""Layer modules whose (empty, for the local spec) ``_extra_state`` megatron checkpoints carry."""

HF_EMBEDDING = "model.embed_tokens.weight"
HF_FINAL_NORM = "model.norm.weight"
HF_OUTPUT_LAYER = "lm_head.weight"
HF_IGNORED_PREFIX = "model.vqmodel."
"""The VQ-GAN image tokenizer bundled with Chameleon checkpoints: not part of the decoder."""

def hf_layer_key(layer: int, name: str) -> str:
    """Official key of parameter ``name`` (e.g. ``self_attn.q_proj.weight``) of layer ``layer``."""
    return f"model.layers.{layer}.{name}"


@dataclass(frozen=True)
class DecoderShapes:
    """The sizes that fix every tensor shape of the decoder."""

    num_layers: int
    hidden: int
    ffn: int
    heads: int
    groups: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, model: ModelConfig) -> "DecoderShapes":
        """Shapes of a model with our ``ModelConfig``."""
        heads = model.num_attention_heads
        return cls(num_layers=model.num_layers, hidden=model.hidden_size, ffn=model.ffn_hidden_size,
                   heads=heads, groups=model.num_query_groups or heads,
                   head_dim=model.kv_channels or model.hidden_size // heads, vocab=model.vocab_size)

    @property
    def qkv_rows(self) -> int:
        """Rows of megatron's fused QKV weight."""
        return (self.heads + 2 * self.groups) * self.head_dim

    def megatron_layer_shapes(self) -> Dict[str, Shape]:
        """Per-layer megatron parameters (names under ``decoder.layers.``) and their shapes
        (``models.parameter_counts``; the official layout always has the q/k LayerNorm)."""
        return layer_parameter_shapes(self.hidden, self.ffn, self.heads, self.groups, self.head_dim)

    def hf_layer_shapes(self, qk_norm_rows: int) -> Dict[str, Shape]:
        """Per-layer official parameters (names after ``model.layers.N.``) and their shapes."""
        h, d = self.hidden, self.head_dim
        return {
            "self_attn.q_proj.weight": (self.heads * d, h),
            "self_attn.k_proj.weight": (self.groups * d, h),
            "self_attn.v_proj.weight": (self.groups * d, h),
            "self_attn.o_proj.weight": (h, self.heads * d),
            "self_attn.q_norm.weight": (qk_norm_rows, d),
            "self_attn.q_norm.bias": (qk_norm_rows, d),
            "self_attn.k_norm.weight": (qk_norm_rows, d),
            "self_attn.k_norm.bias": (qk_norm_rows, d),
            "mlp.gate_proj.weight": (self.ffn, h),
            "mlp.up_proj.weight": (self.ffn, h),
            "mlp.down_proj.weight": (h, self.ffn),
            "input_layernorm.weight": (h,),
            "post_attention_layernorm.weight": (h,),
        }

    def hf_shapes(self, qk_norm_rows: int, vocab: int) -> Dict[str, Shape]:
        """Every official decoder key and its shape (``vocab`` rows in embedding and head)."""
        shapes: Dict[str, Shape] = {HF_EMBEDDING: (vocab, self.hidden)}
        for layer in range(self.num_layers):
            for name, shape in self.hf_layer_shapes(qk_norm_rows).items():
                shapes[hf_layer_key(layer, name)] = shape
        shapes[HF_FINAL_NORM] = (self.hidden,)
        shapes[HF_OUTPUT_LAYER] = (vocab, self.hidden)
        return shapes


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: DecoderShapes) -> torch.Tensor:
    """Official q/k/v projections → megatron's fused weight, grouped per query group."""
    per_group = s.heads // s.groups
    q = q.reshape(s.groups, per_group * s.head_dim, s.hidden)
    k = k.reshape(s.groups, s.head_dim, s.hidden)
    v = v.reshape(s.groups, s.head_dim, s.hidden)
    return torch.cat([q, k, v], dim=1).reshape(s.qkv_rows, s.hidden)


def split_qkv(qkv: torch.Tensor, s: DecoderShapes) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`fuse_qkv`."""
    per_group = s.heads // s.groups
    grouped = qkv.reshape(s.groups, (per_group + 2) * s.head_dim, s.hidden)
    q, k, v = grouped.split([per_group * s.head_dim, s.head_dim, s.head_dim], dim=1)
    return (q.reshape(s.heads * s.head_dim, s.hidden).contiguous(),
            k.reshape(s.groups * s.head_dim, s.hidden).contiguous(),
            v.reshape(s.groups * s.head_dim, s.hidden).contiguous())


def shared_qk_norm_row(rows: torch.Tensor, key: str) -> torch.Tensor:
    """The one QK-norm row of an official ``[model_parallel_size, d]`` parameter.

    Exact when the model was trained without model parallelism (one row) or its rows are equal;
    distinct rows would need a per-shard norm the Lumos decoder does not have, so they are refused.
    """
    if rows.shape[0] > 1 and not all(torch.equal(rows[0], rows[i]) for i in range(1, rows.shape[0])):
        raise ConversionError(
            f"{key}: its {rows.shape[0]} rows (model_parallel_size={rows.shape[0]}) differ, and the Lumos "
            "decoder shares one QK-norm across all heads; this checkpoint cannot be converted exactly")
    return rows[0].clone()


def hf_layer_to_megatron(read: Callable[[str], torch.Tensor], layer: int,
                         s: DecoderShapes) -> Dict[str, torch.Tensor]:
    """The megatron tensors of layer ``layer``; ``read(official key)`` returns a whole tensor."""
    def get(name: str) -> torch.Tensor:
        return read(hf_layer_key(layer, name))

    out = {
        "input_layernorm.weight": get("input_layernorm.weight"),
        "self_attention.linear_qkv.weight": fuse_qkv(get("self_attn.q_proj.weight"),
                                                     get("self_attn.k_proj.weight"),
                                                     get("self_attn.v_proj.weight"), s),
        "self_attention.linear_proj.weight": get("self_attn.o_proj.weight"),
        "pre_mlp_layernorm.weight": get("post_attention_layernorm.weight"),
        "mlp.linear_fc1.weight": torch.cat([get("mlp.gate_proj.weight"), get("mlp.up_proj.weight")], dim=0),
        "mlp.linear_fc2.weight": get("mlp.down_proj.weight"),
    }
    for ours, theirs in (("q_layernorm", "q_norm"), ("k_layernorm", "k_norm")):
        for part in ("weight", "bias"):
            key = f"self_attn.{theirs}.{part}"
            out[f"self_attention.{ours}.{part}"] = shared_qk_norm_row(get(key), hf_layer_key(layer, key))
    return out


def megatron_layer_to_hf(read: Callable[[str], torch.Tensor], layer: int,
                         s: DecoderShapes) -> Dict[str, torch.Tensor]:
    """The official tensors of layer ``layer``; ``read(megatron layer name)`` returns that
    layer's whole tensor. The QK-norm is written with ``model_parallel_size = 1``."""
    q, k, v = split_qkv(read("self_attention.linear_qkv.weight"), s)
    gate, up = read("mlp.linear_fc1.weight").chunk(2, dim=0)
    tensors = {
        "self_attn.q_proj.weight": q,
        "self_attn.k_proj.weight": k,
        "self_attn.v_proj.weight": v,
        "self_attn.o_proj.weight": read("self_attention.linear_proj.weight"),
        "self_attn.q_norm.weight": read("self_attention.q_layernorm.weight").reshape(1, -1),
        "self_attn.q_norm.bias": read("self_attention.q_layernorm.bias").reshape(1, -1),
        "self_attn.k_norm.weight": read("self_attention.k_layernorm.weight").reshape(1, -1),
        "self_attn.k_norm.bias": read("self_attention.k_layernorm.bias").reshape(1, -1),
        "mlp.gate_proj.weight": gate.contiguous(),
        "mlp.up_proj.weight": up.contiguous(),
        "mlp.down_proj.weight": read("mlp.linear_fc2.weight"),
        "input_layernorm.weight": read("input_layernorm.weight"),
        "post_attention_layernorm.weight": read("pre_mlp_layernorm.weight"),
    }
    return {hf_layer_key(layer, name): t for name, t in tensors.items()}


STORED_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``--dtype`` names of written tensors (import takes fp32/bf16, export also fp16)."""

CHUNK_BYTES = 64 * 2 ** 20
"""Largest block of vocabulary rows read or written at once (import and export stream the
embedding and the output layer in such blocks, so memory stays bounded)."""


def vocab_row_blocks(vocab: int, hidden: int, element_size: int) -> List[Tuple[int, int]]:
    """``[start, stop)`` row ranges of a ``[vocab, hidden]`` tensor of ``element_size``-byte
    elements, each at most ``CHUNK_BYTES`` (at least one row)."""
    rows = max(1, CHUNK_BYTES // (hidden * element_size))
    return [(start, min(start + rows, vocab)) for start in range(0, vocab, rows)]
