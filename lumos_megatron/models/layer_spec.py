"""Our megatron-core layer spec and TransformerConfig for the Lumos decoder.

The stock local spec ties the QK-norm type to the block norm (RMSNorm), uses megatron's
``DotProductAttention`` and a ``WrappedTorchNorm`` that refuses sequence parallelism; the
official model needs RMSNorm blocks with a LayerNorm(+bias) QK-norm shared across heads and an
arbitrary (frame-causal) mask. So we own the ``ModuleSpec`` construction here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import (
    TransformerBlockSubmodules,
    get_num_layers_to_build,
)
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

from lumos_megatron.config.schema import LumosConfig, head_dim
from lumos_megatron.models.attention.backends import attention_backend
from lumos_megatron.models.inputs import compute_dtype
from lumos_megatron.models.norms import HeadSharedLayerNorm, RMSNorm
from lumos_megatron.models.recompute import (
    RecomputedTransformerLayer,
    layers_to_recompute,
    recomputed_core_attention,
)

@dataclass
class LumosTransformerConfig(TransformerConfig):
    """megatron ``TransformerConfig`` plus the Lumos fields our modules read."""

    qk_layernorm_epsilon: float = 1e-5
    """Epsilon of the head-shared QK LayerNorm (official: 1e-5 regardless of rms_norm_eps)."""


def build_transformer_config(cfg: LumosConfig) -> LumosTransformerConfig:
    """Translate our run config into megatron's TransformerConfig (the only place that does)."""
    m, p = cfg.model, cfg.parallel
    bf16 = compute_dtype(cfg) == torch.bfloat16
    return LumosTransformerConfig(
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        ffn_hidden_size=m.ffn_hidden_size,
        num_attention_heads=m.num_attention_heads,
        num_query_groups=m.num_query_groups or m.num_attention_heads,
        kv_channels=head_dim(cfg),
        normalization="RMSNorm",
        layernorm_epsilon=m.norm_epsilon,
        qk_layernorm=m.qk_layernorm,
        qk_layernorm_epsilon=m.qk_layernorm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=m.add_bias_linear,
        attention_dropout=m.attention_dropout,
        hidden_dropout=m.hidden_dropout,
        init_method_std=m.init_method_std,
        tensor_model_parallel_size=p.tensor_model_parallel_size,
        pipeline_model_parallel_size=p.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=p.virtual_pipeline_model_parallel_size,
        context_parallel_size=p.context_parallel_size,
        sequence_parallel=p.sequence_parallel,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        # Token-mean over the global batch (official CE is a mean over all loss tokens).
        calculate_per_token_loss=True,
        # Weights are initialised by lumos_megatron.models.init (layout-independent), not megatron.
        use_cpu_initialization=True,
        perform_initialization=False,
        # Fusions need CUDA kernels and do not take per-sample MM-RoPE angles.
        apply_rope_fusion=False,
        masked_softmax_fusion=False,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
    )


def lumos_layer_spec(cfg: LumosConfig, recompute_layer: bool = False) -> ModuleSpec:
    """One Lumos decoder layer: pre-norm RMSNorm, GQA attention with head-shared QK LayerNorm and
    our core attention (arbitrary mask), SwiGLU MLP.

    ``recompute_layer``: the whole layer is recomputed in backward (full recompute);
    ``model.recompute_granularity='selective'`` recomputes the core attention of every layer.
    """
    qk_norm = HeadSharedLayerNorm if cfg.model.qk_layernorm else IdentityOp
    # The backend's core attention (its context-parallel variant under CP; a backend without one
    # is rejected by config validation, and raises here, rather than being swapped silently).
    core_attention = attention_backend(cfg.model.attention_backend).core_attention_module(
        context_parallel=cfg.parallel.context_parallel_size > 1)
    if cfg.model.recompute_granularity == "selective":
        core_attention = recomputed_core_attention(core_attention)
    return ModuleSpec(
        module=RecomputedTransformerLayer if recompute_layer else TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=RMSNorm,
            self_attention=ModuleSpec(
                module=SelfAttention,
                # 'arbitrary': the mask is ours; megatron must not substitute a causal one.
                params={"attn_mask_type": AttnMaskType.arbitrary},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=ColumnParallelLinear,
                    core_attention=core_attention,
                    linear_proj=RowParallelLinear,
                    q_layernorm=qk_norm,
                    k_layernorm=qk_norm,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=RMSNorm,
            mlp=ModuleSpec(
                module=MLP,
                submodules=MLPSubmodules(linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear),
            ),
            mlp_bda=get_bias_dropout_add,
        ),
    )


def lumos_block_spec(cfg: LumosConfig, transformer_config: TransformerConfig,
                     vp_stage=None) -> TransformerBlockSubmodules:
    """Decoder block of this pipeline stage (and virtual stage): its share of the Lumos layers
    (the first ``model.recompute_num_layers`` of them fully recomputed under 'full' recompute) and
    the final RMSNorm (SP-capable; megatron builds it on the last stage only)."""
    n = get_num_layers_to_build(transformer_config, vp_stage=vp_stage)
    m = cfg.model
    recomputed = layers_to_recompute(m.recompute_granularity, n, m.recompute_num_layers)
    specs = [lumos_layer_spec(cfg, recompute_layer=i < recomputed) for i in range(n)]
    return TransformerBlockSubmodules(layer_specs=specs, layer_norm=RMSNorm)
