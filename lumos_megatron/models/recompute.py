"""Activation recompute: full (whole decoder layers) and selective (core attention only).

The official recipe recomputes every decoder layer with *non-reentrant* activation checkpointing.
We do the same with ``torch.utils.checkpoint(use_reentrant=False)`` rather than megatron's
``recompute_granularity``: megatron's reentrant ``CheckpointFunction`` passes every argument
through ``save_for_backward``, which only takes tensors, so the FlexAttention ``BlockMask`` (a
Python object) cannot go through it. Non-reentrant checkpointing captures arguments as they are.

Dropout needs the same random numbers in the recomputation as in the forward. torch's checkpoint
restores the default CPU/CUDA generators; megatron's tensor-parallel RNG tracker (the TP-aware
dropout streams) is restored here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch
from megatron.core import tensor_parallel
from megatron.core.transformer.transformer_layer import TransformerLayer
from torch.utils.checkpoint import checkpoint


def _tracker_replaying(fn: Callable) -> Callable:
    """``fn`` wrapped so that its second call (the recomputation in backward) runs with the TP RNG
    tracker states its first call (the forward) saw, and leaves the tracker as it found it."""
    tracker = tensor_parallel.get_cuda_rng_tracker()
    saved = []

    def run(*args, **kwargs):
        if not saved:
            saved.append(tracker.get_states())
            return fn(*args, **kwargs)
        current = tracker.get_states()
        tracker.set_states(saved[0])
        try:
            return fn(*args, **kwargs)
        finally:
            tracker.set_states(current)

    return run


def recomputed_call(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` whose activations are dropped and recomputed in backward."""
    return checkpoint(_tracker_replaying(fn), *args, use_reentrant=False, **kwargs)


def _recomputing(module: torch.nn.Module) -> bool:
    # Inference (no grad) and evaluation have nothing to save: run plainly.
    return module.training and torch.is_grad_enabled()


class RecomputedTransformerLayer(TransformerLayer):
    """megatron ``TransformerLayer`` whose whole forward is recomputed in backward ('full')."""

    def forward(self, *args, **kwargs):
        """As ``TransformerLayer.forward``; activations kept only at the layer boundary."""
        if not _recomputing(self):
            return super().forward(*args, **kwargs)
        return recomputed_call(super().forward, *args, **kwargs)


class _RecomputedCoreAttention:
    """Mixin: the core attention (softmax(QK^T)V, the activation that grows with s^2 in the
    SDPA math path) recomputed in backward ('selective')."""

    def forward(self, *args, **kwargs):
        if not _recomputing(self):
            return super().forward(*args, **kwargs)
        return recomputed_call(super().forward, *args, **kwargs)


@lru_cache(maxsize=None)
def recomputed_core_attention(core_attention_cls: type) -> type:
    """The selective-recompute variant of a core-attention class (one class per backend)."""
    return type(f"Recomputed{core_attention_cls.__name__}", (_RecomputedCoreAttention, core_attention_cls),
                {"__doc__": f"{core_attention_cls.__name__} recomputed in backward (selective recompute)."})


def layers_to_recompute(granularity: str | None, num_layers: int, recompute_num_layers: int | None) -> int:
    """How many of a model chunk's ``num_layers`` layers (the first ones) get full recompute."""
    if granularity != "full":
        return 0
    if recompute_num_layers is None:
        return num_layers
    return min(num_layers, recompute_num_layers)
