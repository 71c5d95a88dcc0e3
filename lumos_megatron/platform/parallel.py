"""Parallel layout: validate TP/PP/VPP/CP/DP against the world size, then set up megatron's groups.

This module is the project's only caller of ``parallel_state.initialize_model_parallel``; the rest
of the code asks it for ranks and sizes so that the move to explicit process-group collections
(megatron-core ≥0.19) is one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from lumos_megatron.config.schema import LumosConfig, ParallelConfig


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


def microbatches_per_step(global_batch_size: int, micro_batch_size: int, dp: int, group: int = 1,
                          what: str = "impossible batch layout") -> int:
    """Gradient-accumulation micro-batches per optimizer step on each DP rank: the one rule for
    how a global batch splits. It must be a whole multiple of ``micro_batch_size x dp``, and of
    ``group`` micro-batches (interleaved 1F1B runs them in groups of PP). Raises
    :class:`LayoutError` starting with ``what`` otherwise."""
    if global_batch_size % (micro_batch_size * dp):
        raise LayoutError(f"{what}: global batch {global_batch_size} is not a multiple of micro batch "
                          f"{micro_batch_size} x DP={dp}")
    micro = global_batch_size // (micro_batch_size * dp)
    if micro % group:
        raise LayoutError(f"{what}: {micro} micro-batches per step is not a multiple of PP={group}, "
                          "which the interleaved (VPP) schedule needs")
    return micro


def microbatch_group(p: ParallelConfig) -> int:
    """Micro-batches per step must be a multiple of this (interleaved 1F1B needs PP)."""
    return p.pipeline_model_parallel_size if p.virtual_pipeline_model_parallel_size else 1


def sequence_length_divisor(p: ParallelConfig) -> Tuple[int, str]:
    """(what every padded sequence length must be a multiple of, why): sequence parallelism splits
    it over TP, load-balanced context parallelism into 2 x CP chunks."""
    divisor, why = 1, []
    if p.sequence_parallel:
        divisor *= p.tensor_model_parallel_size
        why.append(f"TP={p.tensor_model_parallel_size} (sequence parallel)")
    if p.context_parallel_size > 1:
        divisor *= 2 * p.context_parallel_size
        # Name the configured CP (not 2 x CP): the user looks for that value in the config.
        why.append(f"2 x CP (CP={p.context_parallel_size}, load-balanced context parallel)")
    return divisor, " x ".join(why)


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
    try:
        microbatches_per_step(t.global_batch_size, t.micro_batch_size, dp, microbatch_group(p))
    except LayoutError as err:
        raise LayoutError(f"{err} ({sizes}, world size {world_size})") from None
    return ParallelLayout(tp=tp, pp=pp, cp=cp, dp=dp, vpp=p.virtual_pipeline_model_parallel_size,
                          world_size=world_size)


def num_microbatches(cfg: LumosConfig, layout: ParallelLayout) -> int:
    """Gradient-accumulation micro-batches per optimizer step on each DP rank."""
    return microbatches_per_step(cfg.train.global_batch_size, cfg.train.micro_batch_size, layout.dp)


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


def sample_broadcast_group():
    """(group, source global rank) over which this rank's micro-batch samples are shared, or None.

    Megatron's convention: one rank of each tensor(+context)-parallel group reads the data and
    broadcasts it, since every rank of the group trains on the same samples. Used for sources
    whose reads are expensive (streaming decodes and tokenizes video per read).
    """
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    if ps.get_tensor_model_parallel_world_size() * ps.get_context_parallel_world_size() == 1:
        return None
    group = ps.get_tensor_and_context_parallel_group()
    return group, dist.get_process_group_ranks(group)[0]


def is_last_rank() -> bool:
    """True on the global last rank, where megatron logs (last PP stage holds the loss)."""
    import torch.distributed as dist

    return dist.get_rank() == dist.get_world_size() - 1
