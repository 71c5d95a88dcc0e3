"""The rotary variants and the head-dim rule each implies (docs/method.md §2.2).

Torch-free, so that the configuration layer can type and check ``model.rope_variant`` without
loading the model stack; ``models.mm_rope`` builds the tables.

* ``mm_rope``: axes interleaved in meta groups of 16 frequencies; d/2 must hold whole groups so
  that the rotate-half pair (c, c + d/2) shares one axis: d % 32 == 0.
* ``3d_contiguous``: contiguous t:h:w = 2:3:3 sections of the d/2 frequencies: d % 16 == 0.
* ``1d``: plain RoPE, any even d.
"""

from __future__ import annotations

from typing import Literal, Optional, get_args

RopeVariant = Literal["mm_rope", "3d_contiguous", "1d"]
"""A ``model.rope_variant`` value."""
ROPE_VARIANTS = get_args(RopeVariant)

HEAD_DIM_MULTIPLE = {"mm_rope": 32, "3d_contiguous": 16, "1d": 2}
"""The head dim of each variant must be a positive multiple of this."""


def head_dim_problem(head_dim: int, variant: str) -> Optional[str]:
    """Why ``head_dim`` cannot carry ``variant`` (None when it can)."""
    if variant not in HEAD_DIM_MULTIPLE:
        return f"unknown RoPE variant {variant!r}; expected one of {ROPE_VARIANTS}"
    multiple = HEAD_DIM_MULTIPLE[variant]
    if not isinstance(head_dim, int) or head_dim <= 0 or head_dim % multiple:
        return (f"head_dim must be a positive multiple of {multiple} for RoPE variant {variant!r}, "
                f"got {head_dim}")
    return None
