"""Micro-batch assembly: which global samples each rank reads, and everything the model needs.

All model inputs are derived once here, on the data side, from tokens + vocabulary (DESIGN §4):
MM-RoPE effective positions ``[3, b, s]`` and the frame-causal attention mask. Every pipeline
stage builds the same batch (positions and mask are needed on every stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.models.frame_mask import frame_causal_mask
from lumos_megatron.models.mm_rope import effective_positions, mm_rope_positions
from lumos_megatron.training.context_parallel import slice_batch_for_cp
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab


@dataclass(frozen=True)
class SampleSchedule:
    """Maps (iteration, micro-batch, DP rank) to global sample indices, Megatron's sampler order:
    each global batch is split into micro-batch rounds of ``mbs x DP`` contiguous samples, DP rank
    ``d`` taking the ``d``-th block of each round."""

    global_batch_size: int
    micro_batch_size: int
    dp_size: int

    def indices(self, iteration: int, micro: int, dp_rank: int) -> List[int]:
        """Global sample indices of one micro-batch (iteration is 0-based)."""
        start = (iteration * self.global_batch_size + micro * self.micro_batch_size * self.dp_size
                 + dp_rank * self.micro_batch_size)
        return list(range(start, start + self.micro_batch_size))


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """Plain LM objective: position i predicts the label of token i+1 (ignored where that is -100)."""
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return targets


def build_model_inputs(tokens: torch.Tensor, targets: torch.Tensor, cfg: LumosConfig,
                       vocab: LumosVocab) -> Dict[str, torch.Tensor]:
    """``tokens``/``targets`` [b, s] → the dict the forward step consumes.

    ``labels`` are the targets with ignored positions set to 0 (megatron's vocab-parallel CE has
    no ignore index), ``loss_mask`` marks real targets, ``position_ids`` are the [3, b, s] effective
    MM-RoPE positions of ``cfg.model.rope_variant`` and ``attention_mask`` is megatron's
    convention (bool [b, 1, s, s], True = masked out) of the frame-causal mask.
    """
    positions = mm_rope_positions(tokens, vocab)
    allowed = frame_causal_mask(tokens, vocab)
    loss_mask = (targets != IGNORE_INDEX)
    return {
        "tokens": tokens,
        "labels": torch.where(loss_mask, targets, torch.zeros_like(targets)),
        "loss_mask": loss_mask.float(),
        "position_ids": effective_positions(positions, cfg.model.rope_variant),
        "attention_mask": (~allowed).unsqueeze(1),
    }


def micro_batch_iterator(dataset, cfg: LumosConfig, vocab: LumosVocab, schedule: SampleSchedule,
                         dp_rank: int, start_iteration: int, num_microbatches: int,
                         device: torch.device, cp_rank: int = 0) -> Iterator[Dict[str, torch.Tensor]]:
    """Endless iterator over this rank's micro-batches (its CP share), from ``start_iteration`` on."""
    iteration = start_iteration
    while True:
        for micro in range(num_microbatches):
            samples = [dataset[i] for i in schedule.indices(iteration, micro, dp_rank)]
            tokens = torch.stack([s[0] for s in samples])
            labels = torch.stack([s[1] for s in samples])
            batch = build_model_inputs(tokens, next_token_targets(labels), cfg, vocab)
            batch = slice_batch_for_cp(batch, cfg.parallel.context_parallel_size, cp_rank)
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        iteration += 1
