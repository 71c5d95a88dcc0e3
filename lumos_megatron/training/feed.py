"""This rank's micro-batches, one optimizer step at a time.

``DataFeed.step(iteration)`` says which stream the step reads (joint training alternates image
and video steps), how long its samples are padded, how many micro-batches it has, and gives
fresh iterators over them (one per model chunk: with VPP every chunk consumes the same
micro-batches). Batches are built lazily, one micro-batch at a time, so a step never holds
all its dense attention masks at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Mapping, Optional

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.training.batch import training_batch
from lumos_megatron.training.context_parallel import slice_batch_for_cp
from lumos_megatron.training.data_plan import SampleSchedule, StepPlan, StreamBatching, step_seq_length
from lumos_megatron.vocab import LumosVocab

EVAL_ITERATION_BASE = 1 << 40
"""Evaluation batches draw their AR-DF randomness as if at iteration BASE + j: never a training
iteration, and the same at every evaluation."""


@dataclass
class StepBatches:
    """One step's micro-batches on this rank."""

    stream: StreamBatching
    seq_length: int
    num_microbatches: int
    make_iterator: Callable[[], Iterator[Dict[str, torch.Tensor]]]
    """A fresh iterator over the step's micro-batches (call once per model chunk)."""


def _seq_divisor(cfg: LumosConfig) -> int:
    """Padded lengths must split evenly for sequence parallelism and load-balanced CP."""
    p = cfg.parallel
    divisor = p.tensor_model_parallel_size if p.sequence_parallel else 1
    if p.context_parallel_size > 1:
        divisor *= 2 * p.context_parallel_size
    return divisor


class DataFeed:
    """Micro-batches of one split for this (DP, CP) rank."""

    def __init__(self, cfg: LumosConfig, vocab: LumosVocab, sources: Mapping[str, object], dp: int,
                 dp_rank: int, cp_rank: int, device: torch.device, base_iteration: int = 0,
                 base_samples: Optional[Mapping[str, int]] = None, ardf_iteration_base: int = 0):
        self.cfg, self.vocab, self.sources = cfg, vocab, sources
        self.plan = StepPlan(cfg, dp)
        self.schedule = SampleSchedule(self.plan, dp, base_iteration, dict(base_samples or {}))
        self.dp, self.dp_rank, self.cp_rank, self.device = dp, dp_rank, cp_rank, device
        self.ardf_iteration_base = ardf_iteration_base

    def step(self, iteration: int) -> StepBatches:
        """The micro-batches of (0-based) ``iteration``."""
        cfg = self.cfg
        stream = self.plan.stream_at(iteration)
        source = self.sources[stream.name]
        max_frames = cfg.ardf.max_latent_frames if cfg.ardf.enabled else None
        seq_length = step_seq_length(stream, source, self.schedule.global_indices(iteration),
                                     cfg.data.pad_to_multiple, max_frames, _seq_divisor(cfg))
        micro = stream.num_microbatches(self.dp)

        def iterate() -> Iterator[Dict[str, torch.Tensor]]:
            for m in range(micro):
                indices = self.schedule.indices(iteration, m, self.dp_rank)
                batch = training_batch([source[i] for i in indices], indices,
                                       self.ardf_iteration_base + iteration, cfg, self.vocab, seq_length,
                                       getattr(source, "number_ids", None))
                batch = slice_batch_for_cp(batch, cfg.parallel.context_parallel_size, self.cp_rank)
                yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

        return StepBatches(stream, seq_length, micro, iterate)

    def consumed_after(self, iteration: int) -> Dict[str, int]:
        """Samples of each stream consumed once ``iteration`` (0-based) is done."""
        return {name: self.schedule.samples_before(name, iteration + 1) for name in self.plan.streams}
