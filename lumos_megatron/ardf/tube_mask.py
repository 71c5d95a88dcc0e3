"""AR-DF temporal tube masking (docs/method.md §4 steps 1-5).

Content positions are found from the *labels*, exactly as the official
``extract_image_video_masks``: every token inside a frame segment (8197 … 8196, inside the video
segment when the sample has a complete one) except the frame start, the two size tokens after it,
the frame end and separators, and except labels of -100. New-line tokens are content, so they
can be masked (and then carry no loss, because their label is below the visual offset).

Per sample: one mask ratio ``r = max(cos(pi/2 * u), min_ratio)``, one spatial pattern over the
``il = H_l * (W_l + 1)`` positions of the first frame with ``round(il * r)`` (at least 1) masked
positions, repeated for every latent frame (frame 0 included) and truncated to the content
length. Masked inputs become the mask id; labels survive only at masked content positions.

Two random sources, same semantics:

* :func:`tube_mask` (the contract) draws from a ``torch.Generator`` in the official order
  (``rand(B)`` for the ratios, then ``rand(1, il).argsort()`` per sample), so a seeded generator
  reproduces the official masks bit for bit;
* :func:`tube_mask_from_keys` (training) derives everything from a counter-based key id per
  sample, so masks depend only on (seed, iteration, global sample index) — not on DP size,
  micro-batching or resume — and run in one fused pass of the csrc kernel when it is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from lumos_megatron.ops import tube_mask_apply
from lumos_megatron.ops.tube_patterns import apply_tube_patterns, frame_patterns
from lumos_megatron.ops.counter_rng import mix32_int, key_base
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab

# Salt that separates a sample's ratio draw from its pattern keys (keys use base ^ j, j < il).
_RATIO_SALT = 0xA511E9B3


@dataclass
class TubeMaskResult:
    """Masked batch plus what reporting needs."""

    tokens: torch.Tensor
    """[B, L] input with masked content replaced by the mask id."""
    labels: torch.Tensor
    """[B, L] labels, -100 at unmasked content positions."""
    masked: torch.Tensor
    """[B, L] bool, True where the input was masked."""
    content: torch.Tensor
    """[B, L] bool, the content positions (the maskable ones)."""
    ratio: torch.Tensor
    """[B] float32, the drawn mask ratio r of each sample."""
    lengths: Optional[List[int]] = None
    """Tokens of each sample before its padding (set by ``ardf.ardf_batch``)."""

    def realized_ratio(self) -> tuple[float, float]:
        """(masked positions, content positions) summed over the batch."""
        return float(self.masked.sum()), float(self.content.sum())


def _segment_mask(seq: torch.Tensor, start_id: int, end_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions inside start … end segments (both ends included), and whether each row has both."""
    is_start, is_end = seq == start_id, seq == end_id
    complete = is_start.any(-1) & is_end.any(-1)
    inside = (torch.cumsum(is_start, 1) > torch.cumsum(is_end, 1)) | is_start | is_end
    return inside, complete


def content_mask(labels: torch.Tensor, vocab: LumosVocab) -> torch.Tensor:
    """bool [B, L]: the maskable visual content positions (codes and new-lines) of each sample."""
    video, has_video = _segment_mask(labels, vocab.video_start, vocab.video_end)
    frames, _ = _segment_mask(labels, vocab.frame_start, vocab.frame_end)
    # Frames count only inside the video segment when the sample has a complete one.
    frames = torch.where(has_video[:, None], frames & video, frames)
    starts = (labels == vocab.frame_start) & frames
    size_tokens = torch.zeros_like(starts)
    size_tokens[:, 1:] |= starts[:, :-1]
    size_tokens[:, 2:] |= starts[:, :-2]
    special = starts | size_tokens | (labels == vocab.frame_end) | (labels == vocab.separator)
    return frames & ~special & (labels != IGNORE_INDEX)


def first_run_length(row: torch.Tensor) -> int:
    """Length of the first contiguous run of True in a 1-D bool tensor (0 if none)."""
    idx = row.nonzero().flatten()
    if idx.numel() == 0:
        return 0
    gaps = (idx[1:] - idx[:-1] != 1).nonzero()
    return int(gaps[0]) + 1 if gaps.numel() else idx.numel()


def num_masked_for(period: int, ratio: torch.Tensor) -> int:
    """``round(il * r)`` clamped to at least 1, in float32 with round-half-even as the official."""
    return int((period * ratio.float()).round().clamp(min=1))


def mask_ratio(u: torch.Tensor, min_ratio: float) -> torch.Tensor:
    """Cosine schedule clamped from below: ``max(cos(pi/2 * u), min_ratio)`` (float32)."""
    return torch.cos(u.float() * math.pi * 0.5).clip(min_ratio)


def tube_mask(tokens: torch.Tensor, labels: torch.Tensor, vocab: LumosVocab,
              generator: Optional[torch.Generator] = None,
              min_ratio: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """Official temporal tube masking of a [B, L] batch → ``(masked_tokens, masked_labels)``.

    Draws from ``generator`` (the global torch RNG when None) in the official order, so the
    same seed gives the official masks. Inputs are not modified.
    """
    return tube_mask_detailed(tokens, labels, vocab, generator, min_ratio)[:2]


def tube_mask_detailed(tokens, labels, vocab, generator=None, min_ratio=0.7):
    """:func:`tube_mask` returning ``(tokens, labels, TubeMaskResult)``."""
    _check_batch(tokens, labels)
    content = content_mask(labels, vocab)
    ratio = mask_ratio(torch.rand(tokens.shape[0], generator=generator), min_ratio)
    patterns = []
    for b in range(tokens.shape[0]):
        period = first_run_length(content[b])
        if period == 0:  # nothing visual to mask (the official code would fail here)
            patterns.append(None)
            continue
        n = num_masked_for(period, ratio[b])
        # Official pattern: position j masked iff argsort(rand)[j] < n.
        perm = torch.rand(1, period, generator=generator).argsort(dim=-1)[0]
        patterns.append(perm < n)
    out_tokens, out_labels, masked = apply_tube_patterns(tokens, labels, content, patterns,
                                                         vocab.mask, IGNORE_INDEX)
    return out_tokens, out_labels, TubeMaskResult(out_tokens, out_labels, masked, content, ratio)


def ratio_uniform(key: int) -> float:
    """The U[0,1) draw behind a sample's mask ratio, from its counter-based key id."""
    return mix32_int(key_base(key) ^ _RATIO_SALT) / 2.0 ** 32


def tube_mask_from_keys(tokens: torch.Tensor, labels: torch.Tensor, vocab: LumosVocab,
                        keys: Sequence[int], min_ratio: float = 0.7, pattern: str = "tube") -> TubeMaskResult:
    """Tube masking with one counter-based random key per sample (training path).

    ``keys[b]`` is a non-negative int64 id (see :func:`lumos_megatron.ardf.sample_random_key`);
    the ratio comes from :func:`ratio_uniform` and the spatial pattern marks the ``n`` positions
    with the smallest counter keys (``lumos_megatron.ops.tube_pattern``). The pass that applies
    the patterns is ``ops.tube_mask_apply`` (csrc kernel or its reference).

    ``pattern="random"`` (``ardf.mask_pattern``, the ablation) gives every latent frame its own
    pattern (``ops.tube_patterns.frame_patterns``: same ratio, same count, same first frame), in
    PyTorch rather than the fused kernel.
    """
    if pattern not in ("tube", "random"):
        raise ValueError(f"mask pattern {pattern!r}: expected 'tube' or 'random'")
    _check_batch(tokens, labels)
    if len(keys) != tokens.shape[0]:
        raise ValueError(f"{len(keys)} keys (random streams) for a batch of {tokens.shape[0]} samples")
    content = content_mask(labels, vocab)
    u = torch.tensor([ratio_uniform(int(s)) for s in keys], dtype=torch.float32)
    ratio = mask_ratio(u, min_ratio)
    periods, counts = [], []
    for b in range(tokens.shape[0]):
        period = first_run_length(content[b].cpu())
        periods.append(period)
        counts.append(num_masked_for(period, ratio[b]) if period else 0)
    if pattern == "random":
        patterns = []
        for b in range(tokens.shape[0]):
            if not periods[b] or not counts[b]:
                patterns.append(None)
                continue
            frames = -(-int(content[b].sum()) // periods[b])
            patterns.append(frame_patterns(int(keys[b]), periods[b], counts[b], frames))
        out_tokens, out_labels, masked = apply_tube_patterns(tokens, labels, content, patterns, vocab.mask,
                                                             IGNORE_INDEX)
        return TubeMaskResult(out_tokens, out_labels, masked, content, ratio)
    dev = tokens.device
    as_long = dict(dtype=torch.long, device=dev)
    out_tokens, out_labels, masked = tube_mask_apply(
        tokens, labels, content, torch.tensor(periods, **as_long), torch.tensor(counts, **as_long),
        torch.tensor([int(s) for s in keys], **as_long), vocab.mask, IGNORE_INDEX)
    return TubeMaskResult(out_tokens, out_labels, masked, content, ratio)


def _check_batch(tokens: torch.Tensor, labels: torch.Tensor) -> None:
    if tokens.dim() != 2 or tokens.shape != labels.shape:
        raise ValueError(f"tokens and labels must both be [B, L]; got {tuple(tokens.shape)} and "
                         f"{tuple(labels.shape)}")
    if tokens.dtype != torch.long or labels.dtype != torch.long:
        raise ValueError(f"tokens and labels must be int64, got {tokens.dtype} and {labels.dtype}")
