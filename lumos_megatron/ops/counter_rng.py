"""Counter-based 32-bit RNG, identical in torch (int64 tensors) and in csrc/counter_rng.h (uint32).

Random choices that must agree across the reference, the C++ and the CUDA kernels (the tube-mask
pattern) are pure functions of a per-sample ``key`` id and a counter, so they need no generator
state, are reproducible on resume, and do not depend on the device or the order of evaluation.
"""

from __future__ import annotations

import torch

M = 0xFFFFFFFF
_C1 = 0x7FEB352D
_C2 = 0x846CA68B


def mix32_int(x: int) -> int:
    """The "lowbias32" bijection on 32 bits, on Python ints (``x`` is reduced mod 2^32 first)."""
    x &= M
    x ^= x >> 16
    x = (x * _C1) & M
    x ^= x >> 15
    x = (x * _C2) & M
    x ^= x >> 16
    return x


def mix32(x: torch.Tensor) -> torch.Tensor:
    """``mix32_int`` elementwise on an integer tensor; returns int64 values in [0, 2^32).

    The second product (a 32-bit value times a constant above 2^31) can exceed 2^63 and wrap in
    int64, but two's-complement wrapping keeps the low 32 bits exact, and ``& M`` keeps only those.
    """
    x = x.to(torch.int64) & M
    x = x ^ (x >> 16)
    x = (x * _C1) & M
    x = x ^ (x >> 15)
    x = (x * _C2) & M
    return x ^ (x >> 16)


def key_base(key: int) -> int:
    """32-bit base of a non-negative int64 key id (both halves of the id enter the mix)."""
    if key < 0:
        raise ValueError(f"key must be non-negative, got {key}")
    return mix32_int(mix32_int(key & M) ^ ((key >> 32) & M))


def pattern_keys(key: int, period: int, device: torch.device | str | None = None) -> torch.Tensor:
    """int64 [period]: ``key_j = mix32(key_base(key) ^ j)``; all distinct (mix32 is a bijection)."""
    j = torch.arange(period, dtype=torch.int64, device=device)
    return mix32(j ^ key_base(key))
