"""Model FLOPs of Lumos training, counted explicitly (not ``6 x params``): of one step, and per
token of a data layout (what scaling ladders budget with).

Per token and layer (forward, multiply-add = 2 FLOPs):

* QKV projection ``2 h (n_q d + 2 n_kv d)``, output projection ``2 n_q d h``;
* SwiGLU MLP ``3 x 2 h f`` (gate, up, down).

Attention scores and the weighted sum cost ``4 d n_q`` per *allowed* (query, key) pair, so the
frame-causal mask enters through the number of allowed pairs (causal pairs plus the extra
bidirectional pairs inside each frame block), counted from the real batch.

The LM head counts what the objective needs (``Objective.lm_head_shape``): with AR-DF only the
loss rows against the visual columns (``2 h V_visual`` per loss row), otherwise every token
against the full vocabulary. Backward is twice the forward; recomputation (activation
checkpointing or the fused loss's chunk recompute) is not model FLOPs and is not counted, as in
Megatron's MFU convention.

Per token of a layout (``flops_per_token``): ``step_flops`` applied to one representative sample
of the layout, built with the vocabulary's layout builder and padded as the trainer pads it; its
allowed attention pairs are counted from its frame segment ids, and its AR-DF loss rows are the
expected number of masked visual codes, ``E[r] x frames x H_l x W_l`` with ``E[r]`` the mean of
the official mask-ratio schedule (``expected_mask_ratio``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional, Tuple

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.config.schema import head_dim
from lumos_megatron.models.frame_mask import allowed_pairs, frame_segment_ids
from lumos_megatron.objective import build_objective
from lumos_megatron.platform.parallel import sequence_length_divisor
from lumos_megatron.training.data_plan import step_seq_length
from lumos_megatron.vocab import LumosVocab, build_video_sample


def attention_pairs(segment_ids: torch.Tensor) -> float:
    """Allowed (query, key) pairs of the frame-causal mask summed over a batch of segment ids
    [B, L] (0 outside frames, k inside frame block k): causal pairs plus, per frame block of
    length n, the n(n-1)/2 keys after each query inside the block (``models.frame_mask``)."""
    return float(allowed_pairs(segment_ids).sum())


@dataclass(frozen=True)
class StepFlops:
    """Model FLOPs of one optimizer step, by part."""

    dense: float
    attention: float
    lm_head: float

    @property
    def total(self) -> float:
        """All model FLOPs of the step (forward + backward)."""
        return self.dense + self.attention + self.lm_head

    @property
    def non_embedding(self) -> float:
        """Without the LM head (DeepSeek LLM's ``M`` when counted per token)."""
        return self.dense + self.attention

    def per_token(self, tokens: float) -> "StepFlops":
        """The same parts divided by ``tokens``."""
        return StepFlops(self.dense / tokens, self.attention / tokens, self.lm_head / tokens)


def step_flops(cfg: LumosConfig, tokens: float, pairs: float, loss_rows: float) -> StepFlops:
    """FLOPs of a step that processed ``tokens`` tokens with ``pairs`` allowed attention pairs
    and ``loss_rows`` visual loss rows (all summed over the global batch)."""
    m = cfg.model
    d, h, f = head_dim(cfg), m.hidden_size, m.ffn_hidden_size
    n_q, n_kv = m.num_attention_heads, m.num_query_groups or m.num_attention_heads
    per_token_layer = 2 * h * (n_q * d + 2 * n_kv * d) + 2 * n_q * d * h + 3 * 2 * h * f
    dense = 3 * m.num_layers * per_token_layer * tokens
    attention = 3 * m.num_layers * 4 * d * n_q * pairs
    rows, columns = build_objective(cfg).lm_head_shape(tokens, loss_rows)
    lm_head = 3 * 2 * h * columns * rows
    return StepFlops(dense, attention, lm_head)


def work_weights(cfg: LumosConfig) -> Tuple[float, float]:
    """(model FLOPs per token through the dense layers, per allowed attention pair): what
    balancing packed sequences over data-parallel ranks weighs tokens and pairs by."""
    per_token = step_flops(cfg, 1.0, 0.0, 0.0)
    per_pair = step_flops(cfg, 0.0, 1.0, 0.0)
    return per_token.dense, per_pair.attention


# Caption ids of the representative sample: plain text ids, above the reserved range (as mock data).
_TEXT_ID = 10000


def expected_mask_ratio(min_ratio: float) -> float:
    """Mean of the AR-DF mask ratio ``r = max(cos(pi u / 2), min_ratio)``, u ~ U[0, 1)
    (``ardf.tube_mask.mask_ratio``), in closed form: with ``u0 = 2 acos(m) / pi``,
    ``E[r] = 2 sqrt(1 - m^2) / pi + m (1 - u0)`` (0.8002 for the official m = 0.7)."""
    m = min(max(min_ratio, 0.0), 1.0)
    u0 = 2.0 * math.acos(m) / math.pi
    return 2.0 * math.sqrt(1.0 - m * m) / math.pi + m * (1.0 - u0)


@dataclass(frozen=True)
class DataLayout:
    """Shape of a training sample: caption length, latent frames and latent grid, padded length."""

    text_tokens: int
    """Caption tokens (before the separator)."""
    frames: int
    """Latent frames of the video (1: an image); AR-DF keeps at most ``ardf.max_latent_frames``."""
    grid: Tuple[int, int]
    """Latent grid ``(H_l, W_l)`` of each frame (multiples of 4)."""
    seq_length: Optional[int] = None
    """Padded length; None: ``data.seq_length`` of the config (``pad_to_multiple`` applies)."""

    @classmethod
    def from_mock(cls, cfg: LumosConfig) -> "DataLayout":
        """The layout of the config's mock samples (``data.mock_*``)."""
        d = cfg.data
        return cls(d.mock_text_tokens, d.mock_frames, (int(d.mock_grid[0]), int(d.mock_grid[1])))


def representative_sample(cfg: LumosConfig, layout: DataLayout) -> torch.Tensor:
    """[1, L] tokens of one sample of ``layout`` (frames dropped as AR-DF does), right-padded to the
    length the trainer pads it to. ValueError when it does not fit ``data.seq_length``."""
    return _representative(cfg, layout)[0]


def _representative(cfg: LumosConfig, layout: DataLayout) -> Tuple[torch.Tensor, int]:
    """(:func:`representative_sample`, its length before padding)."""
    vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
    frames = layout.frames
    kept = build_objective(cfg, vocab).max_latent_frames
    if kept is not None:
        frames = min(frames, kept)
    codes = torch.zeros(frames, *layout.grid, dtype=torch.long)
    duration, fps = (2, 12) if frames > 1 else (1, 1)
    tokens, _ = build_video_sample(torch.full((layout.text_tokens,), _TEXT_ID), codes, duration, fps, vocab)
    limit = layout.seq_length or cfg.data.seq_length
    if tokens.numel() > limit:
        raise ValueError(f"a sample of {layout.text_tokens} text tokens and {frames} frames of "
                         f"{layout.grid[0]}x{layout.grid[1]} latents has {tokens.numel()} tokens, more "
                         f"than the sequence length {limit}")
    # The trainer's padded length (pad_to_multiple), with a stand-in stream and source.
    length = step_seq_length(SimpleNamespace(seq_length=limit),
                             SimpleNamespace(sample_length=lambda i, m: tokens.numel()), [0],
                             cfg.data.pad_to_multiple, None, sequence_length_divisor(cfg.parallel)[0])
    padded = torch.full((1, length), vocab.pad, dtype=torch.long)
    padded[0, : tokens.numel()] = tokens
    return padded, tokens.numel()


def padded_length(cfg: LumosConfig, layout: DataLayout) -> int:
    """Tokens the trainer processes per sample of ``layout`` (its padded length)."""
    return int(representative_sample(cfg, layout).shape[1])


def expected_loss_rows(cfg: LumosConfig, layout: DataLayout) -> float:
    """Expected AR-DF loss rows of one sample: masked visual codes, ``E[r]`` of each frame's
    ``H_l x W_l`` codes (masked new-lines carry no loss). Without AR-DF: 0 (not used)."""
    if not build_objective(cfg).fused_visual_loss:  # the objective decides AR-DF or not
        return 0.0
    frames = min(layout.frames, cfg.ardf.max_latent_frames)
    return expected_mask_ratio(cfg.ardf.min_mask_ratio) * frames * layout.grid[0] * layout.grid[1]


def flops_per_token(cfg: LumosConfig, layout: Optional[DataLayout] = None) -> StepFlops:
    """Model FLOPs (forward + backward) per training token of ``cfg`` on ``layout`` (default: the
    mock layout of ``cfg``), by part: ``step_flops`` of one representative sample's own tokens and
    pairs (model work leaves padding out, as the trainer counts it), divided by its padded length
    (tokens are counted with padding, as the trainer's ``tokens``)."""
    layout = layout or DataLayout.from_mock(cfg)
    tokens, real = _representative(cfg, layout)
    segments = frame_segment_ids(tokens, LumosVocab(vocab_size=cfg.model.vocab_size))
    pairs = float(allowed_pairs(segments, [real]).sum())
    step = step_flops(cfg, float(real), pairs, expected_loss_rows(cfg, layout))
    return step.per_token(tokens.shape[1])


def training_flops(cfg: LumosConfig, tokens: float, layout: Optional[DataLayout] = None) -> float:
    """Model FLOPs of training ``cfg`` on ``tokens`` processed tokens (``flops_per_token x D``)."""
    return flops_per_token(cfg, layout).total * tokens
