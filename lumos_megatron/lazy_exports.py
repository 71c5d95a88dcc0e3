"""Lazy package exports: a package names what it offers without importing heavy submodules.

Several packages re-export names whose modules load megatron-core (seconds of import time), while
their light modules (the MM-RoPE tables, the reference loss, the backend registry) must stay
usable without it. A package declares ``{name: module}`` and gets a module ``__getattr__``
(PEP 562) that imports on first access.
"""

from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``package`` resolving ``exports`` (name → module)."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
