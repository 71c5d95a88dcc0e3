"""Which samples each optimizer step reads: the stream of the step (joint image/video training
alternates them), its batch sizes and padded length, and Megatron's sample order within it.

Position in the data is a count of consumed samples per stream (stored in checkpoints); all
else is a pure function of the iteration, so resume is exact and any DP size reads the same
global sequence of samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.data.sources import IMAGE, VIDEO, image_seq_length, joint_training
from lumos_megatron.platform.parallel import microbatch_group, microbatches_per_step


@dataclass(frozen=True)
class StreamBatching:
    """Batch shape of the steps that read one stream."""

    name: str
    micro_batch_size: int
    global_batch_size: int
    seq_length: int
    """Longest padded length of this stream's steps."""

    def num_microbatches(self, dp: int, group: int = 1) -> int:
        """Gradient-accumulation micro-batches per step on each DP rank (checked: see
        ``platform.parallel.microbatches_per_step``)."""
        return microbatches_per_step(self.global_batch_size, self.micro_batch_size, dp, group,
                                     what=f"{self.name} steps")


class StepPlan:
    """The stream of every iteration: ``video`` only, or with joint training the cycle
    ``image, video x video_iters_per_image_iter`` (official stage 2: image, video, image, ...)."""

    def __init__(self, cfg: LumosConfig, dp: int):
        t, d, p = cfg.train, cfg.data, cfg.parallel
        video = StreamBatching(VIDEO, t.micro_batch_size, t.global_batch_size, d.seq_length)
        self.streams: Dict[str, StreamBatching] = {VIDEO: video}
        self.cycle: List[str] = [VIDEO]
        if joint_training(cfg):
            image_gbs = d.image_global_batch_size or (
                d.image_micro_batch_size * video.num_microbatches(dp) * dp)
            self.streams[IMAGE] = StreamBatching(IMAGE, d.image_micro_batch_size, image_gbs,
                                                 image_seq_length(cfg))
            self.cycle = [IMAGE] + [VIDEO] * d.video_iters_per_image_iter
        for s in self.streams.values():
            s.num_microbatches(dp, microbatch_group(p))  # raises for a batch that does not split

    def stream_at(self, iteration: int) -> StreamBatching:
        """Batch shape of (0-based) ``iteration``."""
        return self.streams[self.cycle[iteration % len(self.cycle)]]

    def steps_of(self, name: str, start: int, end: int) -> int:
        """Iterations in ``[start, end)`` that read stream ``name``."""
        def upto(n: int) -> int:
            full, rest = divmod(n, len(self.cycle))
            return full * self.cycle.count(name) + self.cycle[:rest].count(name)
        return upto(end) - upto(start)


@dataclass(frozen=True)
class SampleSchedule:
    """Maps (iteration, micro-batch, DP rank) to stream sample indices, Megatron's sampler order:
    each global batch is split into micro-batch rounds of ``mbs x DP`` contiguous samples, DP rank
    ``d`` taking the ``d``-th block of each round."""

    plan: StepPlan
    dp_size: int
    base_iteration: int = 0
    """First iteration of this run (a resumed checkpoint's iteration)."""
    base_samples: Optional[Mapping[str, int]] = None
    """Samples of each stream consumed before ``base_iteration`` (from the checkpoint; a resumed
    run may use other batch sizes and still continue where the data left off)."""
    orders: Optional[Mapping[str, object]] = None
    """Per stream, a ``data.length_grouping.LengthGroupedOrder`` that reorders each global batch's
    positions (``data.length_grouped``); None or a missing stream: positions are sample indices."""

    def samples_before(self, name: str, iteration: int) -> int:
        """Samples of stream ``name`` consumed before (0-based) ``iteration``."""
        base = (self.base_samples or {}).get(name, 0)
        steps = self.plan.steps_of(name, self.base_iteration, iteration)
        return base + steps * self.plan.streams[name].global_batch_size

    def _start(self, iteration: int) -> int:
        return self.samples_before(self.plan.stream_at(iteration).name, iteration)

    def indices(self, iteration: int, micro: int, dp_rank: int) -> List[int]:
        """Stream sample indices of one micro-batch (iteration is 0-based, >= base_iteration)."""
        s = self.plan.stream_at(iteration)
        return megatron_block(self.global_indices(iteration), micro, dp_rank, s.micro_batch_size, self.dp_size)

    def global_indices(self, iteration: int) -> List[int]:
        """All stream sample indices of the step (every DP rank's), in Megatron's order: DP
        rank ``d`` of micro-batch round ``m`` takes the ``(m * DP + d)``-th block of
        ``micro_batch_size``. With length grouping, the step's window batch, shortest first."""
        stream = self.plan.stream_at(iteration)
        start = self._start(iteration)
        order = (self.orders or {}).get(stream.name)
        if order is not None:
            return order.batch(start)
        return list(range(start, start + stream.global_batch_size))


def megatron_block(step_indices: List[int], micro: int, dp_rank: int, micro_batch_size: int, dp: int) -> List[int]:
    """Megatron's sampler order within a step: DP rank ``d`` of micro-batch round ``m`` takes the
    ``(m * DP + d)``-th block of ``micro_batch_size`` of the step's samples."""
    start = (micro * dp + dp_rank) * micro_batch_size
    return step_indices[start:start + micro_batch_size]


def step_seq_length(stream: StreamBatching, source, indices: List[int], multiple: Optional[int],
                    max_latent_frames: Optional[int], divisor: int = 1) -> int:
    """Padded length of a step: the stream's ``seq_length``, or with ``multiple`` the smallest
    multiple of ``lcm(multiple, divisor)`` that holds the step's longest sample (after frame
    dropping), capped at ``seq_length``. It depends on the whole global batch, so every rank
    (every pipeline stage, every CP rank) computes the same value."""
    if not multiple:
        return stream.seq_length
    longest = max(source.sample_length(i, max_latent_frames) for i in indices)
    unit = math.lcm(multiple, divisor)
    return min(stream.seq_length, max(unit, -(-longest // unit) * unit))
