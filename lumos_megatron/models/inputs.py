"""Model inputs from tokens: the one path from a token batch to what the model takes.

Training, evaluation and generation all call :func:`build_model_inputs`. It parses the token
layout of every sample ONCE (``vocab.parse_batch``) and derives from that parse:

* the MM-RoPE effective positions ``[3, b, s]`` of the configured rotary variant;
* the frame segment ids ``[b, s]`` and, from them, the frame-causal mask in the form the
  configured attention backend consumes (``models.attention.backends``);
* per-sample frame statistics: latent frames and allowed attention pairs (the FLOPs model's input).

Everything is a function of the tokens and the vocabulary (docs/method.md §2.3, §3), so masked
inputs give the positions and mask of the clean sequence, and every pipeline stage can build the
same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.models.attention.backends import attention_backend
from lumos_megatron.models.frame_mask import allowed_pairs, segment_ids_from_layouts
from lumos_megatron.models.mm_rope import effective_positions, positions_from_layouts
from lumos_megatron.vocab import LumosVocab, parse_batch


@dataclass
class ModelInputs:
    """What the model needs besides the tokens, for one [b, s] token batch."""

    position_ids: torch.Tensor
    """[3, b, s] long effective MM-RoPE positions (the model's ``position_ids``)."""
    attention_mask: Any
    """The frame-causal mask in the backend's form (the model's ``attention_mask``)."""
    segment_ids: torch.Tensor
    """[b, s] long: 0 outside frame blocks, k inside the k-th (1-based) frame block."""
    num_frames: torch.Tensor
    """[b] long: latent frame blocks of each sample."""
    attention_pairs: torch.Tensor
    """[b] float64: allowed (query, key) pairs of each sample's mask."""


def build_model_inputs(tokens: torch.Tensor, vocab: LumosVocab, *, attention_backend_name: str = "sdpa",
                       rope_variant: str = "mm_rope", mask_dtype: torch.dtype = torch.float32,
                       with_attention_mask: bool = True) -> ModelInputs:
    """``tokens`` [b, s] (or [s] → b = 1) → :class:`ModelInputs`, from one parse of the layout.

    The mask is built where ``tokens`` are, except for backends whose mask belongs on the GPU
    (``mask_on_accelerator``: built on the current CUDA device when there is one, so it is not
    copied host-to-device; moving the batch there later is then a no-op for it). ``mask_dtype``
    is the compute dtype, for masks that are additive biases. ``with_attention_mask`` False skips
    the mask (``attention_mask`` None): a KV-cache decoder builds its own from the segment ids.
    Malformed layouts raise ValueError naming the sample and position.
    """
    backend = attention_backend(attention_backend_name)
    device = tokens.device if isinstance(tokens, torch.Tensor) else torch.device("cpu")
    layouts = parse_batch(tokens, vocab)
    segments = segment_ids_from_layouts(layouts, device)
    positions = positions_from_layouts(layouts, device)
    mask_segments = segments
    if backend.mask_on_accelerator and torch.cuda.is_available() and segments.device.type == "cpu":
        mask_segments = segments.to(torch.cuda.current_device())
    return ModelInputs(
        position_ids=effective_positions(positions, rope_variant),
        attention_mask=backend.build_mask(mask_segments, mask_dtype) if with_attention_mask else None,
        segment_ids=segments,
        num_frames=torch.tensor([layout.num_frames for layout in layouts], dtype=torch.long),
        attention_pairs=allowed_pairs(segments),
    )


def compute_dtype(cfg: LumosConfig) -> torch.dtype:
    """Activation dtype of a run (``train.precision``)."""
    return torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32


def model_inputs_for(tokens: torch.Tensor, cfg: LumosConfig, vocab: LumosVocab) -> ModelInputs:
    """:func:`build_model_inputs` with the run's attention backend, rotary variant and precision."""
    return build_model_inputs(tokens, vocab, attention_backend_name=cfg.model.attention_backend,
                              rope_variant=cfg.model.rope_variant, mask_dtype=compute_dtype(cfg))
