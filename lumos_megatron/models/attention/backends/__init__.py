"""Registry of frame-causal attention backends (``model.attention_backend``).

A backend is one :class:`AttentionBackend` declared as ``BACKEND`` in a module of this package
named ``<name>_backend.py``; the registry finds them by listing the package, so adding a backend
is adding one file here (its core-attention kernel, when new, lives in its own module under
``models/attention/`` and is named by import path). A declaration says everything the rest of the
system needs to know and nothing else reads backend names:

* config validation (``config.validate``) takes the choices, the context-parallel support and the
  runtime check from here, and the ``model.attention_backend`` field is typed with the names;
* the model-inputs builder (``models.inputs``) builds the backend's mask form from segment ids;
* the layer spec (``models.layer_spec``) takes the core-attention module (its CP variant under
  context parallelism; a backend without one is rejected by validation, never swapped).

Declarations import nothing heavy at module level (no megatron, no torch), so the configuration
layer can read them without loading the model stack: the mask builder and the runtime check are
plain functions that import what they need, and modules are named by ``"module:attribute"``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, Optional, Tuple


def _resolve(path: str) -> Any:
    """The object named by ``"package.module:attribute"``."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class AttentionBackend:
    """One frame-causal attention backend."""

    name: str
    """The ``model.attention_backend`` value that selects it."""
    summary: str
    """One line for docs and error messages: what it runs and where."""
    core_attention: str
    """``"module:Class"`` of megatron's ``core_attention`` module in our layer spec."""
    build_mask: Callable[..., Any]
    """``build_mask(segment_ids [b, s] long, dtype, document_ids=None) -> mask``: the form the core
    attention takes as ``attention_mask``, built once per micro-batch on the data side from frame
    segment ids; ``document_ids`` (packed rows) restricts attention to each sample's own tokens."""
    mask_on_accelerator: bool = False
    """Build the mask on the current CUDA device (when there is one) instead of where the segment
    ids are: for masks that are large (an L x L bias) or cheap only on the GPU (a compiled
    block-mask builder), so no host-to-device copy of an L x L object happens per micro-batch."""
    context_parallel_core_attention: Optional[str] = None
    """``"module:Class"`` used instead of ``core_attention`` when CP > 1; None: the backend does
    not support context parallelism (validation rejects the combination)."""
    runtime_problem: Callable[[bool], Optional[str]] = lambda training: None
    """``runtime_problem(training) -> None | one line``: what this machine lacks to run it (kept out
    of static validation, which must accept a GPU recipe written on a laptop)."""

    @property
    def supports_context_parallel(self) -> bool:
        """True when the backend has a context-parallel core attention."""
        return self.context_parallel_core_attention is not None

    def core_attention_module(self, context_parallel: bool = False) -> type:
        """The core-attention class for the layer spec (its CP variant when ``context_parallel``)."""
        if not context_parallel:
            return _resolve(self.core_attention)
        if self.context_parallel_core_attention is None:
            raise ValueError(f"attention backend {self.name!r} does not support context parallelism")
        return _resolve(self.context_parallel_core_attention)


@lru_cache(maxsize=1)
def _registry() -> Dict[str, AttentionBackend]:
    found: Dict[str, AttentionBackend] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.endswith("_backend"):
            continue
        backend = importlib.import_module(f"{__name__}.{info.name}").BACKEND
        if backend.name in found:
            raise RuntimeError(f"attention backend {backend.name!r} is declared twice")
        found[backend.name] = backend
    return dict(sorted(found.items(), key=lambda item: (_ORDER.get(item[0], len(_ORDER)), item[0])))


# Order choices are listed in: the default reference first, then the GPU kernels; new ones last.
_ORDER = {"sdpa": 0, "flex": 1, "te_bias": 2}


def backend_names() -> Tuple[str, ...]:
    """Names of every registered backend, the default (``sdpa``) first."""
    return tuple(_registry())


def attention_backend(name: str) -> AttentionBackend:
    """The backend called ``name``; ValueError listing the choices for an unknown name."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {backend_names()}")
    return registry[name]


__all__ = ["AttentionBackend", "attention_backend", "backend_names"]
