"""Weighted blends of datasets, train/valid/test splits and epoch shuffling: the training order.

Everything is a pure function of (seed, sample index), like the rest of our data path, so a
sampler position is just a count of consumed samples (stored in checkpoints) and any DP layout
reads the same global sequence of samples.

* ``data.data_path``: ``[p]`` or ``[w1, p1, w2, p2, ...]`` (Megatron's ``--data-path``).
* ``data.split``: Megatron's ``"969,30,1"`` style train/valid/test proportions, applied to each
  dataset as contiguous ranges of its samples.
* Each split is an endless stream: epoch ``e`` visits its samples in a permutation seeded by
  (seed, dataset, split, e).
* Blending: sample ``k`` of the blend comes from the dataset whose share is furthest behind its
  weight (megatron's ``build_blending_indices``, the same greedy rule Megatron uses).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

SPLITS = ("train", "valid", "test")


def parse_data_path(items: Sequence[str]) -> List[Tuple[float, str]]:
    """``[p]`` or ``[w1, p1, w2, p2, ...]`` → ``[(weight, path), ...]`` with weights summing to 1."""
    items = [str(i) for i in items]
    if len(items) == 1:
        return [(1.0, items[0])]
    if not items or len(items) % 2:
        raise ValueError(f"data path {items!r}: give one path, or weight/path pairs 'w1 p1 w2 p2 ...'")
    pairs = []
    for w, p in zip(items[::2], items[1::2]):
        try:
            weight = float(w)
        except ValueError:
            raise ValueError(f"data path {items!r}: {w!r} is not a weight (expected 'w1 p1 w2 p2 ...')") from None
        if weight < 0:
            raise ValueError(f"data path weight {weight} of {p} is negative")
        pairs.append((weight, p))
    total = sum(w for w, _ in pairs)
    if total <= 0:
        raise ValueError(f"data path {items!r}: weights sum to {total}")
    return [(w / total, p) for w, p in pairs]


def parse_split(split: str) -> Tuple[float, float, float]:
    """``"98,2,0"`` (or ``"98/2/0"``) → train/valid/test fractions."""
    try:
        parts = [float(x) for x in str(split).replace("/", ",").split(",") if x.strip()]
    except ValueError:
        parts = []
    if not parts or len(parts) > 3 or any(x < 0 for x in parts) or sum(parts) <= 0:
        raise ValueError(f"data.split={split!r}: give up to three non-negative proportions, e.g. '98,2,0'")
    parts += [0.0] * (3 - len(parts))
    total = sum(parts)
    return tuple(x / total for x in parts)  # type: ignore[return-value]


def split_range(num_samples: int, split: str, which: str) -> Tuple[int, int]:
    """Contiguous ``[start, end)`` sample range of split ``which`` (Megatron's rounding)."""
    fractions = parse_split(split)
    bounds = [0]
    for frac in fractions:
        bounds.append(bounds[-1] + int(round(frac * float(num_samples))))
    shift = bounds[-1] - num_samples
    bounds = [b - shift if i else b for i, b in enumerate(bounds)]
    i = SPLITS.index(which)
    return max(bounds[i], 0), bounds[i + 1]


class ShuffledSplit:
    """Endless view of samples ``[start, end)`` of ``dataset``: index ``k`` is sample
    ``start + perm_e[k % n]`` with ``e = k // n`` and ``perm_e`` a seeded permutation."""

    def __init__(self, dataset, start: int, end: int, seed: int, salt: int, shuffle: bool = True):
        if end <= start:
            raise ValueError(f"empty split of {getattr(dataset, 'path', dataset)} ([{start}, {end})); "
                             "adjust data.split or add data")
        self.dataset, self.start, self.size = dataset, start, end - start
        self.seed, self.salt, self.shuffle = seed, salt, shuffle
        self._epoch, self._perm = -1, None

    def source_index(self, k: int) -> int:
        """Index into the dataset of stream position ``k``."""
        epoch, pos = divmod(int(k), self.size)
        if not self.shuffle:
            return self.start + pos
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, self.salt, epoch])
            self._epoch, self._perm = epoch, rng.permutation(self.size)
        return self.start + int(self._perm[pos])

    def __getitem__(self, k: int):
        return self.dataset[self.source_index(k)]

    @property
    def number_ids(self):
        """The dataset's number writer (see ``PretokenizedDataset.number_ids``)."""
        return getattr(self.dataset, "number_ids", None)

    def sample_length(self, k: int, max_latent_frames: Optional[int] = None) -> int:
        """Length of the sample at position ``k`` (no read; see the dataset's ``sample_length``)."""
        return self.dataset.sample_length(self.source_index(k), max_latent_frames)


class BlendedStream:
    """Endless weighted blend of ``ShuffledSplit`` streams (one stream of training samples)."""

    def __init__(self, parts: Sequence[ShuffledSplit], weights: Sequence[float]):
        if len(parts) != len(weights) or not parts:
            raise ValueError("need one weight per dataset")
        self.parts = list(parts)
        self.weights = np.asarray(weights, dtype=np.float64)
        tables = {repr(getattr(p.dataset, "info", {}).get("number_tokens")) for p in self.parts}
        if len(tables) > 1:
            raise ValueError("the blended datasets were pre-tokenized with different text tokenizers "
                             f"({', '.join(str(getattr(p.dataset, 'path', '?')) for p in self.parts)}); "
                             "blend only datasets that share one")
        self.number_ids = self.parts[0].number_ids
        self._which = np.zeros(0, dtype=np.int16)
        self._local = np.zeros(0, dtype=np.int64)

    def _ensure(self, k: int) -> None:
        if k < len(self._which):
            return
        if len(self.parts) == 1:
            return
        size = max(1024, 2 * (k + 1))
        from megatron.core.datasets import helpers_cpp

        which = np.zeros(size, dtype=np.int16)
        local = np.zeros(size, dtype=np.int64)
        helpers_cpp.build_blending_indices(which, local, self.weights, len(self.parts), size, False)
        self._which, self._local = which, local

    def locate(self, k: int) -> Tuple[int, int]:
        """(dataset number, position in its stream) of blend sample ``k``."""
        if len(self.parts) == 1:
            return 0, int(k)
        self._ensure(int(k))
        return int(self._which[k]), int(self._local[k])

    def __getitem__(self, k: int):
        part, pos = self.locate(k)
        return self.parts[part][pos]

    def sample_length(self, k: int, max_latent_frames: Optional[int] = None) -> int:
        """Length of blend sample ``k`` (no read; see the dataset's ``sample_length``)."""
        part, pos = self.locate(k)
        return self.parts[part].sample_length(pos, max_latent_frames)
