"""The model family of a scaling ladder: every shape follows from its width by fixed rules.

* **Fixed head dim** ``d`` (MM-RoPE needs a multiple of 32): widths are multiples of ``d`` and
  ``heads = width / d``.
* **Constant aspect ratio** ``width / depth = aspect`` (Kaplan et al. 2020, "Scaling Laws for
  Neural Language Models", §3.1 and Fig. 5: at fixed non-embedding size the loss changes by a few
  percent only over aspect ratios of roughly 20 to 200, so one ratio gives a one-parameter
  family): ``depth = max(1, round(width / aspect))``.
* **GQA groups**: the largest divisor of ``heads`` not above ``heads / gqa_ratio`` (at least 1).
* **SwiGLU width**: ``ffn = ffn_ratio x width`` rounded up to a multiple of ``ffn_multiple``.

The defaults (d = 64, aspect 128, GQA 4:1, ffn 4x) reproduce the repository's 1B recipe
(width 2048: 16 layers, 32 heads, 8 groups, ffn 8192), so a ladder extrapolates to it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import List, Literal

from lumos_megatron.config.schema import ModelConfig
from lumos_megatron.models.parameter_counts import parameter_counts

SizeBy = Literal["non_embedding", "total"]
SIZE_BY = ("non_embedding", "total")


@dataclass(frozen=True)
class ShapeRule:
    """The width → shape rules of a ladder family."""

    head_dim: int = 64
    """Attention head dim of every member (a multiple of 32 for MM-RoPE)."""
    aspect: float = 128.0
    """width / depth (Kaplan et al. 2020 §3.1)."""
    gqa_ratio: int = 4
    """Query heads per key/value group (at most; groups divide the heads)."""
    ffn_ratio: float = 4.0
    """SwiGLU inner width / model width."""
    ffn_multiple: int = 64
    """The SwiGLU width is rounded up to a multiple of this."""

    def check(self) -> None:
        """ValueError naming the first impossible rule value."""
        if self.head_dim < 1 or self.head_dim % 32:
            raise ValueError(f"head dim {self.head_dim} must be a positive multiple of 32 (MM-RoPE)")
        if self.aspect <= 0 or self.gqa_ratio < 1 or self.ffn_ratio <= 0 or self.ffn_multiple < 1:
            raise ValueError("aspect and ffn ratio must be > 0, GQA ratio and ffn multiple >= 1")


@dataclass(frozen=True)
class LadderShape:
    """One member of the family and its parameter counts."""

    width: int
    depth: int
    heads: int
    groups: int
    ffn: int
    head_dim: int
    total_params: int
    non_embedding_params: int

    def params(self, size_by: SizeBy) -> int:
        """The size a ladder is laid out by: non-embedding or total parameters."""
        return self.non_embedding_params if size_by == "non_embedding" else self.total_params

    def apply(self, model: ModelConfig) -> ModelConfig:
        """``model`` (the base recipe's section: vocabulary, norms, RoPE...) with this shape."""
        return dataclasses.replace(model, num_layers=self.depth, hidden_size=self.width,
                                   ffn_hidden_size=self.ffn, num_attention_heads=self.heads,
                                   num_query_groups=self.groups, kv_channels=self.head_dim)

    @property
    def label(self) -> str:
        """Short name: ``w<width>-l<depth>``."""
        return f"w{self.width}-l{self.depth}"


def kv_groups(heads: int, gqa_ratio: int) -> int:
    """The largest divisor of ``heads`` that is at most ``heads / gqa_ratio`` (at least 1)."""
    limit = max(1, heads // gqa_ratio)
    return max(g for g in range(1, limit + 1) if heads % g == 0)


def shape_for_width(width: int, rule: ShapeRule, base: ModelConfig) -> LadderShape:
    """The family member of ``width`` (a multiple of the head dim), counted on ``base``."""
    if width < rule.head_dim or width % rule.head_dim:
        raise ValueError(f"width {width} is not a positive multiple of the head dim {rule.head_dim}")
    heads = width // rule.head_dim
    ffn = rule.ffn_multiple * math.ceil(rule.ffn_ratio * width / rule.ffn_multiple)
    shape = LadderShape(width, max(1, round(width / rule.aspect)), heads, kv_groups(heads, rule.gqa_ratio),
                        ffn, rule.head_dim, 0, 0)
    counts = parameter_counts(shape.apply(base))
    return dataclasses.replace(shape, total_params=counts.total, non_embedding_params=counts.non_embedding)


def family_between(rule: ShapeRule, base: ModelConfig, n_min: float, n_max: float,
                   size_by: SizeBy) -> List[LadderShape]:
    """Every family member whose size lies in [n_min, n_max], smallest first."""
    rule.check()
    out: List[LadderShape] = []
    width = rule.head_dim
    while True:
        shape = shape_for_width(width, rule, base)
        n = shape.params(size_by)
        if n > n_max:
            return out
        if n >= n_min:
            out.append(shape)
        width += rule.head_dim


def ladder_shapes(rule: ShapeRule, base: ModelConfig, n_min: float, n_max: float,
                  size_by: SizeBy = "non_embedding", num_sizes: int = 0) -> List[LadderShape]:
    """``num_sizes`` members spread evenly in log size over [n_min, n_max] (the member nearest
    each log-spaced target, duplicates dropped), or every member when ``num_sizes`` is 0.
    ValueError when no member lies in the range."""
    if not 0 < n_min <= n_max:
        raise ValueError(f"need 0 < n-min <= n-max (got {n_min:g}, {n_max:g})")
    members = family_between(rule, base, n_min, n_max, size_by)
    if not members:
        raise ValueError(f"no {size_by.replace('_', '-')} size of the family lies in [{n_min:g}, {n_max:g}] "
                         f"(head dim {rule.head_dim}, aspect {rule.aspect:g}); widen the range")
    if num_sizes <= 0 or num_sizes >= len(members):
        return members
    lo, hi = (math.log(members[0].params(size_by)), math.log(members[-1].params(size_by)))
    targets = [lo + (hi - lo) * i / max(num_sizes - 1, 1) for i in range(num_sizes)]
    chosen = {min(members, key=lambda s: abs(math.log(s.params(size_by)) - t)).width for t in targets}
    return [s for s in members if s.width in chosen]
