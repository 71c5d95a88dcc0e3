"""AR-DF inference schedules (docs/method.md §5.2, §5.3): how many tokens stay masked after each
decoding step of a frame, and which history positions are hidden from the cache.

Both follow the official arithmetic exactly, because the samples depend on it: the cosine
schedule is evaluated in float32 (at T = 3 or 6, step 2/3 gives ``cos = 0.49999997`` and one token
less than float64 would), and the history pattern is deterministic and evenly spaced.
"""

from __future__ import annotations

import functools
import math
from typing import List

import torch


@functools.lru_cache(maxsize=4096)
def scheduled_mask_len(num_tokens: int, step: int, steps: int) -> int:
    """``floor(N · cos(π/2 · (s+1)/T))`` in float32: the cosine count of step ``step`` (0-based)
    of ``steps`` before :func:`masked_after_step` clamps it to what is still masked. Cached: the
    same few values serve every frame of every sample."""
    ratio = torch.tensor((step + 1) / steps, dtype=torch.float32)
    mask_ratio = torch.cos(ratio * math.pi / 2)  # float32, as the official cosine_schedule
    return int(torch.floor(num_tokens * mask_ratio).item())  # a CPU scalar: no device involved


def masked_after_step(num_tokens: int, step: int, steps: int, currently_masked: int) -> int:
    """Tokens re-masked after decoding step ``step`` (0-based) of ``steps``, for a frame of
    ``num_tokens`` tokens of which ``currently_masked`` were masked before the step.

    ``floor(N · cos(π/2 · (s+1)/T))`` in float32, clamped to ``[1, currently_masked − 1]``; the
    last step re-masks nothing.
    """
    if step == steps - 1:
        return 0
    return max(1, min(currently_masked - 1, scheduled_mask_len(num_tokens, step, steps)))


def unmask_schedule(num_tokens: int, steps: int) -> List[int]:
    """Tokens still masked after each of the ``steps`` steps of one frame (the last entry is 0).

    For ``num_tokens = 4032, steps = 50``: 4030, 4024, 4014, 4000, 3982, ...
    """
    if num_tokens < 1 or steps < 1:
        raise ValueError(f"num_tokens and steps must be >= 1, got {num_tokens} and {steps}")
    out, masked = [], num_tokens
    for step in range(steps):
        masked = masked_after_step(num_tokens, step, steps, masked)
        out.append(masked)
    return out


def history_mask_indices(length: int, ratio: float) -> List[int]:
    """Positions of a history frame's content (``length = H_l · (W_l + 1)``, new-lines included)
    that are replaced by the mask token before the frame enters the KV cache: ``n = max(1,
    round(ratio · length))`` positions ``round(k · length / n)``, k = 0..n−1 (no random offset)."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    count = max(1, round(ratio * length))
    step = length / count
    return sorted({round(k * step) for k in range(count)})
