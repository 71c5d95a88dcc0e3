"""Finite scalar quantization (FSQ, Mentzer et al. 2023) with Cosmos-Tokenizer's conventions.

Each of ``D = len(levels)`` channels is bounded, rounded to one of ``L_i`` integer levels and
renormalised to [-1, 1]. Conventions shared with Cosmos ``FSQuantizer`` (docs/method.md §1.1), so that
our indices mean what Cosmos indices mean:

* bound: ``tanh(z + atanh(offset / half_l)) * half_l - offset`` with ``half_l = (L - 1)(1 + eps) / 2``
  and ``offset = 0.5`` for even ``L`` (else 0): even levels get the asymmetric integer range
  ``[-L/2, L/2 - 1]`` (8 -> -4..3), odd levels the symmetric ``[-(L-1)/2, (L-1)/2]`` (5 -> -2..2);
* normalised code ``c = q / (L // 2)``; digit ``d = c * (L // 2) + L // 2`` in ``[0, L)``;
* index ``= sum_i d_i * basis_i`` with ``basis = cumprod([1] + levels[:-1])`` (the first channel is
  the fastest-varying digit): for (8, 8, 8, 5, 5, 5), basis = [1, 8, 64, 512, 2560, 12800].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_LEVELS = (8, 5, 5, 5)          # 1,000 codes: the built-in tokenizer's default
COSMOS_LEVELS = (8, 8, 8, 5, 5, 5)     # 64,000 codes: Cosmos-Tokenizer DV4x8x8


def fsq_basis(levels: Sequence[int]) -> torch.Tensor:
    """Mixed-radix basis ``cumprod([1] + levels[:-1])`` as int64."""
    levels = [int(v) for v in levels]
    return torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.int64), dim=0)


class FSQuantizer(nn.Module):
    """FSQ over the channel axis ``dim`` of a feature map, with straight-through rounding.

    Args:
        levels: number of levels per channel, each >= 2.
        eps: widening of the bound so that the extreme levels are reached (Cosmos uses 1e-3).
    """

    def __init__(self, levels: Sequence[int] = DEFAULT_LEVELS, eps: float = 1e-3):
        super().__init__()
        levels = tuple(int(v) for v in levels)
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must be a non-empty sequence of integers >= 2, got {levels}")
        self.levels: tuple[int, ...] = levels
        self.eps = float(eps)
        self.codebook_size = 1
        for v in levels:
            self.codebook_size *= v
        # Non-persistent buffers: they follow .to(device) but are rebuilt from `levels`, so
        # checkpoints only need the config.
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int64), persistent=False)
        self.register_buffer("_basis", fsq_basis(levels), persistent=False)

    @property
    def dim(self) -> int:
        """Number of quantized channels (``len(levels)``)."""
        return len(self.levels)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash channel-last ``z [..., D]`` into each channel's level range (before rounding)."""
        levels = self._levels.to(z.dtype)
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Channel-last ``z [..., D]`` -> normalised codes in [-1, 1], straight-through gradient."""
        bounded = self.bound(z)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded / (self._levels // 2).to(z.dtype)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Normalised channel-last codes ``[..., D]`` -> int64 indices ``[...]``."""
        if codes.shape[-1] != self.dim:
            raise ValueError(f"codes must have {self.dim} channels last (levels {self.levels}), "
                             f"got shape {tuple(codes.shape)}")
        half_width = self._levels // 2
        digits = torch.round(codes.float() * half_width + half_width).long()
        return (digits * self._basis).sum(dim=-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """int indices ``[...]`` -> normalised float32 channel-last codes ``[..., D]``."""
        if indices.dtype.is_floating_point:
            raise TypeError(f"indices must be integers, got {indices.dtype}")
        digits = (indices.long().unsqueeze(-1) // self._basis) % self._levels
        half_width = self._levels // 2
        return (digits - half_width).float() / half_width.float()

    def forward(self, z: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize ``z`` whose channel axis ``dim`` has ``D`` entries.

        Returns:
            ``(codes, indices)``: codes with the shape of ``z`` (normalised, straight-through
            gradient to ``z``), and int64 indices with axis ``dim`` removed.
        """
        if z.shape[dim] != self.dim:
            raise ValueError(f"FSQ with levels {self.levels} needs {self.dim} channels on axis {dim}, "
                             f"got shape {tuple(z.shape)}")
        # Quantize in float32 whatever the model dtype: in bf16 the bounded values near 3.5 are
        # spaced 1/64 apart, enough to move many of them across a rounding boundary.
        z_last = z.movedim(dim, -1).float()
        codes = self.quantize(z_last)
        indices = self.codes_to_indices(codes.detach())
        return codes.to(z.dtype).movedim(-1, dim), indices

    def extra_repr(self) -> str:
        return f"levels={self.levels}, codebook_size={self.codebook_size}"
