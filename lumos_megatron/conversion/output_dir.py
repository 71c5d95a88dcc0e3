"""Where a conversion writes: a hidden sibling of ``--out``, renamed into place when complete.

A failure (bad input found mid-way, a full disk, Ctrl-C) removes the partial directory, so
``--out`` never holds a half-written checkpoint, as with training checkpoints.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lumos_megatron.conversion.errors import ConversionError


def check_output(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` unless ``force`` (call before any slow work)."""
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"{out}: exists and is not empty; choose another --out or pass --force to replace it")


@contextmanager
def staged_output(out: str | Path, force: bool) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``out``, on error it is removed."""
    out = Path(out)
    check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        old = out.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    elif out.is_dir():
        out.rmdir()
    os.replace(tmp, out)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
