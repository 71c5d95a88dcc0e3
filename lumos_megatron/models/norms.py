"""Normalisation layers of the Lumos decoder (Chameleon semantics), usable under TP and SP.

megatron-core's local spec wraps ``torch.nn.RMSNorm`` in ``WrappedTorchNorm``, which refuses
sequence parallelism (torch_norm.py:32). These modules accept megatron's build arguments
``(config, hidden_size, eps)`` and mark their parameters so that ``finalize_model_grads``
all-reduces them across TP ranks where each rank only saw part of the activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """``w * x / sqrt(mean(x^2) + eps)`` with the statistics in fp32, as Chameleon's RMSNorm.

    The normalised activations are cast back to the input dtype *before* the weight multiply,
    matching the official order of operations in bf16.
    """

    def __init__(self, config, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        # Under SP each TP rank normalises a slice of the sequence, so its weight gradient is
        # partial: megatron sums params flagged this way across the TP group.
        setattr(self.weight, "sequence_parallel", bool(config.sequence_parallel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class HeadSharedLayerNorm(nn.Module):
    """QK-norm of Lumos-1: LayerNorm with bias over head_dim, one (gamma, beta) for all heads.

    Built by megatron's ``SelfAttention`` with ``hidden_size = head_dim``; applied to
    ``[s, b, heads, head_dim]``. The epsilon is the model's ``qk_layernorm_epsilon`` (1e-5, hard
    coded in the official model) rather than the block-norm epsilon megatron passes in.
    Megatron sums q/k-layernorm grads across TP (``config.qk_layernorm``), since each TP rank only
    holds some of the heads that share these parameters.
    """

    def __init__(self, config, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.eps = getattr(config, "qk_layernorm_epsilon", eps)
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        self.bias = nn.Parameter(torch.zeros(hidden_size, dtype=config.params_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
