"""Rows added when a checkpoint's vocabulary is grown (a 65,536-id Chameleon starting point to
the 129,536-id unified vocabulary, docs/method.md §6.2).

The official trainer builds the larger model, which initialises every row with PyTorch's layer
defaults, and copies the old rows over it. The new rows therefore follow those defaults:
``nn.Embedding``'s N(0, 1) for the input embedding and ``nn.Linear``'s kaiming-uniform
(a = sqrt(5), i.e. U(-1/sqrt(hidden), 1/sqrt(hidden))) for the LM head. Each block of
``GROWTH_BLOCK_ROWS`` new rows has its own generator, keyed by (seed, tensor, block), so the
values do not depend on how a converter chunks its writes.
"""

from __future__ import annotations

import math
import zlib
from typing import Literal

import torch

GROWTH_BLOCK_ROWS = 1024
GrownTensor = Literal["embedding", "output_layer"]


def _block(kind: GrownTensor, seed: int, block: int, hidden: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{kind}:{block}".encode()))
    rows = torch.empty(GROWTH_BLOCK_ROWS, hidden, dtype=torch.float32)
    if kind == "embedding":
        return rows.normal_(0.0, 1.0, generator=generator)
    bound = 1.0 / math.sqrt(hidden)  # kaiming_uniform_(a=sqrt(5)) with fan_in = hidden
    return rows.uniform_(-bound, bound, generator=generator)


def new_rows(kind: GrownTensor, start: int, stop: int, old_vocab: int, hidden: int, seed: int) -> torch.Tensor:
    """fp32 values of grown rows ``[start, stop)`` (global row ids, all ``>= old_vocab``)."""
    if start < old_vocab or stop < start:
        raise ValueError(f"rows [{start}, {stop}) are not new rows of a vocabulary grown from {old_vocab}")
    out = torch.empty(stop - start, hidden, dtype=torch.float32)
    row = start
    while row < stop:
        block, within = divmod(row - old_vocab, GROWTH_BLOCK_ROWS)
        take = min(GROWTH_BLOCK_ROWS - within, stop - row)
        out[row - start: row - start + take] = _block(kind, seed, block, hidden)[within: within + take]
        row += take
    return out
