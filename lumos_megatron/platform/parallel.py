"""Parallel layout: validate TP/PP/VPP/CP/DP against the world size, then set up megatron's groups.

This module is the project's only caller of ``parallel_state.initialize_model_parallel``; the rest
of the code asks it for ranks and sizes so that the move to explicit process-group collections
(megatron-core ≥0.19) is one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lumos_megatron.config.schema import LumosConfig


class LayoutError(ValueError):
    """A parallel layout that cannot be realised with the processes at hand."""


@dataclass(frozen=True)
class ParallelLayout:
    """Resolved sizes; ``dp`` is derived as world / (TP x PP x CP)."""

    tp: int
    pp: int
    cp: int
    dp: int
    vpp: Optional[int]
    world_size: int

    @property
    def num_microbatches_divisor(self) -> int:
        """Micro-batches per step must be a multiple of this (interleaved 1F1B needs PP)."""
        return self.pp if self.vpp else 1


def resolve_layout(cfg: LumosConfig, world_size: int) -> ParallelLayout:
    """Check that the configured sizes fit ``world_size`` processes and the batch; raise one line."""
    p, t = cfg.parallel, cfg.train
    tp, pp, cp = p.tensor_model_parallel_size, p.pipeline_model_parallel_size, p.context_parallel_size
    sizes = f"TP={tp} x PP={pp} x CP={cp}"
    if min(tp, pp, cp) < 1:
        raise LayoutError(f"impossible parallel layout: {sizes}; every size must be >= 1")
    model_ranks = tp * pp * cp
    if world_size % model_ranks:
        raise LayoutError(
            f"impossible parallel layout: {sizes} = {model_ranks} ranks does not divide the world "
            f"size {world_size}"
        )
    dp = world_size // model_ranks
    per_step = t.micro_batch_size * dp
    if t.global_batch_size % per_step:
        raise LayoutError(
            f"impossible batch layout: global batch {t.global_batch_size} is not a multiple of "
            f"micro batch {t.micro_batch_size} x DP={dp} ({sizes}, world size {world_size})"
        )
    layout = ParallelLayout(tp=tp, pp=pp, cp=cp, dp=dp, vpp=p.virtual_pipeline_model_parallel_size,
                            world_size=world_size)
    micro = t.global_batch_size // per_step
    if micro % layout.num_microbatches_divisor:
        raise LayoutError(
            f"impossible schedule: {micro} micro-batches per step is not a multiple of PP={pp}, "
            f"which the interleaved (VPP={layout.vpp}) schedule needs"
        )
    return layout


def num_microbatches(cfg: LumosConfig, layout: ParallelLayout) -> int:
    """Gradient-accumulation micro-batches per optimizer step on each DP rank."""
    return cfg.train.global_batch_size // (cfg.train.micro_batch_size * layout.dp)


def initialize_parallel_state(cfg: LumosConfig, layout: ParallelLayout, timeout_minutes: int = 30) -> None:
    """Create megatron's TP/PP/CP/DP groups (torch.distributed must be initialised)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp,
        virtual_pipeline_model_parallel_size=layout.vpp,
        context_parallel_size=layout.cp,
        distributed_timeout_minutes=timeout_minutes,
    )


def seed_model_parallel_rng(seed: int) -> None:
    """Seed the default generator and megatron's model-parallel RNG tracker streams."""
    import random

    import numpy as np
    import torch
    from megatron.core import tensor_parallel

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def ranks() -> dict:
    """This process's coordinates in every parallel dimension (for logging and data sharding)."""
    from megatron.core import parallel_state as ps

    return {
        "tp": ps.get_tensor_model_parallel_rank(),
        "pp": ps.get_pipeline_model_parallel_rank(),
        "cp": ps.get_context_parallel_rank(),
        "dp": ps.get_data_parallel_rank(),
        "dp_size": ps.get_data_parallel_world_size(),
    }


def is_last_rank() -> bool:
    """True on the global last rank, where megatron logs (last PP stage holds the loss)."""
    import torch.distributed as dist

    return dist.get_rank() == dist.get_world_size() - 1
