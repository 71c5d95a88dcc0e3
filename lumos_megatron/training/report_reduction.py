"""Reduction of the loss function's reports over micro-batches and data-parallel ranks, and of
each rank's step time over the world (the slowest rank of a logging window)."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.distributed as dist
from megatron.core import parallel_state


def reduce_reports(loss_reports: List[dict],
                   local_totals: Optional[Mapping[str, float]] = None) -> Dict[str, torch.Tensor]:
    """Sum every report (``lm loss`` [sum, tokens], ``frame loss`` [K, 2], ``mask ratio``
    [masked, maskable]) over micro-batches and over the DP(+CP) group (last stage only).

    ``local_totals`` are further per-rank sums reduced in the same collective (the loop's batch
    statistics, e.g. ``attention pairs``); each is a 0-d tensor in the result.
    """
    totals: Dict[str, torch.Tensor] = {k: torch.tensor(float(v), dtype=torch.float64)
                                       for k, v in (local_totals or {}).items()}
    for report in loss_reports:
        for key, value in report.items():
            value = value.detach().to("cpu", torch.float64)
            totals[key] = totals[key] + value if key in totals else value
    if totals and parallel_state.get_data_parallel_world_size(with_context_parallel=True) > 1:
        group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        for key in sorted(totals):  # same order on every rank
            value = totals[key].to(device)
            dist.all_reduce(value, group=group)
            totals[key] = value.cpu()
    return totals


def slowest_rank(local_ms: float) -> Optional[Tuple[int, float]]:
    """Collective over the world: (rank, ms) of the largest ``local_ms`` (ties: the lowest rank);
    None in a single process.

    One all-reduce of a world-sized vector in which each rank fills its own slot: a few KB even
    at thousands of ranks, called once per logging window rather than per step."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    times = torch.zeros(dist.get_world_size(), dtype=torch.float64, device=device)
    times[dist.get_rank()] = float(local_ms)
    dist.all_reduce(times)
    times = times.cpu()
    rank = int(torch.argmax(times))  # the first maximum: deterministic on every rank
    return rank, float(times[rank])
