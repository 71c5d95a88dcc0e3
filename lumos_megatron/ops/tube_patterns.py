"""Temporal tube mask (Lumos-1 AR-DF training): one spatial mask pattern, repeated in every frame.

For a sample with period ``p`` (content positions per frame) and ``num_masked`` ``n``, the k-th
content position of its row (k = 0, 1, ... in sequence order) is masked iff
``tube_pattern(key, p, n)[k % p]``. Masked positions get ``mask_id`` as input and keep their
label; unmasked content positions get ``ignore_index`` as label (no loss); everything else is
unchanged. Samples with ``p == 0`` or ``n == 0`` are left entirely unchanged.

The pattern is a pure function of the sample's ``key`` id (counter RNG, ops/counter_rng.py), so
``tube_mask_apply_reference`` and the csrc kernels agree bit for bit.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from lumos_megatron.ops.counter_rng import pattern_keys
from lumos_megatron.ops.extension import extension_for

__all__ = ["apply_tube_patterns", "frame_patterns", "tube_mask_apply", "tube_mask_apply_reference",
           "tube_pattern"]


def tube_pattern(key: int, period: int, num_masked: int) -> torch.Tensor:
    """bool [period]: True at the ``num_masked`` positions with the smallest counter-RNG keys."""
    if not 0 <= num_masked <= period:
        raise ValueError(f"tube_pattern: num_masked {num_masked} outside [0, period={period}]")
    pattern = torch.zeros(period, dtype=torch.bool)
    if num_masked:
        pattern[pattern_keys(key, period).argsort()[:num_masked]] = True
    return pattern


def frame_patterns(key: int, period: int, num_masked: int, frames: int) -> torch.Tensor:
    """bool [frames, period]: an independent pattern per latent frame (``ardf.mask_pattern =
    random``). Frame f marks the ``num_masked`` smallest of the counter keys ``f * period ...
    (f + 1) * period - 1`` of the sample's stream, so frame 0 is :func:`tube_pattern` and every
    frame has the tube's count."""
    if not 0 <= num_masked <= period:
        raise ValueError(f"frame_patterns: num_masked {num_masked} outside [0, period={period}]")
    keys = pattern_keys(key, frames * period).view(frames, period)
    patterns = torch.zeros(frames, period, dtype=torch.bool)
    if num_masked:
        patterns.scatter_(1, keys.argsort(dim=1)[:, :num_masked], True)
    return patterns


def _sample_values(tokens: torch.Tensor, labels: torch.Tensor, content: torch.Tensor,
                   period: torch.Tensor, num_masked: torch.Tensor, key: torch.Tensor
                   ) -> tuple[list[int], list[int], list[int]]:
    """Check shapes/dtypes and per-sample values; return (period, num_masked, key) as lists."""
    if tokens.dim() != 2 or labels.shape != tokens.shape or content.shape != tokens.shape:
        raise ValueError(f"tube_mask_apply: tokens {tuple(tokens.shape)}, labels "
                         f"{tuple(labels.shape)} and content {tuple(content.shape)} must all be [B, L]")
    if tokens.dtype != torch.int64 or labels.dtype != torch.int64 or content.dtype != torch.bool:
        raise TypeError(f"tube_mask_apply: tokens/labels must be int64 and content bool, got "
                        f"{tokens.dtype}/{labels.dtype}/{content.dtype}")
    batch = tokens.shape[0]
    values = []
    for name, t in (("period", period), ("num_masked", num_masked), ("key", key)):
        if t.shape != (batch,) or t.dtype != torch.int64:
            raise ValueError(f"tube_mask_apply: {name} must be int64 [B={batch}], got "
                             f"{t.dtype} {tuple(t.shape)}")
        values.append(t.tolist())
    for b, (p, n, s) in enumerate(zip(*values)):
        if not 0 <= p < 2**31:
            raise ValueError(f"tube_mask_apply: sample {b} has period {p} (must be in [0, 2^31))")
        if not 0 <= n <= p:
            raise ValueError(f"tube_mask_apply: sample {b} has num_masked {n} outside "
                             f"[0, period={p}]")
        if s < 0:
            raise ValueError(f"tube_mask_apply: sample {b} has negative key {s}")
    return values[0], values[1], values[2]


def tube_mask_apply_reference(tokens: torch.Tensor, labels: torch.Tensor, content: torch.Tensor,
                              period: torch.Tensor, num_masked: torch.Tensor, key: torch.Tensor,
                              mask_id: int, ignore_index: int = -100
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pure-PyTorch tube mask (see the module docstring); returns (tokens, labels, masked).

    tokens/labels int64 [B, L], content bool [B, L], period/num_masked/key int64 [B]. Out of
    place. Raises ValueError for num_masked > period (naming the sample) or bad shapes.
    """
    periods, counts, keys = _sample_values(tokens, labels, content, period, num_masked, key)
    patterns = [tube_pattern(s, p, n) if p and n else None
                for p, n, s in zip(periods, counts, keys)]
    return apply_tube_patterns(tokens, labels, content, patterns, mask_id, ignore_index)


def apply_tube_patterns(tokens: torch.Tensor, labels: torch.Tensor, content: torch.Tensor,
                        patterns: Sequence[Optional[torch.Tensor]], mask_id: int,
                        ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply one bool spatial pattern per sample (None: leave the sample unchanged): the k-th
    content position of sample b is masked iff ``patterns[b][k % len(patterns[b])]``; a
    ``[frames, period]`` pattern gives each latent frame its own (``patterns[b][k // period][k %
    period]``). Returns (tokens, labels, masked), out of place."""
    masked = torch.zeros_like(content)
    # Unmasked content loses its label only in samples that are masked at all.
    active = torch.zeros_like(content)
    for b, pattern in enumerate(patterns):
        if pattern is None:
            continue
        active[b] = True
        positions = content[b].nonzero().squeeze(1)
        k = torch.arange(positions.numel(), device=content.device)
        pattern = pattern.to(content.device)
        if pattern.dim() == 2:  # one pattern per latent frame
            period = pattern.shape[1]
            masked[b, positions] = pattern.reshape(-1)[(k // period).clamp(max=pattern.shape[0] - 1) * period
                                                       + k % period]
        else:
            masked[b, positions] = pattern[k % pattern.numel()]
    tokens_out = tokens.masked_fill(masked, mask_id)
    labels_out = labels.masked_fill(content & active & ~masked, ignore_index)
    return tokens_out, labels_out, masked


def tube_mask_apply(tokens: torch.Tensor, labels: torch.Tensor, content: torch.Tensor,
                    period: torch.Tensor, num_masked: torch.Tensor, key: torch.Tensor,
                    mask_id: int, ignore_index: int = -100
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tube mask with the csrc kernel for ``tokens``' device when built, else the reference.

    Same arguments, results and errors as ``tube_mask_apply_reference`` (bit-identical).
    """
    ext = extension_for(tokens)
    if ext is None:
        return tube_mask_apply_reference(tokens, labels, content, period, num_masked, key,
                                         mask_id, ignore_index)
    # Validate here too so both paths raise the same Python exceptions with the same messages.
    _sample_values(tokens, labels, content, period, num_masked, key)
    if labels.device != tokens.device or content.device != tokens.device:
        raise ValueError("tube_mask_apply: tokens, labels and content must be on one device")
    out = ext.tube_mask_apply(tokens, labels, content, period, num_masked, key,
                              int(mask_id), int(ignore_index))
    return out[0], out[1], out[2]
