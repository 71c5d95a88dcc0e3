"""Per-sample training-time rewrites that precede the tube mask (docs/method.md §4, order of
operations): frame dropping, the duration/fps prefix rewrite and the eligibility rule of the
classifier-free-guidance drop (the drop itself is ``vocab.unconditional``). Each works on one unpadded 1-D ``(tokens, labels)`` pair and returns new tensors.
"""

from __future__ import annotations

from typing import Tuple

import torch

from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab

Sample = Tuple[torch.Tensor, torch.Tensor]


def _check_pair(tokens: torch.Tensor, labels: torch.Tensor) -> None:
    if tokens.dim() != 1 or tokens.shape != labels.shape:
        raise ValueError(f"expected 1-D tokens and labels of equal length, got {tuple(tokens.shape)} "
                         f"and {tuple(labels.shape)}")


def keep_first_frames(tokens: torch.Tensor, labels: torch.Tensor, max_frames: int,
                      vocab: LumosVocab) -> Sample:
    """Drop every latent frame block after the first ``max_frames`` (the official keeps 7).

    The blocks 8197 … 8196 past the limit are removed from tokens and labels; the video end and
    trailing separator stay. Samples with fewer frames are returned unchanged.
    """
    _check_pair(tokens, labels)
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    starts = (tokens == vocab.frame_start).nonzero().flatten()
    ends = (tokens == vocab.frame_end).nonzero().flatten()
    if starts.numel() <= max_frames:
        return tokens, labels
    if ends.numel() < starts.numel():
        raise ValueError(f"frame start at position {int(starts[ends.numel()])} has no frame end")
    cut_from, cut_to = int(starts[max_frames]), int(ends[starts.numel() - 1]) + 1
    keep = torch.ones_like(tokens, dtype=torch.bool)
    keep[cut_from:cut_to] = False
    return tokens[keep], labels[keep]


def rewrite_duration_fps(tokens: torch.Tensor, labels: torch.Tensor, duration: int, fps: int,
                         vocab: LumosVocab) -> Sample:
    """Set the video prefix ``9004, 8804+duration, 8804+fps`` (tokens and labels alike).

    The official rewrite uses the RGB clip values: 2 s at 12 fps for videos, 1, 1 for images.
    """
    _check_pair(tokens, labels)
    hits = (tokens == vocab.video_start).nonzero().flatten()
    if hits.numel() == 0:
        raise ValueError(f"no video start {vocab.video_start} in the sample")
    at = int(hits[0])
    if at + 2 >= tokens.numel():
        raise ValueError(f"video start at position {at} is not followed by duration and fps tokens")
    tokens, labels = tokens.clone(), labels.clone()
    for offset, value in ((1, duration), (2, fps)):
        tok = vocab.size_token(value)
        tokens[at + offset] = tok
        if int(labels[at + offset]) != IGNORE_INDEX:  # labels mirror tokens in the assistant turn
            labels[at + offset] = tok
    return tokens, labels


def cfg_drop_eligible(tokens: torch.Tensor, vocab: LumosVocab) -> bool:
    """Official rule: the sample ends with ``9005, 8710`` and has exactly one 9004 and one 9005."""
    if tokens.numel() < 2:
        return False
    return (int(tokens[-2]) == vocab.video_end and int(tokens[-1]) == vocab.separator
            and int((tokens == vocab.video_start).sum()) == 1
            and int((tokens == vocab.video_end).sum()) == 1)

