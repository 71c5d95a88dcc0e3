"""Megatron-side rotary module: MM-RoPE (and its ablation variants) through GPTModel's ``'mrope'`` hook.

``GPTModel._preprocess`` calls ``self.rotary_pos_emb(position_ids, self.mrope_section, cp_group=…)``
when ``position_embedding_type == 'mrope'`` and feeds the result, per-token angles ``[s, b, 1, d]``,
to every layer's ``apply_rotary_pos_emb`` (unfused, rotate-half). Attaching this module there
needs no fork and no override of private methods (docs/megatron.md §1).

``position_ids`` arrives either as ``[b, s]`` (1D positions) or as ``[3, b, s]`` effective
positions from :func:`lumos_megatron.models.mm_rope.effective_positions`; the angle formula is the
one in ``mm_rope`` (single implementation). Under context parallelism the data side has already
sliced positions like the tokens, so no CP slicing happens here.
"""

from __future__ import annotations

import torch
from torch import nn

from lumos_megatron.models.mm_rope import angles_from_effective_positions, channel_axes


class LumosRotaryEmbedding(nn.Module):
    """Per-token rotary angles for the Lumos decoder; holds no parameters or buffers."""

    def __init__(self, head_dim: int, base: float = 10000.0, variant: str = "mm_rope"):
        super().__init__()
        channel_axes(head_dim, variant)  # validates variant and head_dim early, at model build
        self.head_dim = head_dim
        self.base = base
        self.variant = variant

    def forward(self, position_ids: torch.Tensor, mrope_section=None, cp_group=None) -> torch.Tensor:
        """``[b, s]`` or ``[3, b, s]`` long positions → fp32 angles ``[s, b, 1, head_dim]``."""
        if position_ids.dim() == 2:
            position_ids = position_ids.unsqueeze(0).expand(3, -1, -1)
        angles = angles_from_effective_positions(position_ids, self.head_dim, self.base, self.variant)
        return angles.transpose(0, 1).unsqueeze(2).contiguous()
