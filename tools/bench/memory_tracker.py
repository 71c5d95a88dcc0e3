"""Exact tensor-memory accounting for benchmarks, on any device.

``TensorMemoryTracker`` is a ``TorchDispatchMode`` that sees every tensor an op creates (forward
and, because autograd runs CPU backward on the calling thread, backward too), counts each
storage once, and notices its release through a weak reference. Unlike RSS it is not inflated
by the allocator, and unlike ``torch.cuda.max_memory_allocated`` it also works on CPU.
"""

from __future__ import annotations

import weakref
from typing import Dict, List, Set, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMemoryTracker(TorchDispatchMode):
    """Records (time-ordered) storage allocations and frees made while active."""

    def __init__(self):
        super().__init__()
        self.events: List[Tuple[int, int]] = []  # (storage key, +bytes | -bytes)
        self._live: Dict[int, int] = {}
        self._refs: List[weakref.ref] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Views and in-place results reuse an input's storage: not an allocation.
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t._is_view() \
                    and t.untyped_storage().data_ptr() not in inputs:
                self._record(t)
        return out

    def _record(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self._live or storage.nbytes() == 0:
            return
        size = storage.nbytes()
        self._live[key] = size
        self.events.append((key, size))

        def released(_, key=key, size=size):
            if self._live.pop(key, None) is not None:
                self.events.append((key, -size))

        try:
            self._refs.append(weakref.ref(storage, released))
        except TypeError:  # storages that refuse weak references are counted as never freed
            pass

    def peak_bytes(self, exclude: Set[int] = frozenset()) -> int:
        """Highest sum of live tracked storages, ignoring the storage keys in ``exclude``."""
        live = peak = 0
        for key, delta in self.events:
            if key in exclude:
                continue
            live += delta
            peak = max(peak, live)
        return peak
