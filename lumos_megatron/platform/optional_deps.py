"""Optional dependencies, checked up front: a missing one is one line naming the extra that
installs it, not an ``AttributeError`` deep inside a stage."""

from __future__ import annotations

import importlib.util
from typing import Mapping, Optional


def missing_modules(modules: Mapping[str, str]) -> list:
    """The pip names of ``{import name: pip name}`` entries that cannot be imported."""
    return [pip for module, pip in modules.items() if importlib.util.find_spec(module) is None]


def extra_problem(extra: str, modules: Mapping[str, str], what: str) -> Optional[str]:
    """One line saying which of ``modules`` are missing for ``what`` and how to install them with
    the package's ``extra``; None when all import."""
    absent = missing_modules(modules)
    if not absent:
        return None
    return (f"{what} needs {', '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} not installed; "
            f"install the extra: pip install --no-build-isolation -e '.[{extra}]' (or pip install {' '.join(absent)})")
