"""Which ranks of a layout hold different amounts of memory: the planner traces one of each.

Ranks of one layout differ only in what megatron places on them:

- the **pipeline stage**: the first holds the embedding and (1F1B) the most micro-batches in
  flight, the last the output layer and the loss, the middle ones only decoder layers (all alike);
- the **tensor-parallel rank** on the last stage: the fused visual loss works on the visual rows of
  each rank's vocabulary shard, and the text ids come first, so the last TP ranks hold the visual
  codes and the first ones may hold none;
- the **context-parallel rank** on the last stage: every CP rank holds the same number of
  positions, but how many of them carry loss depends on where the masked frames fall.

Data-parallel ranks hold the same shapes (distributed-optimizer shards are equal up to padding),
so DP rank 0 stands for all. Global ranks follow megatron's default order (``tp-cp-ep-dp-pp``):
``rank = tp + TP * (cp + CP * (dp + DP * pp))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from lumos_megatron.losses.fused import visual_shard
from lumos_megatron.platform.parallel import ParallelLayout
from lumos_megatron.vocab import LumosVocab


@dataclass(frozen=True)
class RankKind:
    """One rank the planner traces, standing for every rank like it."""

    role: str
    """What it stands for, e.g. ``first stage (PP 0/2) TP 0 CP 0``."""
    rank: int
    """Its global rank."""
    pp_rank: int
    """Pipeline stage."""
    tp_rank: int
    """Tensor-parallel rank."""
    cp_rank: int
    """Context-parallel rank."""


def global_rank(layout: ParallelLayout, tp_rank: int, cp_rank: int, dp_rank: int, pp_rank: int) -> int:
    """megatron's global rank of a (TP, CP, DP, PP) coordinate (default order ``tp-cp-ep-dp-pp``)."""
    return tp_rank + layout.tp * (cp_rank + layout.cp * (dp_rank + layout.dp * pp_rank))


def loss_tp_rank(layout: ParallelLayout, vocab: LumosVocab) -> int:
    """The TP rank whose vocabulary shard holds the most visual ids (the largest fused-loss work)."""
    def visual_rows(tp_rank: int) -> int:
        lo, hi, _ = visual_shard(vocab.vocab_size, vocab.visual_offset, layout.tp, tp_rank)
        return hi - lo

    return max(range(layout.tp), key=lambda r: (visual_rows(r), -r))


def _stage_name(pp_rank: int, pp: int) -> str:
    if pp == 1:
        return "single stage"
    if pp_rank == 0:
        return f"first stage (PP 0/{pp})"
    if pp_rank == pp - 1:
        return f"last stage (PP {pp_rank}/{pp})"
    return f"middle stage (PP {pp_rank}/{pp})"


def rank_kinds(layout: ParallelLayout, vocab: LumosVocab) -> List[RankKind]:
    """The ranks to trace, first pipeline stage's rank 0 first (global rank 0)."""
    wanted = [(0, 0, 0)]
    if layout.pp > 2:
        wanted.append((1, 0, 0))
    last, loss_tp = layout.pp - 1, loss_tp_rank(layout, vocab)
    wanted.append((last, loss_tp, 0))
    if layout.cp > 1:
        wanted.append((last, loss_tp, layout.cp - 1))
    kinds, seen = [], set()
    for pp_rank, tp_rank, cp_rank in wanted:
        if (pp_rank, tp_rank, cp_rank) in seen:
            continue
        seen.add((pp_rank, tp_rank, cp_rank))
        role = f"{_stage_name(pp_rank, layout.pp)} TP {tp_rank} CP {cp_rank}"
        if pp_rank == last and tp_rank == loss_tp and layout.tp > 1:
            role += " (most visual vocabulary rows)"
        kinds.append(RankKind(role, global_rank(layout, tp_rank, cp_rank, 0, pp_rank), pp_rank, tp_rank, cp_rank))
    return kinds
