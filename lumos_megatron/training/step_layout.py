"""How one step's samples become micro-batches on each data-parallel rank: padded rows in
Megatron's order, or (``data.packing``) packed sequences spread over the ranks by work.

Planned from the samples' stored lengths alone (``source.sample_length``), so every rank (every
pipeline stage, every tensor-parallel rank) derives the same layout without communication.

* Padded: ``micro_batch_size`` samples per micro-batch, DP rank ``d`` of round ``m`` taking the
  ``(m * DP + d)``-th block; every row padded to the step's length (``data_plan.step_seq_length``).
* Packed: the global batch packed into sequences of at most the stream's ``seq_length`` (as many
  as first-fit-decreasing needs, rounded up to a multiple of DP and refilled to near-equal work),
  assigned to ranks largest work first (``packing_plan``). One sequence per micro-batch, so ranks may run different numbers of
  micro-batches; each sequence is padded to a multiple of ``lcm(data.pad_to_multiple, TP/CP
  divisor)`` of its own length, or to the stream's ``seq_length`` under pipeline parallelism
  (where every micro-batch's activations must have the one shape the stages exchange).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from lumos_megatron.training.data_plan import StreamBatching, megatron_block, step_seq_length
from lumos_megatron.training.packing_plan import balance, imbalance, pack_for_ranks, sequence_cost


@dataclass(frozen=True)
class MicroBatchLayout:
    """One micro-batch of one rank."""

    indices: Tuple[int, ...]
    """Stream sample indices (packed: in the order they sit in the sequence)."""
    seq_length: int
    """Padded length of its rows."""
    packed: bool = False
    """True: the samples are concatenated into one row; False: one row each."""

    @property
    def computed_tokens(self) -> int:
        """Tokens the model computes for it, padding included."""
        return self.seq_length if self.packed else self.seq_length * len(self.indices)


@dataclass(frozen=True)
class StepLayout:
    """Every DP rank's micro-batches of one step."""

    stream: StreamBatching
    ranks: List[List[MicroBatchLayout]]
    rank_work: List[float]
    """Planned model FLOPs each rank computes (padding included): what the ranks wait on."""

    @property
    def computed_tokens(self) -> int:
        """Tokens computed by the whole step, padding included (the ``tokens`` scalar)."""
        return sum(mb.computed_tokens for rank in self.ranks for mb in rank)

    @property
    def seq_length(self) -> int:
        """Longest row of the step (the pipeline's exchange shape)."""
        return max(mb.seq_length for rank in self.ranks for mb in rank)

    @property
    def dp_imbalance(self) -> float:
        """max / mean of the ranks' planned work (1.0: every rank equally busy)."""
        return imbalance(self.rank_work)


def _round_up(n: int, unit: int, cap: int) -> int:
    return min(cap, max(unit, -(-n // unit) * unit))


def layout_step(stream: StreamBatching, indices: Sequence[int], source, dp: int, *, packing: bool,
                multiple: Optional[int], divisor: int, max_latent_frames: Optional[int],
                fixed_length: bool, flops_per_token: float = 1.0, flops_per_pair: float = 0.0,
                group: int = 1) -> StepLayout:
    """The layout of a step reading the stream samples ``indices`` (Megatron order) on ``dp``
    ranks. ``fixed_length`` (pipeline parallelism) pads every packed sequence to the stream's
    ``seq_length``; ``flops_per_token``/``flops_per_pair`` weigh tokens against attention pairs
    when balancing and when measuring the work per rank (``training.flops.work_weights``);
    ``group`` is the multiple a rank's micro-batch count must be (interleaved 1F1B: PP)."""
    indices = list(indices)
    if not packing:
        seq = step_seq_length(stream, source, indices, multiple, max_latent_frames, divisor)
        mbs, micro = stream.micro_batch_size, stream.num_microbatches(dp)
        ranks = [[MicroBatchLayout(tuple(megatron_block(indices, m, d, mbs, dp)), seq) for m in range(micro)]
                 for d in range(dp)]
        row = sequence_cost([seq], flops_per_token, flops_per_pair)
        return StepLayout(stream, ranks, [row * mbs * micro] * dp)
    lengths = [source.sample_length(i, max_latent_frames) for i in indices]
    packs = pack_for_ranks(lengths, stream.seq_length, dp, flops_per_token, flops_per_pair, group)
    unit = math.lcm(multiple or 1, divisor)
    padded = [stream.seq_length if fixed_length else
              _round_up(sum(lengths[i] for i in pack), unit, stream.seq_length) for pack in packs]

    def cost(p: int) -> float:  # its samples plus the padding row after them
        used = [lengths[i] for i in packs[p]]
        return sequence_cost(used + [padded[p] - sum(used)], flops_per_token, flops_per_pair)

    costs = [cost(p) for p in range(len(packs))]
    assignment = balance(costs, dp, equal_counts=fixed_length or group > 1)
    if any(len(mine) % group for mine in assignment):
        raise ValueError(f"a packed {stream.name} step of {len(indices)} samples gives the DP ranks "
                         f"{[len(m) for m in assignment]} sequences, but the interleaved pipeline schedule "
                         f"needs a multiple of {group} each; raise the global batch size")
    ranks = [[MicroBatchLayout(tuple(indices[i] for i in packs[p]), padded[p], packed=True) for p in mine]
             for mine in assignment]
    return StepLayout(stream, ranks, [sum(costs[p] for p in mine) for mine in assignment])
