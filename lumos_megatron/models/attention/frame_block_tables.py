"""The frame-causal block tables, computed from the segment ids per tile instead of per pair.

torch's ``create_block_mask`` evaluates the ``mask_mod`` on every (query, key) pair, reduces the
dense ``[B, L, L]`` mask to tiles and sorts them. Eagerly that is a 1 GB boolean tensor per
sample at 32k tokens and half a minute on a CPU core, on the data side of every training step;
compiled it still does ``L x L`` work. The frame-causal rule (``flex.frame_causal_mask_mod``:
key <= query, or both in the same latent frame, segment id > 0) decides a whole tile from a few
facts about its two blocks, so the tables here cost ``O(L x frames + (L / block)^2)``:

- a key block entirely before the query block: every pair is causal, so the tile is full;
- the diagonal tile: its lower triangle is causal; it is full only if its block is one frame;
- a key block entirely after the query block: a pair is allowed only inside one frame, so the
  tile is empty unless the blocks share a frame, and full only if both are that one frame.

Packed rows add document ids (non-decreasing along the row): frames are then told apart by
(document, frame), and a key block before the query block is allowed only if the two share a
document (its last document is the query block's first), full only if both are that one document.

Tiles that reach past ``L`` (the last block when ``L`` is not a multiple of the block size) are
never full, because torch pads the dense mask with False there. The result is the same
``(partial, full)`` classification, in the same order, as ``create_block_mask`` of the same
``mask_mod`` (tests/unit/test_flex_attention.py compares them).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def frame_causal_tile_classes(segment_ids: torch.Tensor, block_size: int,
                              document_ids: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(partial, full)`` int8 ``[B, 1, n, n]`` tile tables of the frame-causal mask of
    ``segment_ids [B, L]`` (and ``document_ids [B, L]`` for packed rows) with square tiles of
    ``block_size`` (``n = ceil(L / block_size)``)."""
    batch, length = segment_ids.shape
    device = segment_ids.device
    n = -(-length // block_size)
    pad = n * block_size - length
    if document_ids is not None:  # one id per (document, frame): frames of two samples never match
        stride = int(segment_ids.max()) + 1 if segment_ids.numel() else 1
        segment_ids = torch.where(segment_ids > 0, document_ids * stride + segment_ids, segment_ids)
    seg = F.pad(segment_ids, (0, pad), value=-1).view(batch, n, block_size)
    padded = torch.zeros(n, dtype=torch.bool, device=device)
    padded[-1] = pad > 0
    first = seg[:, :, 0]
    # One latent frame throughout (and no padding): the block's pairs are all allowed among themselves.
    one_frame = (seg == first.unsqueeze(-1)).all(-1) & (first > 0) & ~padded
    frames = torch.unique(segment_ids[segment_ids > 0])
    if frames.numel():
        present = (seg.unsqueeze(-1) == frames).any(2).float()  # [B, n, frames]
        shared = (present @ present.transpose(1, 2)) > 0  # [B, n, n]: blocks with a frame in common
    else:
        shared = torch.zeros(batch, n, n, dtype=torch.bool, device=device)
    q = torch.arange(n, device=device).view(n, 1)
    k = torch.arange(n, device=device).view(1, n)
    before, diagonal, after = k < q, k == q, k > q
    same_frame = one_frame.unsqueeze(2) & one_frame.unsqueeze(1) & (first.unsqueeze(2) == first.unsqueeze(1))
    diagonal_full = one_frame if block_size > 1 else ~padded.expand(batch, n)
    full = ((before & ~padded.view(n, 1))
            | (diagonal & diagonal_full.unsqueeze(2))
            | (after & same_frame))
    allowed = before | diagonal | (after & shared)
    if document_ids is not None:
        starts = torch.arange(n, device=device) * block_size
        first_doc = document_ids[:, starts]
        last_doc = document_ids[:, torch.clamp(starts + block_size, max=length) - 1]
        one_doc = first_doc == last_doc
        shares_doc = last_doc.unsqueeze(1) == first_doc.unsqueeze(2)  # [B, q, k]: key block's last = query's first
        same_doc = one_doc.unsqueeze(2) & one_doc.unsqueeze(1) & (first_doc.unsqueeze(2) == first_doc.unsqueeze(1))
        allowed = allowed & (~before | shares_doc)
        full = full & (~before | same_doc)
    partial = allowed & ~full
    return partial.unsqueeze(1).to(torch.int8), full.unsqueeze(1).to(torch.int8)


def ordered_blocks(tiles: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(blocks per row, column indices with the listed ones first)``, int32, from a 0/1 tile
    table: the form ``BlockMask.from_kv_blocks`` takes (the order ``create_block_mask`` gives)."""
    tiles = tiles.to(torch.int32)
    counts = tiles.sum(dim=-1)
    order = torch.argsort(tiles, dim=-1, descending=True, stable=True)
    return counts.to(torch.int32).contiguous(), order.to(torch.int32).contiguous()
