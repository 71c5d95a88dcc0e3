"""Collation of unpadded ``(tokens, labels)`` samples into fixed-length [B, S] batches, and of
padded rows into one packed row (``data.packing``)."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab


def pad_samples(samples: Sequence[Tuple[torch.Tensor, torch.Tensor]], seq_length: int,
                vocab: LumosVocab, sample_indices: Sequence[int] = ()) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-pad every sample to ``seq_length`` with the pad id (0) and label -100, as the
    official collate does. A sample longer than ``seq_length`` is an error naming it: cutting a
    frame block in half would silently corrupt its layout."""
    tokens = torch.full((len(samples), seq_length), vocab.pad, dtype=torch.long)
    labels = torch.full((len(samples), seq_length), IGNORE_INDEX, dtype=torch.long)
    for b, (tok, lab) in enumerate(samples):
        if tok.numel() > seq_length:
            name = f"sample {sample_indices[b]}" if len(sample_indices) > b else f"batch row {b}"
            raise ValueError(f"{name} has {tok.numel()} tokens, more than data.seq_length = "
                             f"{seq_length}; raise data.seq_length or lower ardf.max_latent_frames")
        tokens[b, : tok.numel()] = tok
        labels[b, : lab.numel()] = lab
    return tokens, labels


def pack_rows(rows: torch.Tensor, lengths: Sequence[int], seq_length: int,
              fill: int) -> torch.Tensor:
    """The first ``lengths[b]`` entries of each row of ``rows`` ([B, S] tensors, one per
    sample), concatenated in order and right-filled with ``fill`` to ``seq_length``: [1, seq_length]."""
    total = sum(int(n) for n in lengths)
    if total > seq_length:
        raise ValueError(f"{len(lengths)} samples of {total} tokens do not fit a packed sequence of "
                         f"{seq_length}; raise data.seq_length")
    out = torch.full((1, seq_length), fill, dtype=rows.dtype)
    start = 0
    for b, n in enumerate(lengths):
        out[0, start:start + int(n)] = rows[b, :int(n)]
        start += int(n)
    return out


def sample_lengths(samples: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> List[int]:
    """Token count of each unpadded sample."""
    return [int(tokens.numel()) for tokens, _ in samples]
