"""Reference visual cross-entropy from full logits (docs/method.md §4 step 6, the official
``CEChunked`` + ``train_with_vis_tok`` path).

Rows are the positions whose label is a visual id (``label >= visual_offset``); classes are the
visual columns only; the target is ``label - visual_offset``. Labels are *not* shifted: AR-DF
predicts each masked position from the logits at that position. Per-token losses of exactly 0
are dropped before the mean, as the official code does (``all_closs[all_closs != 0]``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lumos_megatron.vocab import LumosVocab


def visual_rows(labels: torch.Tensor, vocab: LumosVocab) -> torch.Tensor:
    """bool mask of the positions that carry visual loss (label is a visual id). The one rule:
    the AR-DF objective, this reference and the fused loss all use it."""
    return labels >= vocab.visual_offset


def visual_loss_rows(labels: torch.Tensor, vocab: LumosVocab) -> torch.Tensor:
    """Long ``[N]``: the rows of the hidden layout ``[s, b, h]`` (row ``r = s_idx * b + b_idx``)
    whose label in ``labels [b, s]`` is a visual id, ascending: the rows the fused loss
    (``losses.fused``) computes. The data side computes them on the CPU with the batch
    (``training.batch.rank_micro_batch``), because on an accelerator this ``nonzero`` (an output
    whose length depends on the values) makes the host wait for the device."""
    return visual_rows(labels.t().reshape(-1), vocab).nonzero().flatten()


def visual_token_losses(logits: torch.Tensor, labels: torch.Tensor, vocab: LumosVocab) -> torch.Tensor:
    """Per-row fp32 CE [N] over the visual columns, for the N loss rows in row-major order."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    if logits.shape[-1] != vocab.vocab_size:
        raise ValueError(f"logits have {logits.shape[-1]} columns, the vocabulary has {vocab.vocab_size}")
    rows = visual_rows(labels, vocab)
    vis_logits = logits[rows][:, vocab.visual_offset:].float()
    return F.cross_entropy(vis_logits, labels[rows] - vocab.visual_offset, reduction="none")


def visual_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, vocab: LumosVocab) -> torch.Tensor:
    """Scalar visual loss from full logits ``[B, L, V]`` and labels ``[B, L]``: the mean over
    all loss tokens of the batch (token-level, not per sample). 0 (with a graph) when no row
    carries loss."""
    losses = visual_token_losses(logits, labels, vocab)
    losses = losses[losses != 0]
    if losses.numel() == 0:
        return logits.sum() * 0.0
    return losses.mean()
