"""What the model's last stage needs to replace its output layer and loss by the fused visual
cross-entropy: handed to ``models.lumos_model.build_model_chunks`` by the objective
(``Objective.loss_head``), so the model never asks which objective a run trains."""

from __future__ import annotations

from dataclasses import dataclass

from lumos_megatron.vocab import LumosVocab


@dataclass(frozen=True)
class VisualLossHead:
    """The fused chunked vocab-parallel visual CE (``losses.fused``) as the model's loss."""

    vocab: LumosVocab
    """The unified vocabulary: its visual columns are the softmax's classes."""
    chunk_rows: int = 1024
    """Loss rows per chunk (``ardf.loss_chunk_rows``)."""
