"""Reduction of the loss function's reports over micro-batches and data-parallel ranks."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional

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
