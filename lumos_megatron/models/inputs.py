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

Packed rows (``data.packing``) also name their samples' lengths (``documents``): each sample is
parsed on its own, so its positions restart at 0 and its segment ids count its own frames, and
the mask gains ``same sample`` (document ids). The padding after the last sample is one more
document, causal text that no sample sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch

from lumos_megatron.config.schema import LumosConfig, rope_position_scale
from lumos_megatron.models.attention.backends import attention_backend
from lumos_megatron.models.frame_mask import allowed_pairs, segment_ids_from_layouts
from lumos_megatron.models.mm_rope import (
    DEFAULT_POSITION_SCALE,
    MMRoPEPositions,
    effective_positions,
    positions_from_layouts,
)
from lumos_megatron.vocab import LumosVocab, parse_batch

Documents = Optional[Sequence[Sequence[int]]]
"""Per packed row, the lengths of the samples concatenated in it (None: one sample per row)."""


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
    """[b] float64: allowed (query, key) pairs of each row's mask over its real tokens (the
    samples, not their padding)."""
    document_ids: Optional[torch.Tensor] = None
    """[b, s] long for packed rows: the sample of each position (0, 1, ... in row order; the
    trailing padding is one more); None when every row is one sample."""


def build_model_inputs(tokens: torch.Tensor, vocab: LumosVocab, *, attention_backend_name: str = "sdpa",
                       rope_variant: str = "mm_rope", mask_dtype: torch.dtype = torch.float32,
                       with_attention_mask: bool = True, documents: Documents = None,
                       real_lengths: Optional[Sequence[int]] = None,
                       position_scale: Sequence[int] = DEFAULT_POSITION_SCALE) -> ModelInputs:
    """``tokens`` [b, s] (or [s] → b = 1) → :class:`ModelInputs`, from one parse of the layout.

    The mask is built where ``tokens`` are, except for backends whose mask belongs on the GPU
    (``mask_on_accelerator``: built on the current CUDA device when there is one, so it is not
    copied host-to-device; moving the batch there later is then a no-op for it). ``mask_dtype``
    is the compute dtype, for masks that are additive biases. ``with_attention_mask`` False skips
    the mask (``attention_mask`` None): a KV-cache decoder builds its own from the segment ids.
    ``documents`` marks packed rows (see the module docstring); ``real_lengths`` (unpacked rows)
    the tokens before each row's padding, so the pair count leaves padding out.
    ``position_scale`` (t, h, w) scales the latent indices of the 3D positions
    (``model.rope_position_scale``).
    Malformed layouts raise ValueError naming the sample and position.
    """
    backend = attention_backend(attention_backend_name)
    device = tokens.device if isinstance(tokens, torch.Tensor) else torch.device("cpu")
    document_ids = None
    if documents is None:
        layouts = parse_batch(tokens, vocab)
        segments = segment_ids_from_layouts(layouts, device)
        positions = positions_from_layouts(layouts, device, position_scale)
        num_frames = [layout.num_frames for layout in layouts]
        pairs = allowed_pairs(segments, real_lengths)
    else:
        segments, positions, document_ids, num_frames, pairs = _packed_parse(tokens, vocab, documents, device,
                                                                             position_scale)
    mask_segments, mask_documents = segments, document_ids
    if backend.mask_on_accelerator and torch.cuda.is_available() and segments.device.type == "cpu":
        mask_segments = segments.to(torch.cuda.current_device())
        mask_documents = None if document_ids is None else document_ids.to(mask_segments.device)
    mask = None
    if with_attention_mask:
        mask = (backend.build_mask(mask_segments, mask_dtype) if mask_documents is None else
                backend.build_mask(mask_segments, mask_dtype, document_ids=mask_documents))
    return ModelInputs(
        position_ids=effective_positions(positions, rope_variant),
        attention_mask=mask,
        segment_ids=segments,
        num_frames=torch.tensor(num_frames, dtype=torch.long),
        attention_pairs=pairs,
        document_ids=document_ids,
    )


def _packed_parse(tokens: torch.Tensor, vocab: LumosVocab, documents: Sequence[Sequence[int]], device,
                  position_scale: Sequence[int] = DEFAULT_POSITION_SCALE):
    """Segment ids, positions, document ids, frames and real pairs of packed rows, each sample
    parsed alone (``build_model_inputs`` with ``documents``)."""
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    if len(documents) != tokens.shape[0]:
        raise ValueError(f"{len(documents)} document lists for {tokens.shape[0]} packed rows")
    length = tokens.shape[1]
    rows_seg, rows_pos, rows_doc, frames, pairs = [], [], [], [], []
    for b, lengths in enumerate(documents):
        lengths = [int(n) for n in lengths]
        if any(n < 1 for n in lengths) or sum(lengths) > length:
            raise ValueError(f"packed row {b}: sample lengths {lengths} do not fit its {length} tokens")
        pieces = lengths + ([length - sum(lengths)] if sum(lengths) < length else [])
        seg, pos, doc, start = [], [], [], 0
        row_frames, row_pairs = 0, 0.0
        for d, n in enumerate(pieces):
            layout = parse_batch(tokens[b, start:start + n].cpu(), vocab)
            piece_seg = segment_ids_from_layouts(layout)
            seg.append(piece_seg)
            pos.append(positions_from_layouts(layout, None, position_scale))
            doc.append(torch.full((1, n), d, dtype=torch.long))
            if d < len(lengths):  # a sample, not the padding after them
                row_frames += layout[0].num_frames
                row_pairs += float(allowed_pairs(piece_seg)[0])
            start += n
        rows_seg.append(torch.cat(seg, 1))
        rows_pos.append(_cat_positions(pos))
        rows_doc.append(torch.cat(doc, 1))
        frames.append(row_frames)
        pairs.append(row_pairs)
    positions = MMRoPEPositions(torch.cat([p.text for p in rows_pos]), torch.cat([p.thw for p in rows_pos], 1),
                                torch.cat([p.is_visual for p in rows_pos])).to(device)
    return (torch.cat(rows_seg).to(device), positions, torch.cat(rows_doc).to(device), frames,
            torch.tensor(pairs, dtype=torch.float64))


def _cat_positions(pieces: List[MMRoPEPositions]) -> MMRoPEPositions:
    """Positions of consecutive pieces of one row, each restarting at 0."""
    return MMRoPEPositions(torch.cat([p.text for p in pieces], 1), torch.cat([p.thw for p in pieces], 2),
                           torch.cat([p.is_visual for p in pieces], 1))


def compute_dtype(cfg: LumosConfig) -> torch.dtype:
    """Activation dtype of a run (``train.precision``)."""
    return torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32


def model_inputs_for(tokens: torch.Tensor, cfg: LumosConfig, vocab: LumosVocab, documents: Documents = None,
                     real_lengths: Optional[Sequence[int]] = None) -> ModelInputs:
    """:func:`build_model_inputs` with the run's attention backend, rotary variant and precision."""
    return build_model_inputs(tokens, vocab, attention_backend_name=cfg.model.attention_backend,
                              rope_variant=cfg.model.rope_variant, mask_dtype=compute_dtype(cfg),
                              documents=documents, real_lengths=real_lengths,
                              position_scale=rope_position_scale(cfg))
