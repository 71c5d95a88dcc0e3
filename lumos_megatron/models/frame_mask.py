"""Frame-causal attention mask of Lumos-1 (docs/method.md §3), per sample.

Allowed(i → j) = ``j <= i`` OR (``seg(i) ∧ seg(j) ∧ frame_id(i) == frame_id(j)``): text is causal,
every ``8197 … 8196`` frame block (frame start, size tokens, codes, new-lines, frame end) is fully
bidirectional inside, and frames see everything before them. Right padding (id 0) is causal text.

The mask is defined by per-token *frame segment ids* (0 outside frames, k >= 1 inside the k-th
frame block), which is what a FlexAttention block mask or a context-parallel attention needs; the
dense boolean mask is derived from them. Unlike the official batched code (which writes into an
expanded tensor and so applies the union of all samples' frame blocks to every sample), the mask
here is strictly per sample.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from lumos_megatron.vocab import LumosVocab, VideoLayout, parse_batch


def frame_segment_ids(tokens: torch.Tensor, vocab: LumosVocab) -> torch.Tensor:
    """[B, L] long: 0 outside frame blocks, k for positions of the k-th (1-based) frame block.

    ``tokens`` is [B, L] or [L] (treated as B = 1; the result keeps the batch dim). A frame block
    spans its 8197 through its 8196 inclusive. Frames outside the video (when both 9004 and 9005
    are present) and unterminated/malformed blocks raise ValueError naming sample and position.
    """
    device = tokens.device if isinstance(tokens, torch.Tensor) else torch.device("cpu")
    return segment_ids_from_layouts(parse_batch(tokens, vocab), device)


def segment_ids_from_layouts(layouts: Sequence[VideoLayout], device=None) -> torch.Tensor:
    """:func:`frame_segment_ids` of already parsed samples (all of one length)."""
    length = layouts[0].length if layouts else 0
    seg = torch.zeros(len(layouts), length, dtype=torch.long)
    for b, layout in enumerate(layouts):
        for fr in layout.frames:
            seg[b, fr.start : fr.end + 1] = fr.index + 1
    return seg.to(device or "cpu")


def mask_from_segment_ids(segment_ids: torch.Tensor, document_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Dense bool mask [B, L, L] (True = query i may attend key j) from segment ids [B, L] or [L].

    ``allowed = (j <= i) | (seg[i] == seg[j] > 0)``; with ``document_ids`` (packed rows: the
    sample each position belongs to, segment ids numbered per sample) both terms also need
    ``doc[i] == doc[j]``, so each sample sees only itself.
    """
    if segment_ids.dim() == 1:
        segment_ids = segment_ids.unsqueeze(0)
    if segment_ids.dim() != 2:
        raise ValueError(f"segment_ids must be [B, L] or [L], got {tuple(segment_ids.shape)}")
    length = segment_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    q, k = segment_ids.unsqueeze(2), segment_ids.unsqueeze(1)
    same_frame = (q == k) & (q > 0)
    allowed = causal.unsqueeze(0) | same_frame
    if document_ids is not None:
        docs = document_ids.reshape(segment_ids.shape).to(segment_ids.device)
        allowed = allowed & (docs.unsqueeze(2) == docs.unsqueeze(1))
    return allowed


def allowed_pairs(segment_ids: torch.Tensor, lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
    """float64 [B]: allowed (query, key) pairs of each sample's frame-causal mask, without forming
    it: the causal pairs plus, per frame block of n tokens, the n(n-1)/2 keys after each query
    inside the block (what the attention FLOPs count). ``lengths`` counts only the first
    ``lengths[b]`` positions of row b (the sample without its padding)."""
    if segment_ids.dim() == 1:
        segment_ids = segment_ids.unsqueeze(0)
    length = segment_ids.shape[1]
    pairs = torch.empty(segment_ids.shape[0], dtype=torch.float64)
    for b, row in enumerate(segment_ids.cpu()):
        n = length if lengths is None else int(lengths[b])
        row = row[:n]
        counts = torch.bincount(row[row > 0]).double()
        pairs[b] = n * (n + 1) / 2 + float((counts * (counts - 1) / 2).sum())
    return pairs


def frame_causal_mask(tokens: torch.Tensor, vocab: LumosVocab) -> torch.Tensor:
    """Bool [B, L, L] frame-causal mask (True = allowed) for ``tokens`` ([B, L] or [L] → B = 1)."""
    return mask_from_segment_ids(frame_segment_ids(tokens, vocab))
