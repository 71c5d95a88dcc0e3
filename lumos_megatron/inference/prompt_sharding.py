"""A prompt set shared among data-parallel groups: who generates which sample, the collectives
of a run, and the ``DIR/index.jsonl`` of every sample.

Under ``torchrun --nproc-per-node N ... --tensor-model-parallel-size t`` there are N/t groups of
t ranks; each group holds one copy of the model and generates its share of the prompts. Global
rank 0 plans the shares once and broadcasts them (so every rank acts on one plan, even if a file
changes meanwhile). The plan balances work: a sample costs its frame block's tokens times the
latent frames to generate, and samples go, largest first, to the group with the least work so
far (ties: the lower group), so same-size samples are dealt out in turn. A sample's tokens depend
only on its seed, never on the group or batch that generates it, so any plan gives the tokens of
a one-process run.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch.distributed as dist

# Generous: a group that drew the last long sample keeps the others waiting at the end of the run.
_COORDINATION_TIMEOUT = timedelta(hours=24)
INDEX_FILE = "index.jsonl"


def _size_key(size: Optional[Tuple[int, int]]) -> tuple:
    return (1, ()) if size is None else (0, tuple(size))


def balance_samples(costs: Sequence[int], groups: int,
                    sizes: Optional[Sequence[Optional[Tuple[int, int]]]] = None) -> List[int]:
    """The group (0 … ``groups`` − 1) of every sample, balancing the summed ``costs``.

    Longest-processing-time-first, deterministic: samples in order of decreasing cost, then of
    ``sizes`` (frame sizes, so that one size is dealt out before the next), then of position;
    each to the group with the least total so far, the lower group on a tie. The heaviest
    group exceeds the lightest by at most the largest cost.
    """
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if sizes is not None and len(sizes) != len(costs):
        raise ValueError(f"{len(sizes)} sizes for {len(costs)} costs")
    if any(c < 0 for c in costs):
        raise ValueError("costs must be non-negative")
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], _size_key(sizes[i]) if sizes else (), i))
    load, owner = [0] * groups, [0] * len(costs)
    for i in order:
        group = min(range(groups), key=lambda g: (load[g], g))
        owner[i] = group
        load[group] += costs[i]
    return owner


class RunGroups:
    """This rank's place in a generation run, and the run-wide collectives (gloo, long timeout).

    ``data_parallel_rank`` / ``data_parallel_size``: this rank's group and the number of groups;
    ``writes_samples``: the group's first rank (TP and PP rank 0), which writes its samples;
    ``is_main``: global rank 0, which plans, writes ``skipped.jsonl`` and ``index.jsonl``.
    """

    def __init__(self) -> None:
        from megatron.core import parallel_state as ps

        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        parallel = ps.model_parallel_is_initialized()
        self.data_parallel_rank = ps.get_data_parallel_rank() if parallel else 0
        self.data_parallel_size = ps.get_data_parallel_world_size() if parallel else 1
        self.writes_samples = not parallel or (ps.get_tensor_model_parallel_rank() == 0
                                               and ps.get_pipeline_model_parallel_rank() == 0)
        self.is_main = self.rank == 0
        # A gloo group of its own: object collectives without CUDA tensors, and a timeout that
        # outlasts the wait of groups that finish early (the default group's is 30 minutes).
        self._group = (dist.new_group(backend="gloo", timeout=_COORDINATION_TIMEOUT)
                       if self.world_size > 1 else None)

    def broadcast(self, obj):
        """Global rank 0's ``obj``, on every rank."""
        if self._group is None:
            return obj
        shared = [obj]
        dist.broadcast_object_list(shared, src=0, group=self._group)
        return shared[0]

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank (also a barrier)."""
        if self._group is None:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._group)
        return out


def write_index(out: Path, entries: Sequence[Dict]) -> Path:
    """``out/index.jsonl``: one line per sample with a finished JSON, in prompt order.

    ``entries``: ``{"name", "index", "prompt", "image", "seed", "data_parallel_rank"}`` of this
    run's samples; a sample finished by an earlier run (no entry) is read from its own JSON.
    """
    lines = []
    for entry in sorted(entries, key=lambda e: e["index"]):
        sample = out / f"{entry['name']}.json"
        if not sample.is_file():  # skipped: listed in skipped.jsonl instead
            continue
        if entry.get("data_parallel_rank") is None:  # written by an earlier run: its JSON says
            info = json.loads(sample.read_text())
            entry = {**entry, "seed": info.get("seed"), "data_parallel_rank": info.get("data_parallel_rank")}
        lines.append({**entry, "json": sample.name, "video": f"{entry['name']}.mp4"})
    path = out / INDEX_FILE
    tmp = path.with_name(f".{INDEX_FILE}.tmp")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)
    return path
