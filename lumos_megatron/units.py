"""SI-prefixed numbers for human-readable output (parameter counts, bytes, tokens, FLOPs)."""

from __future__ import annotations

_PREFIXES = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(x: float, unit: str = "", fmt: str = ".3g") -> str:
    """``x`` with the largest SI prefix not above it: ``si(1.5e9) == "1.5G"``,
    ``si(2048, "B", ".2f") == "2.05kB"``; below 1000 it is printed as is (``fmt`` for non-integers)."""
    for scale, prefix in _PREFIXES:
        if abs(x) >= scale:
            return f"{x / scale:{fmt}}{prefix}{unit}"
    return f"{x:g}{unit}" if float(x).is_integer() else f"{x:{fmt}}{unit}"
