"""Token metrics: how much of the video codebook a set of codes uses, and how far the code
histogram of generated videos is from that of real (pre-tokenized) data.

Codes here are raw codebook indices ``[0, codebook_size)``, not LLM ids (those carry the
vocabulary's ``visual_offset``; ``LumosVocab.code_of`` removes it). Entropies are in bits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Union

import numpy as np
import torch

Codes = Union[np.ndarray, torch.Tensor, list, tuple]


def code_histogram(codes: Codes, codebook_size: int) -> np.ndarray:
    """Counts (int64 ``[codebook_size]``) of each code among ``codes`` (any shape).

    Raises ValueError for codes outside ``[0, codebook_size)`` and TypeError for non-integers.
    """
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    array = np.asarray(codes)
    if array.size == 0:
        return np.zeros(codebook_size, dtype=np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"codes must be integers, got dtype {array.dtype}")
    array = array.reshape(-1).astype(np.int64)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size}), got values in [{low}, {high}]; "
                         "LLM ids must have the visual offset removed first")
    return np.bincount(array, minlength=codebook_size)


def _check_counts(counts, name: str) -> np.ndarray:
    counts = np.asarray(counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else counts,
                        dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D histogram, got shape {tuple(counts.shape)}")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f"{name} must hold finite non-negative counts")
    return counts


def entropy_bits(counts) -> float:
    """Shannon entropy (bits) of the distribution ``counts / counts.sum()``; ``0 · log 0 = 0``."""
    counts = _check_counts(counts, "counts")
    total = counts.sum()
    if total <= 0:
        raise ValueError("counts sum to 0: no distribution to take the entropy of")
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


@dataclass(frozen=True)
class CodebookUsage:
    """How a set of codes spreads over a codebook of ``codebook_size`` codes."""

    tokens: int
    """Codes counted."""
    codebook_size: int
    codes_used: int
    """Distinct codes that occur at least once."""
    usage: float
    """``codes_used / codebook_size``. Bounded by ``tokens / codebook_size``: compare sets of a
    similar number of tokens."""
    entropy_bits: float
    """Entropy of the empirical code distribution."""
    perplexity: float
    """``2 ** entropy_bits``: the number of equally likely codes with the same entropy."""
    normalized_entropy: float
    """``entropy_bits / log2(codebook_size)`` (1.0: uniform over the whole codebook; 0 for a
    one-code codebook)."""

    def as_dict(self) -> Dict[str, float]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def usage_from_counts(counts) -> CodebookUsage:
    """:class:`CodebookUsage` of a code histogram (``len(counts)`` is the codebook size)."""
    counts = _check_counts(counts, "counts")
    tokens = int(round(counts.sum()))
    if tokens == 0:
        raise ValueError("no codes counted: the histogram is empty")
    entropy = entropy_bits(counts)
    size = counts.size
    return CodebookUsage(tokens=tokens, codebook_size=size, codes_used=int((counts > 0).sum()),
                         usage=float((counts > 0).sum()) / size, entropy_bits=entropy,
                         perplexity=2.0 ** entropy,
                         normalized_entropy=entropy / math.log2(size) if size > 1 else 0.0)


def codebook_usage(token_ids: Codes, codebook_size: int) -> CodebookUsage:
    """Codebook usage of raw codes ``token_ids`` (any shape) in a codebook of ``codebook_size``:
    the fraction of codes used, the entropy (bits) and perplexity of their distribution."""
    return usage_from_counts(code_histogram(token_ids, codebook_size))


def token_histogram_divergence(gen_counts, ref_counts, smoothing: float = 0.0) -> float:
    """Jensen–Shannon divergence, in bits (0 = same distribution, 1 = disjoint supports), between
    the code distributions of two histograms of the same codebook.

    ``JS(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M)`` with ``M = (P + Q) / 2``, ``P = gen / Σ gen`` and
    ``Q = ref / Σ ref``. No smoothing is needed for it to be finite (``M > 0`` wherever P or Q
    is, and ``0 · log 0 = 0``), so ``smoothing`` defaults to 0; a positive ``smoothing`` adds that
    pseudo-count to every bin of both histograms first (additive/Lidstone smoothing), which
    pulls both towards uniform and shrinks the divergence that comes from codes a small sample
    simply missed. Two finite samples of one distribution still differ a little: compare against
    the divergence between two real subsets of the same size (``lumos_megatron.evaluate`` reports
    it as the noise floor).
    """
    p = _check_counts(gen_counts, "gen_counts")
    q = _check_counts(ref_counts, "ref_counts")
    if p.shape != q.shape:
        raise ValueError(f"the histograms have {p.size} and {q.size} bins: they must count the same codebook")
    if not smoothing >= 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    p, q = p + smoothing, q + smoothing
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("a histogram sums to 0: no distribution to compare")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl_to_m(x: np.ndarray) -> float:
        nonzero = x > 0
        return float((x[nonzero] * np.log2(x[nonzero] / m[nonzero])).sum())

    # Rounding can leave a hair below 0 for identical inputs; the divergence is >= 0 and <= 1.
    return min(1.0, max(0.0, 0.5 * kl_to_m(p) + 0.5 * kl_to_m(q)))
