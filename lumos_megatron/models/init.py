"""Layout-independent weight initialisation.

megatron initialises each TP shard from its own RNG stream and each pipeline stage from its own
seed, so the same recipe gives different weights at TP=2 or PP=2 than at TP=1. We instead draw
every *full* (unsharded) tensor from a generator keyed by (seed, global parameter name) and keep
this rank's shard: any TP/PP/VPP layout starts from bit-identical weights, which is what makes
"TP=2 equals TP=1" an exact test and lets a run be re-launched on another layout reproducibly.
Init follows the official (HF Chameleon) scheme: normal(0, std) for every matrix and embedding,
ones for norm weights, zeros for biases.
"""

from __future__ import annotations

import re
import zlib

import torch
from torch import nn

_LAYER_RE = re.compile(r"(^|\.)decoder\.layers\.(\d+)\.")


def global_parameter_names(model: nn.Module) -> dict:
    """Map local parameter names to layout-independent names (global layer numbers)."""
    offsets = {}
    decoder = getattr(model, "decoder", None)
    if decoder is not None:
        for i, layer in enumerate(decoder.layers):
            offsets[i] = layer.layer_number - 1  # megatron's layer_number is global and 1-based
    out = {}
    for name, _ in model.named_parameters():
        out[name] = _LAYER_RE.sub(lambda m: f"{m.group(1)}decoder.layers.{offsets.get(int(m.group(2)), int(m.group(2)))}.", name)
    return out


def _full_shape(param: torch.Tensor, tp: int) -> list:
    shape = list(param.shape)
    if getattr(param, "tensor_model_parallel", False):
        shape[param.partition_dim] *= tp
    return shape


def _shard(full: torch.Tensor, param: torch.Tensor, tp: int, tp_rank: int, glu: bool) -> torch.Tensor:
    if not getattr(param, "tensor_model_parallel", False):
        return full
    dim = param.partition_dim
    if glu:
        # SwiGLU fc1 holds [gate; up]; each TP rank owns the same slice of both halves, which is
        # also how megatron's sharded checkpoints describe it (swiglu sharded factory).
        gate, up = full.chunk(2, dim=dim)
        return torch.cat([gate.chunk(tp, dim=dim)[tp_rank], up.chunk(tp, dim=dim)[tp_rank]], dim=dim)
    return full.chunk(tp, dim=dim)[tp_rank]


def mark_tensor_parallel_params(model: nn.Module) -> None:
    """Set megatron's ``tensor_model_parallel``/``partition_dim`` attributes on sharded params.

    megatron only sets them inside its own initialisers, which ``perform_initialization=False``
    skips; they drive the TP-aware grad norm (duplicates counted once) and our sharding below.
    """
    from megatron.core.tensor_parallel import (
        ColumnParallelLinear,
        RowParallelLinear,
        VocabParallelEmbedding,
    )
    from megatron.core.tensor_parallel.layers import set_tensor_model_parallel_attributes

    for module in model.modules():
        if isinstance(module, (ColumnParallelLinear, VocabParallelEmbedding)):
            dims = {"weight": 0, "bias": 0}
        elif isinstance(module, RowParallelLinear):
            dims = {"weight": 1}  # a row-parallel bias is added after the reduce: replicated
        else:
            continue
        for pname, dim in dims.items():
            param = getattr(module, pname, None)
            # megatron marks a column-parallel bias itself, whatever perform_initialization says
            if isinstance(param, torch.Tensor) and not hasattr(param, "tensor_model_parallel"):
                set_tensor_model_parallel_attributes(param, True, dim, 1)


@torch.no_grad()
def initialize_lumos_weights(model: nn.Module, seed: int, std: float, tp: int = 1, tp_rank: int = 0,
                             gated_linear_unit: bool = True) -> None:
    """Initialise ``model`` (one pipeline/virtual stage of a LumosModel) in place."""
    mark_tensor_parallel_params(model)
    names = global_parameter_names(model)
    for local_name, param in model.named_parameters():
        name = names[local_name]
        key = zlib.crc32(f"{seed}:{name}".encode())
        gen = torch.Generator(device="cpu").manual_seed(key)
        shape = _full_shape(param, tp)
        if name.endswith("bias"):
            full = torch.zeros(shape)
        elif param.dim() == 1:
            full = torch.ones(shape)  # norm weights
        else:
            full = torch.empty(shape).normal_(0.0, std, generator=gen)
        glu = gated_linear_unit and name.endswith("mlp.linear_fc1.weight")
        param.copy_(_shard(full, param, tp, tp_rank, glu).to(param.dtype))
