"""Length-grouped sample order (the official sampler's length clustering), as a pure function of
the stream position.

A stream's positions are cut into windows of ``W = global_batch_size x window_batches``
consecutive positions. Inside a window the samples are sorted by length (ties by position), cut
into ``window_batches`` global batches, and the order of those batches is a seeded permutation of
the window: each step then holds samples of similar length (little padding, similar work on every
data-parallel rank), while the sequence of steps still mixes short and long ones.

Lengths come from ``source.sample_length`` (the index, no token reads). Everything depends only
on (seed, stream, window), so every rank derives the same order and a resumed run continues it
exactly, as long as the global batch size is unchanged; a run resumed with another global batch
size starts its windows at the resume point.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np


class LengthGroupedOrder:
    """Maps a step's block of stream positions to the stream sample indices it reads."""

    def __init__(self, source, global_batch_size: int, window_batches: int, seed: int, salt: int,
                 max_latent_frames: Optional[int] = None, anchor: int = 0):
        if global_batch_size < 1 or window_batches < 1:
            raise ValueError(f"global_batch_size ({global_batch_size}) and window_batches "
                             f"({window_batches}) must be >= 1")
        self.source, self.gbs, self.window_batches = source, global_batch_size, window_batches
        self.seed, self.salt, self.max_latent_frames = seed, salt, max_latent_frames
        self.anchor = anchor
        """First position of window 0: 0, or the resume point of a run whose global batch size
        does not divide the positions consumed before it."""
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

    @property
    def window_size(self) -> int:
        """Stream positions per window."""
        return self.gbs * self.window_batches

    def _window(self, w: int) -> Tuple[np.ndarray, np.ndarray]:
        """(positions of window ``w`` sorted by length, permutation of its batches)."""
        if w not in self._cache:
            start = self.anchor + w * self.window_size
            positions = np.arange(start, start + self.window_size, dtype=np.int64)
            lengths = np.array([self.source.sample_length(int(k), self.max_latent_frames) for k in positions],
                               dtype=np.int64)
            order = positions[np.lexsort((positions, lengths))]  # by length, then position
            rng = np.random.default_rng([self.seed, self.salt, w, 0x1E6])
            self._cache = {w: (order, rng.permutation(self.window_batches))}  # one window at a time
        return self._cache[w]

    def batch(self, start: int) -> List[int]:
        """Sample indices of the global batch that covers positions ``[start, start + gbs)``
        (``start - anchor`` a multiple of the global batch size), shortest first."""
        offset = start - self.anchor
        if offset < 0 or offset % self.gbs:
            raise ValueError(f"position {start} does not start a global batch of {self.gbs} "
                             f"(windows anchored at {self.anchor})")
        w, j = divmod(offset // self.gbs, self.window_batches)
        order, perm = self._window(w)
        b = int(perm[j])
        return [int(k) for k in order[b * self.gbs:(b + 1) * self.gbs]]
