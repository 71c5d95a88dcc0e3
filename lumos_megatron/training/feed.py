"""This rank's micro-batches, one optimizer step at a time.

``DataFeed.step(iteration)`` says which stream the step reads (joint training alternates image
and video steps), how long its samples are padded, how many micro-batches it has, and gives
fresh iterators over them (one per model chunk: with VPP every chunk consumes the same
micro-batches). The step's samples are laid out over the DP ranks by ``training.step_layout``
(padded rows in Megatron's order, or packed sequences balanced by work), after the optional
length-grouped reordering (``data.length_grouping``). Batches are built lazily, one micro-batch
at a time, so a step never holds all its dense attention masks at once. What the FLOPs model
needs (allowed attention pairs, real tokens) is recorded per micro-batch as it is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Mapping, Optional

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.data.length_grouping import LengthGroupedOrder
from lumos_megatron.objective import Objective, build_objective
from lumos_megatron.platform.parallel import microbatch_group, sequence_length_divisor
from lumos_megatron.training.batch import rank_micro_batch
from lumos_megatron.training.data_plan import SampleSchedule, StepPlan, StreamBatching
from lumos_megatron.training.flops import work_weights
from lumos_megatron.training.step_layout import StepLayout, layout_step
from lumos_megatron.training.sample_broadcast import read_samples
from lumos_megatron.vocab import LumosVocab

EVAL_ITERATION_BASE = 1 << 40
"""Evaluation batches draw their AR-DF randomness as if at iteration BASE + j: never a training
iteration, and the same at every evaluation."""


@dataclass
class StepBatches:
    """One step's micro-batches on this rank."""

    stream: StreamBatching
    seq_length: int
    """Longest padded row of the step (the pipeline's exchange shape)."""
    num_microbatches: int
    """This rank's micro-batches (packed steps: may differ between DP ranks)."""
    make_iterator: Callable[[], Iterator[Dict[str, torch.Tensor]]]
    """A fresh iterator over the step's micro-batches (call once per model chunk)."""
    layout: StepLayout
    """Every DP rank's micro-batches (``training.step_layout``)."""
    pairs_by_microbatch: Dict[int, float] = field(default_factory=dict)
    """Allowed attention pairs of each micro-batch built so far (whole samples, before CP
    slicing, padding left out)."""
    real_tokens_by_microbatch: Dict[int, float] = field(default_factory=dict)
    """Tokens of each micro-batch built so far, padding left out."""

    @property
    def attention_pairs(self) -> float:
        """Allowed attention pairs of this rank's micro-batches of the step."""
        return math.fsum(self.pairs_by_microbatch.values())

    @property
    def real_tokens(self) -> float:
        """Tokens of this rank's samples of the step (no padding)."""
        return math.fsum(self.real_tokens_by_microbatch.values())

    @property
    def computed_tokens(self) -> int:
        """Tokens the whole step computes on all DP ranks, padding included."""
        return self.layout.computed_tokens


class DataFeed:
    """Micro-batches of one split for this (DP, CP) rank.

    ``broadcast`` is ``(group, source rank)`` from ``platform.parallel.sample_broadcast_group``
    (None: read locally): sources with expensive reads (``expensive_reads``, e.g. streaming) are
    read on the source rank only and shared over the group.
    """

    def __init__(self, cfg: LumosConfig, vocab: LumosVocab, sources: Mapping[str, object], dp: int,
                 dp_rank: int, cp_rank: int, device: torch.device, base_iteration: int = 0,
                 base_samples: Optional[Mapping[str, int]] = None, ardf_iteration_base: int = 0,
                 objective: Optional[Objective] = None, broadcast=None):
        self.cfg, self.vocab, self.sources = cfg, vocab, sources
        self.objective = objective or build_objective(cfg, vocab)
        self.plan = StepPlan(cfg, dp)
        base_samples = dict(base_samples or {})
        orders = {}
        if cfg.data.length_grouped:
            for salt, (name, stream) in enumerate(sorted(self.plan.streams.items())):
                done = base_samples.get(name, 0)  # windows restart at the resume point only if
                anchor = 0 if done % stream.global_batch_size == 0 else done  # the batch size changed
                orders[name] = LengthGroupedOrder(sources[name], stream.global_batch_size,
                                                  cfg.data.length_group_window, cfg.train.seed, salt,
                                                  self.objective.max_latent_frames, anchor)
        self.schedule = SampleSchedule(self.plan, dp, base_iteration, base_samples, orders)
        self._work_weights = work_weights(cfg)
        self.dp, self.dp_rank, self.cp_rank, self.device = dp, dp_rank, cp_rank, device
        self.ardf_iteration_base = ardf_iteration_base
        self.broadcast = broadcast

    def _read(self, source, indices: List[int]):
        if self.broadcast is not None and getattr(source, "expensive_reads", False):
            return read_samples(source, indices, *self.broadcast)
        return [source[i] for i in indices]

    def layout(self, iteration: int) -> StepLayout:
        """Every DP rank's micro-batches of (0-based) ``iteration``."""
        cfg = self.cfg
        stream = self.plan.stream_at(iteration)
        per_token, per_pair = self._work_weights
        return layout_step(stream, self.schedule.global_indices(iteration), self.sources[stream.name], self.dp,
                           packing=cfg.data.packing, multiple=cfg.data.pad_to_multiple,
                           divisor=sequence_length_divisor(cfg.parallel)[0],
                           max_latent_frames=self.objective.max_latent_frames,
                           fixed_length=cfg.parallel.pipeline_model_parallel_size > 1,
                           flops_per_token=per_token, flops_per_pair=per_pair,
                           group=microbatch_group(cfg.parallel))

    def step(self, iteration: int) -> StepBatches:
        """The micro-batches of (0-based) ``iteration``."""
        cfg, objective = self.cfg, self.objective
        layout = self.layout(iteration)
        source = self.sources[layout.stream.name]
        mine = layout.ranks[self.dp_rank]
        pairs: Dict[int, float] = {}
        real: Dict[int, float] = {}
        number_ids = getattr(source, "number_ids", None)

        def iterate() -> Iterator[Dict[str, torch.Tensor]]:
            for m, micro in enumerate(mine):
                indices = list(micro.indices)
                target = objective.targets(self._read(source, indices), indices, self.ardf_iteration_base + iteration,
                                           micro.seq_length, number_ids, packed=micro.packed)
                real[m] = float(sum(target.real_lengths or ()))
                # CP slice and loss rows are done here, before the move: the loss then needs no
                # host sync to find its rows (training.batch).
                batch, pairs[m] = rank_micro_batch(target, cfg, self.vocab, objective, self.cp_rank)
                yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

        return StepBatches(layout.stream, layout.seq_length, len(mine), iterate, layout, pairs, real)

    def consumed_after(self, iteration: int) -> Dict[str, int]:
        """Samples of each stream consumed once ``iteration`` (0-based) is done."""
        return {name: self.schedule.samples_before(name, iteration + 1) for name in self.plan.streams}
