"""MM-RoPE (docs/method.md §2): per-token 3D position ids and rotary angles for Lumos-1 sequences.

Pure PyTorch (no megatron import) so it can run in the data pipeline and in unit tests.

Positions (§2.3). Every token has a 1D position ``p`` = its sequence index. Visual *content*
tokens (the H_l·(W_l+1) tokens after ``8197, Hgrid, Wgrid`` in each frame block, new-lines
included) also get 3D ids ``t = P0 + 4f``, ``h = P0 + 8r``, ``w = P0 + 8c`` where P0 is the index of
the first content token of the sample, ``f`` the 0-based frame counter over the sequence, ``r`` the
latent row and ``c`` the latent column (``c = W_l`` for the new-line). Non-content tokens carry
``p`` on all three rows of ``.thw``, so ``.thw`` alone defines every token's rotation.

Angles (§2.1–2.2). ``angle[b, s, c] = pos_axis(c)(b, s) · inv_freq[c mod d/2]`` in fp32, laid out
in HF "rotate_half" order (channel c pairs with c + d/2). Variants (paper ablations):

* ``"mm_rope"`` (default): axes interleaved in groups of 16 channels,
  ``c mod 16 ∈ {0..3} → t, {4,5,8,9,12,13} → h, {6,7,10,11,14,15} → w``; d % 32 == 0;
* ``"3d_contiguous"``: contiguous sections in frequency-index space, t:h:w = 2:3:3; d % 16 == 0;
* ``"1d"``: plain 1D RoPE for every token (all channels use ``p``).

Megatron path. A ``[3, B, L]`` tensor from :func:`effective_positions` (3D ids for content
tokens, ``p`` on all rows otherwise; ``p`` everywhere for ``"1d"``) can travel through megatron's
``position_ids`` argument; :func:`angles_from_effective_positions` turns it into ``[B, L, d]``
angles, and ``angles.transpose(0, 1)[:, :, None, :]`` is the ``[s, b, 1, d]`` ``freqs`` for
``apply_rotary_pos_emb(..., rotary_interleaved=False)``.

Inputs: ``tokens`` is ``[B, L]``; a 1-D ``[L]`` tensor is treated as a batch of one and results
keep the batch dimension (``B = 1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from lumos_megatron.config.schema import DEFAULT_ROPE_POSITION_SCALE
from lumos_megatron.models.rope_variants import ROPE_VARIANTS, head_dim_problem
from lumos_megatron.vocab import LumosVocab, VideoLayout, parse_batch

# The default scale of the latent indices before P0 is added (§2.3): the video tokenizer's
# compression (Cosmos DV4x8x8); ``model.rope_position_scale`` sets another.
DEFAULT_POSITION_SCALE = DEFAULT_ROPE_POSITION_SCALE

# Axis of each frequency index within one 16-frequency MM-RoPE meta group (§2.2): 0=t, 1=h, 2=w.
_MM_GROUP = (0, 0, 0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2)


@dataclass(frozen=True)
class MMRoPEPositions:
    """Per-token position ids of a batch.

    text: [B, L] long, 1D positions 0..L-1.
    thw: [3, B, L] long, (t, h, w) for content tokens and the 1D position for all other tokens.
    is_visual: [B, L] bool, True for visual content tokens (codes and new-lines of frame blocks).
    """

    text: torch.Tensor
    thw: torch.Tensor
    is_visual: torch.Tensor

    def to(self, device) -> "MMRoPEPositions":
        """Return a copy with all tensors moved to ``device``."""
        return MMRoPEPositions(self.text.to(device), self.thw.to(device), self.is_visual.to(device))


def mm_rope_positions(tokens: torch.Tensor, vocab: LumosVocab,
                      scale: Sequence[int] = DEFAULT_POSITION_SCALE) -> MMRoPEPositions:
    """Compute MM-RoPE position ids for ``tokens`` ([B, L] or [L] → B = 1) per sample (§2.3).

    A content token of latent frame f, row r, column c gets ``(P0 + s_t f, P0 + s_h r, P0 + s_w c)``
    with ``scale = (s_t, s_h, s_w)`` (default the tokenizer's compression, 4 x 8 x 8).
    Frame geometry comes from the size tokens (validated by :func:`parse_layout`), so masked
    inputs (mask id at any content position, new-lines included) give the same ids as clean ones.
    Raises ValueError naming the sample and position on a malformed frame structure.
    """
    device = tokens.device if isinstance(tokens, torch.Tensor) else torch.device("cpu")
    return positions_from_layouts(parse_batch(tokens, vocab), device, scale)


def positions_from_layouts(layouts: Sequence[VideoLayout], device=None,
                           scale: Sequence[int] = DEFAULT_POSITION_SCALE) -> MMRoPEPositions:
    """:func:`mm_rope_positions` of already parsed samples (all of one length)."""
    s_t, s_h, s_w = (int(v) for v in scale)
    bsz = len(layouts)
    length = layouts[0].length if layouts else 0
    text = torch.arange(length, dtype=torch.long).unsqueeze(0).expand(bsz, length).contiguous()
    thw = text.unsqueeze(0).repeat(3, 1, 1)
    is_visual = torch.zeros(bsz, length, dtype=torch.bool)
    for b, layout in enumerate(layouts):
        p0 = layout.p0
        for fr in layout.frames:
            # One vectorized write per frame: content index → (row, col) of the (W_l+1)-wide grid.
            idx = torch.arange(fr.num_content, dtype=torch.long)
            row, col = idx // (fr.width + 1), idx % (fr.width + 1)
            sl = slice(fr.content_start, fr.content_end)
            thw[0, b, sl] = p0 + s_t * fr.index
            thw[1, b, sl] = p0 + s_h * row
            thw[2, b, sl] = p0 + s_w * col
            is_visual[b, sl] = True
    return MMRoPEPositions(text, thw, is_visual).to(device or "cpu")


def _check_head_dim(head_dim: int, variant: str) -> None:
    """Validate ``variant`` and the head-dim constraint it implies (``rope_variants``)."""
    problem = head_dim_problem(head_dim, variant)
    if problem:
        raise ValueError(problem)


def channel_axes(head_dim: int, variant: str = "mm_rope") -> torch.Tensor:
    """Axis of every output channel, long [head_dim] with 0 = t, 1 = h, 2 = w.

    Channels c and c + d/2 (a rotate-half pair) always share an axis. For ``"1d"`` every channel
    reports axis 0; this is harmless because effective positions of that variant carry the 1D
    position on all three rows.
    """
    _check_head_dim(head_dim, variant)
    half = head_dim // 2
    if variant == "mm_rope":
        per_freq = torch.tensor(_MM_GROUP, dtype=torch.long).repeat(half // 16)
    elif variant == "3d_contiguous":
        n_t = half * 2 // 8
        n_h = half * 3 // 8
        per_freq = torch.cat(
            [
                torch.zeros(n_t, dtype=torch.long),
                torch.ones(n_h, dtype=torch.long),
                torch.full((half - n_t - n_h,), 2, dtype=torch.long),
            ]
        )
    else:
        per_freq = torch.zeros(half, dtype=torch.long)
    return torch.cat([per_freq, per_freq])


def rope_inv_freq(head_dim: int, base: float = 10000.0, device=None) -> torch.Tensor:
    """fp32 inverse frequencies ``base^(-2k/d)`` for k = 0..d/2-1, computed as the official code
    does (fp32 exponent, then reciprocal) so tables agree to fp32 rounding."""
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even number, got {head_dim}")
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (float(base) ** exponent)


def effective_positions(positions: MMRoPEPositions, variant: str = "mm_rope") -> torch.Tensor:
    """[3, B, L] long positions that alone determine the rotation of every token.

    3D ids for visual content tokens and the 1D position on all rows for other tokens (selected
    explicitly through ``is_visual``); the 1D position everywhere for ``"1d"``. This is the tensor
    to pass through megatron's ``position_ids``.
    """
    if variant not in ROPE_VARIANTS:
        raise ValueError(f"unknown RoPE variant {variant!r}; expected one of {ROPE_VARIANTS}")
    text3 = positions.text.unsqueeze(0).expand_as(positions.thw)
    if variant == "1d":
        return text3.clone()
    return torch.where(positions.is_visual.unsqueeze(0), positions.thw, text3)


def angles_from_effective_positions(
    eff_positions: torch.Tensor, head_dim: int, base: float = 10000.0, variant: str = "mm_rope"
) -> torch.Tensor:
    """fp32 rotary angles [B, L, head_dim] from [3, B, L] effective positions.

    ``angle[b, s, c] = float(eff[axis(c), b, s]) * inv_freq[c mod d/2]``, a single fp32 product
    like the official fp32 (autocast-disabled) table. For megatron feed
    ``angles.transpose(0, 1)[:, :, None, :]`` to ``apply_rotary_pos_emb`` (rotate-half layout).
    """
    if eff_positions.dim() != 3 or eff_positions.shape[0] != 3:
        raise ValueError(f"effective positions must be [3, B, L], got {tuple(eff_positions.shape)}")
    axes = channel_axes(head_dim, variant).to(eff_positions.device)
    inv = rope_inv_freq(head_dim, base, device=eff_positions.device)
    inv_full = torch.cat([inv, inv])
    if variant == "1d":
        # Row 0 already holds the 1D position; avoid gathering d copies.
        return eff_positions[0].float().unsqueeze(-1) * inv_full
    pos = eff_positions.float().permute(1, 2, 0)  # [B, L, 3]
    return pos[..., axes] * inv_full


def rotary_angles(
    positions: MMRoPEPositions, head_dim: int, base: float = 10000.0, variant: str = "mm_rope"
) -> torch.Tensor:
    """fp32 rotary angles [B, L, head_dim] for ``positions``; cos/sin of it are the RoPE tables."""
    return angles_from_effective_positions(
        effective_positions(positions, variant), head_dim, base, variant
    )


def mm_rope_cos_sin(
    positions: MMRoPEPositions, head_dim: int, base: float = 10000.0, variant: str = "mm_rope"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, each fp32 [B, L, head_dim] in rotate-half layout (thin wrapper over
    :func:`rotary_angles`); cast to the activation dtype at the point of use."""
    angles = rotary_angles(positions, head_dim, base, variant)
    return angles.cos(), angles.sin()
