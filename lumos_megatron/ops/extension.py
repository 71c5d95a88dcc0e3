"""Loading of the compiled ``lumos_megatron._C`` extension (csrc/), optional at run time.

The extension is built by setup.py; when it is missing (``LUMOS_NO_EXT=1`` at install time, no
compiler) every op in lumos_megatron.ops falls back to its pure-PyTorch reference. Setting
``LUMOS_NO_EXT=1`` at run time forces the references even when the extension is built, e.g. to
bisect a numerical difference.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from types import ModuleType

import torch  # loads libtorch (and its libgomp) before _C needs their symbols


@functools.cache
def _import_extension() -> ModuleType | None:
    try:
        # import_module, not "from lumos_megatron import _C": only the former raises
        # ModuleNotFoundError (with .name) when the .so is simply absent.
        ext = importlib.import_module("lumos_megatron._C")
    except ModuleNotFoundError as err:
        if err.name != "lumos_megatron._C":
            raise
        return None  # not built: the references are the intended fallback
    except ImportError as err:
        # Built but not loadable (typically a .so left from another torch version): still fall
        # back, but say so, since silently losing the kernels would only show up as slowness.
        warnings.warn(f"lumos_megatron._C failed to load ({err}); using the PyTorch references. "
                      "Rebuild with: pip install --no-build-isolation -e .", RuntimeWarning)
        return None
    return ext


def load_extension() -> ModuleType | None:
    """The ``lumos_megatron._C`` module, or None if it is not built or ``LUMOS_NO_EXT=1``."""
    if os.environ.get("LUMOS_NO_EXT") == "1":
        return None
    return _import_extension()


def extension_available() -> bool:
    """Whether the compiled kernels will be used (built, and not disabled by ``LUMOS_NO_EXT=1``)."""
    return load_extension() is not None


def extension_for(tensor: torch.Tensor) -> ModuleType | None:
    """The extension if it has a kernel for ``tensor``'s device (CPU always, CUDA if compiled in)."""
    ext = load_extension()
    if ext is None:
        return None
    if tensor.device.type == "cpu" or (tensor.device.type == "cuda" and ext.has_cuda()):
        return ext
    return None
