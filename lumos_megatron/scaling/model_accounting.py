"""What a Lumos configuration costs: parameter counts from the tensor shapes, and model FLOPs per
training token on a given data layout.

Parameters (``parameter_counts``) are counted from the shapes megatron allocates
(``conversion.weight_layout.DecoderShapes``): per layer the input RMSNorm, the fused QKV
``(heads + 2 groups) d x h``, the q/k LayerNorm (weight and bias of size d each, shared by all
heads), the output projection ``h x heads d``, the pre-MLP RMSNorm, SwiGLU ``fc1`` ``2f x h`` and
``fc2`` ``h x f``; then the final norm, the input embedding and the LM head (``V x h`` each, one
tensor when tied). ``non_embedding`` is everything but the input embedding and the LM head (the
scaling-law convention, as ``tools/checkpoint/inspect.py`` reports it). Groups are named as that
tool names them: embedding, output_layer, attention, mlp, norms.

FLOPs (``flops_per_token``) come from the one FLOPs model the trainer's MFU uses,
``scaling.flops.step_flops``, applied to one representative sample of the data layout: the sample
is built with the vocabulary's layout builder and padded as the trainer pads it, its allowed
frame-causal attention pairs are counted from its frame segment ids, and its AR-DF loss rows are
the expected number of masked visual codes, ``E[r] x frames x H_l x W_l`` with ``E[r]`` the mean of
the official mask-ratio schedule (``expected_mask_ratio``). Recomputation is not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, Optional, Tuple

import torch

from lumos_megatron.config.schema import LumosConfig, ModelConfig
from lumos_megatron.conversion.weight_layout import DecoderShapes
from lumos_megatron.models.frame_mask import allowed_pairs, frame_segment_ids
from lumos_megatron.objective import build_objective
from lumos_megatron.platform.parallel import sequence_length_divisor
from lumos_megatron.scaling.flops import StepFlops, step_flops
from lumos_megatron.training.data_plan import step_seq_length
from lumos_megatron.vocab import LumosVocab, build_video_sample

# Caption ids of the representative sample: plain text ids, above the reserved range (as mock data).
_TEXT_ID = 10000


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters of a Lumos decoder, by part."""

    total: int
    """Every parameter (a tied embedding/LM head counted once)."""
    embedding: int
    """Input embedding ``V x h``."""
    output_layer: int
    """LM head ``V x h`` (0 when tied to the embedding)."""
    by_group: Dict[str, int] = field(default_factory=dict)
    """embedding, output_layer, attention, mlp, norms."""

    @property
    def non_embedding(self) -> int:
        """Total minus the input embedding and the LM head."""
        return self.total - self.embedding - self.output_layer


def _layer_shapes(model: ModelConfig) -> Dict[str, Tuple[int, ...]]:
    """Per-layer megatron parameters of ``model`` (``DecoderShapes`` plus the optional parts)."""
    s = DecoderShapes.of(model)
    shapes = dict(s.megatron_layer_shapes())
    if not model.qk_layernorm:
        shapes = {k: v for k, v in shapes.items() if "q_layernorm" not in k and "k_layernorm" not in k}
    if model.add_bias_linear:
        shapes.update({"self_attention.linear_qkv.bias": (s.qkv_rows,),
                       "self_attention.linear_proj.bias": (s.hidden,),
                       "mlp.linear_fc1.bias": (2 * s.ffn,), "mlp.linear_fc2.bias": (s.hidden,)})
    return shapes


def _layer_group(name: str) -> str:
    if name.startswith("self_attention."):
        return "attention"
    if name.startswith("mlp."):
        return "mlp"
    return "norms"


def parameter_counts(model: ModelConfig) -> ParameterCounts:
    """Parameter counts of a model section (``LumosConfig.model``), from its shapes alone."""
    groups = {"embedding": model.vocab_size * model.hidden_size,
              "output_layer": 0 if model.tie_embeddings else model.vocab_size * model.hidden_size,
              "attention": 0, "mlp": 0, "norms": model.hidden_size}  # norms: the final RMSNorm
    for name, shape in _layer_shapes(model).items():
        groups[_layer_group(name)] += model.num_layers * math.prod(shape)
    return ParameterCounts(total=sum(groups.values()), embedding=groups["embedding"],
                           output_layer=groups["output_layer"], by_group=groups)


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
    return padded


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
    mock layout of ``cfg``; padded positions included, as the trainer counts tokens), by part:
    ``step_flops`` on one representative sample, divided by its length."""
    layout = layout or DataLayout.from_mock(cfg)
    tokens = representative_sample(cfg, layout)
    pairs = float(allowed_pairs(frame_segment_ids(tokens, LumosVocab(vocab_size=cfg.model.vocab_size))).sum())
    length = tokens.shape[1]
    step = step_flops(cfg, float(length), pairs, expected_loss_rows(cfg, layout))
    return step.per_token(length)


def training_flops(cfg: LumosConfig, tokens: float, layout: Optional[DataLayout] = None) -> float:
    """Model FLOPs of training ``cfg`` on ``tokens`` processed tokens (``flops_per_token x D``)."""
    return flops_per_token(cfg, layout).total * tokens
