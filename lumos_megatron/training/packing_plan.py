"""Packing a step's samples into sequences and spreading the sequences over data-parallel ranks.

Pure functions of sample lengths (from the index: no token reads), so every rank plans the same
step without communication:

* :func:`first_fit_decreasing`: samples, longest first, each into the first sequence with room
  (``capacity`` tokens), a new sequence when none has: how many sequences the step needs;
* :func:`pack_for_ranks`: that many sequences rounded up to a multiple of the data-parallel size,
  refilled longest sample first into the sequence with the least work that has room, so every
  rank gets as many sequences as every other and of near-equal work (falls back to the
  first-fit packing when a sample finds no room);
* :func:`split_to_count`: sequences split until there are at least as many as data-parallel
  ranks (every rank needs one micro-batch);
* :func:`balance`: sequences to ranks, largest cost first onto the rank with the least work so
  far (LPT), which keeps the spread of work across ranks small;
* :func:`sequence_cost`: a sequence's work in model FLOPs: its tokens through the dense layers
  plus its allowed attention pairs (estimated per sample as the causal triangle), so a rank
  holding one long sample and a rank holding many short ones of the same total are told apart.
"""

from __future__ import annotations

from typing import List, Sequence


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> List[List[int]]:
    """Positions into ``lengths`` grouped into sequences of at most ``capacity`` tokens; within a
    sequence, positions keep the order they were placed in (longest first). Ties by position,
    so the result is deterministic. A length above ``capacity`` raises ValueError."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    packs: List[List[int]] = []
    room: List[int] = []
    for i in order:
        if lengths[i] > capacity:
            raise ValueError(f"a sample of {lengths[i]} tokens does not fit a packed sequence of "
                             f"{capacity} (data.seq_length)")
        for p, free in enumerate(room):
            if lengths[i] <= free:
                packs[p].append(i)
                room[p] -= lengths[i]
                break
        else:
            packs.append([i])
            room.append(capacity - lengths[i])
    return packs


def pack_for_ranks(lengths: Sequence[int], capacity: int, ranks: int, flops_per_token: float = 1.0,
                   flops_per_pair: float = 0.0, group: int = 1) -> List[List[int]]:
    """Positions into ``lengths`` grouped into a multiple of ``ranks x group`` sequences of at
    most ``capacity`` tokens, with near-equal work (see the module docstring). ``group``: the
    micro-batches of a rank must come in multiples of it (interleaved pipeline schedules)."""
    packs = first_fit_decreasing(lengths, capacity)
    unit = ranks * group
    count = max(unit, -(-len(packs) // unit) * unit)
    if count > len(lengths):
        return split_to_count(packs, ranks)
    bins: List[List[int]] = [[] for _ in range(count)]
    used, work = [0] * count, [0.0] * count
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        fits = [b for b in range(count) if used[b] + n <= capacity]
        if not fits:  # a refill that cannot place a sample: keep the first-fit packing
            return split_to_count(packs, ranks)
        b = min(fits, key=lambda b: (work[b], b))
        bins[b].append(i)
        used[b] += n
        work[b] += sequence_cost([n], flops_per_token, flops_per_pair)
    return [b for b in bins if b] if all(bins) else split_to_count(packs, ranks)


def split_to_count(packs: List[List[int]], count: int) -> List[List[int]]:
    """``packs`` with the one holding most samples split in two (first half, second half) until
    there are at least ``count``; ValueError when there are fewer samples than ``count``."""
    packs = [list(p) for p in packs]
    while len(packs) < count:
        largest = max(range(len(packs)), key=lambda p: (len(packs[p]), -p))
        if len(packs[largest]) < 2:
            raise ValueError(f"{sum(map(len, packs))} samples cannot give {count} data-parallel "
                             "ranks one sequence each")
        pack = packs.pop(largest)
        half = len(pack) // 2
        packs[largest:largest] = [pack[:half], pack[half:]]
    return packs


def sequence_cost(lengths: Sequence[int], flops_per_token: float, flops_per_pair: float) -> float:
    """Model FLOPs of one packed sequence of samples with ``lengths``: dense work per token plus
    attention work per allowed pair, the pairs estimated as each sample's causal triangle
    (the frame blocks add a few percent, alike for samples of one layout)."""
    tokens = sum(lengths)
    pairs = sum(n * (n + 1) / 2 for n in lengths)
    return flops_per_token * tokens + flops_per_pair * pairs


def balance(costs: Sequence[float], ranks: int, equal_counts: bool = False) -> List[List[int]]:
    """Positions into ``costs`` for each of ``ranks`` ranks: largest first, each to the rank with
    the least total so far (ties: fewer sequences, then lower rank). Every rank gets at least
    one when ``len(costs) >= ranks``; with ``equal_counts`` exactly ``len(costs) / ranks`` when
    that divides (pipelines: a rank with more micro-batches runs a longer schedule)."""
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1 (got {ranks})")
    out: List[List[int]] = [[] for _ in range(ranks)]
    load = [0.0] * ranks
    divides = len(costs) % ranks == 0
    quota = len(costs) // ranks if equal_counts and divides else len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        # An empty rank first: a rank without a micro-batch cannot take part in the step.
        open_ranks = [r for r in range(ranks) if len(out[r]) < quota]
        r = min(open_ranks, key=lambda r: (bool(out[r]), load[r], len(out[r]), r))
        out[r].append(i)
        load[r] += costs[i]
    return out


def imbalance(loads: Sequence[float]) -> float:
    """max / mean of per-rank loads (1.0 = perfectly balanced; 1.0 for no load)."""
    mean = sum(loads) / len(loads) if loads else 0.0
    return max(loads) / mean if mean > 0 else 1.0
