"""Pre-tokenization manifests: CSV or JSONL rows with a media ``path`` and a caption.

CSV needs a header with ``path`` and ``caption`` (or the official ``text``) columns; JSONL needs
one object per line with the same keys. Other columns are kept as extra metadata. Relative paths
are resolved against the manifest's directory.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List

CAPTION_KEYS = ("caption", "text")


class ManifestError(ValueError):
    """A manifest that cannot be read at all (not a per-row problem: those are skipped)."""


@dataclass(frozen=True)
class ManifestEntry:
    """One input: its row number, media path and caption (None when the row has none)."""

    index: int
    path: str
    caption: Any
    extra: Dict[str, Any] = field(default_factory=dict)


def _entry(index: int, row: Dict[str, Any], base: str, where: str) -> ManifestEntry:
    path = row.get("path")
    if not isinstance(path, str) or not path.strip():
        raise ManifestError(f"{where}: no 'path' value")
    caption = next((row[k] for k in CAPTION_KEYS if k in row), None)
    extra = {k: v for k, v in row.items() if k != "path" and k not in CAPTION_KEYS}
    full = path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))
    return ManifestEntry(index, full, caption, extra)


def read_manifest(path: str) -> List[ManifestEntry]:
    """All rows of a ``.csv`` or ``.jsonl`` manifest, in order."""
    if not os.path.isfile(path):
        raise ManifestError(f"manifest {path} does not exist")
    base = os.path.dirname(os.path.abspath(path))
    entries: List[ManifestEntry] = []
    if path.endswith(".jsonl") or path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{path}:{line_no}: not JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ManifestError(f"{path}:{line_no}: expected an object with 'path' and 'caption'")
                entries.append(_entry(len(entries), row, base, f"{path}:{line_no}"))
    elif path.endswith(".csv"):
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if "path" not in columns or not any(k in columns for k in CAPTION_KEYS):
                raise ManifestError(f"{path}: the CSV header needs 'path' and 'caption' (or 'text') "
                                    f"columns, has {columns}")
            for line_no, row in enumerate(reader, 2):
                entries.append(_entry(len(entries), row, base, f"{path}:{line_no}"))
    else:
        raise ManifestError(f"manifest {path}: use a .csv or .jsonl file")
    if not entries:
        raise ManifestError(f"manifest {path} has no rows")
    return entries
