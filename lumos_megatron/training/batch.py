"""Micro-batch assembly: which global samples each rank reads, and everything the model needs.

All model inputs are derived once here, on the data side, from tokens + vocabulary (DESIGN §4):
MM-RoPE effective positions ``[3, b, s]`` and the frame-causal attention mask. Every pipeline
stage builds the same batch (positions and mask are needed on every stage).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

from lumos_megatron.ardf import ardf_batch
from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.data.collate import pad_samples
from lumos_megatron.models.attention.flex import build_frame_causal_block_mask
from lumos_megatron.models.attention.te_bias import frame_causal_attention_bias
from lumos_megatron.models.frame_mask import frame_segment_ids, mask_from_segment_ids
from lumos_megatron.models.mm_rope import effective_positions, mm_rope_positions
from lumos_megatron.scaling.flops import attention_pairs
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """Plain LM objective: position i predicts the label of token i+1 (ignored where that is -100)."""
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return targets


def build_model_inputs(tokens: torch.Tensor, targets: torch.Tensor, cfg: LumosConfig,
                       vocab: LumosVocab, segments: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """``tokens``/``targets`` [b, s] → the dict the forward step consumes.

    ``labels`` are the targets with ignored positions set to 0 (megatron's vocab-parallel CE has
    no ignore index), ``loss_mask`` marks real targets, ``position_ids`` are the [3, b, s] effective
    MM-RoPE positions of ``cfg.model.rope_variant``. ``attention_mask`` is the frame-causal mask in
    the form the configured ``model.attention_backend`` consumes, built once per micro-batch:

    * ``sdpa``: megatron's convention, bool [b, 1, s, s], True = masked out;
    * ``flex``: a ``FrameCausalBlockMask`` (a BlockMask whose ``.to`` also moves its segment ids);
    * ``te_bias``: an additive bias [b, 1, s, s] in the compute dtype (0 allowed, finfo.min masked).

    The flex and te_bias masks are built on the current CUDA device when there is one (otherwise
    where ``tokens`` are): the compiled CUDA block-mask builder never materialises the L x L mask
    that the eager CPU one needs, and the L x L bias is not copied host→device per micro-batch.
    The iterator's ``.to(device)`` is then a no-op for them.

    ``segments`` are the frame segment ids of ``tokens`` when the caller already has them (they
    are parsed once per micro-batch); ``attention_pairs`` counts the mask's allowed pairs for the
    FLOPs model.
    """
    positions = mm_rope_positions(tokens, vocab)
    if segments is None:
        segments = frame_segment_ids(tokens, vocab)
    backend = cfg.model.attention_backend
    if backend in ("flex", "te_bias"):
        on_device = segments
        if torch.cuda.is_available() and segments.device.type == "cpu":
            on_device = segments.to(torch.cuda.current_device())
        if backend == "flex":
            attention_mask = build_frame_causal_block_mask(on_device)
        else:
            dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
            attention_mask = frame_causal_attention_bias(on_device, dtype)
    else:
        attention_mask = (~mask_from_segment_ids(segments)).unsqueeze(1)
    loss_mask = (targets != IGNORE_INDEX)
    return {
        "tokens": tokens,
        "labels": torch.where(loss_mask, targets, torch.zeros_like(targets)),
        "loss_mask": loss_mask.float(),
        "position_ids": effective_positions(positions, cfg.model.rope_variant),
        "attention_mask": attention_mask,
        "attention_pairs": torch.tensor(attention_pairs(segments)),
    }


def training_batch(samples: Sequence[Tuple[torch.Tensor, torch.Tensor]], sample_indices: Sequence[int],
                   iteration: int, cfg: LumosConfig, vocab: LumosVocab,
                   seq_length: Optional[int] = None, number_ids=None) -> Dict[str, torch.Tensor]:
    """Unpadded samples of one micro-batch → model inputs, for the configured objective.

    AR-DF (``cfg.ardf.enabled``): the official transforms and tube mask (``ardf.ardf_batch``),
    positions and mask built on the masked input, unshifted labels, ``loss_mask`` = visual labels,
    plus ``frame_index`` (latent frame of each loss position, -1 elsewhere) and ``mask_stats``
    ``[masked, maskable]`` for reporting. Otherwise: padded samples with next-token targets.
    Both carry ``attention_pairs`` (allowed pairs of the mask, for the FLOPs model). Samples are
    padded to ``seq_length`` (default ``data.seq_length``); ``number_ids`` writes the prompt's
    frame count and fps with the dataset's text tokenizer (None: Chameleon's digits).
    """
    seq_length = seq_length or cfg.data.seq_length
    if not cfg.ardf.enabled:
        tokens, labels = pad_samples(samples, seq_length, vocab, sample_indices)
        return build_model_inputs(tokens, next_token_targets(labels), cfg, vocab)
    masked = ardf_batch(samples, sample_indices, iteration, cfg, vocab, seq_length, number_ids)
    segments = frame_segment_ids(masked.tokens, vocab)
    batch = build_model_inputs(masked.tokens, masked.labels, cfg, vocab, segments)
    carries_loss = masked.labels >= vocab.visual_offset
    batch["loss_mask"] = carries_loss.float()
    batch["frame_index"] = torch.where(carries_loss, segments - 1, torch.full_like(segments, -1))
    batch["mask_stats"] = torch.tensor([float(masked.masked.sum()), float(masked.content.sum())])
    return batch
