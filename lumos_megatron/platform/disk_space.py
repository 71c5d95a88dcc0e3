"""A full disk, recognised and reported the same way by every command that writes large outputs.

Writers rarely say "no space": torch's zip writer reports ``unexpected pos 704 vs 598``, DCP wraps
the error per rank, safetensors raises a bare ``OSError``. ``is_no_space`` looks through the error
chain for ENOSPC/EDQUOT (or their messages) and, failing that, compares the free space left with
what the write needed. ``no_space_message`` is the one line each command prints:
``no space left on DIR: need about X GB, Y GB free``.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Optional

_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("No space left", "Disk quota exceeded")


def free_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem holding ``path`` (its nearest existing parent); -1 if unknown."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return -1


def directory_bytes(path: str | Path) -> int:
    """Total size of the regular files under ``path`` (0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def gigabytes(n: int) -> str:
    """``1.23 GB``."""
    return f"{max(n, 0) / 1e9:.2f} GB"


def is_no_space(err: Optional[BaseException], path: Optional[str | Path] = None, need: int = 0) -> bool:
    """Whether ``err`` means the device ran out of space: ENOSPC/EDQUOT in its cause/context chain
    or in a DCP per-rank failure, or (when ``path`` is given) less free space left under ``path``
    than ``need`` bytes (or 1 MiB)."""
    seen = set()
    stack = [err]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS:
            return True
        if any(text in str(e) for text in _NO_SPACE_TEXT):
            return True
        for failure in (getattr(e, "failures", None) or {}).values():  # torch DCP CheckpointException
            stack.append(failure[0] if isinstance(failure, tuple) else failure)
        stack += [e.__cause__, e.__context__]
    if path is None:
        return False
    free = free_bytes(path)
    return 0 <= free < max(need, 1 << 20)


def no_space_message(directory: str | Path, need: Optional[int]) -> str:
    """``no space left on DIR: need about X GB, Y GB free``."""
    free = free_bytes(directory)
    need_text = f"need about {gigabytes(need)}" if need else "need more"
    return f"no space left on {directory}: {need_text}, {gigabytes(free)} free"
