"""A checkpoint's manifest: the size and SHA-256 of every file, written when it is saved.

``iter_NNNNNNN/manifest.json``::

    {"version": 1, "run_id": "...", "iteration": 100,
     "files": {"__0_0.distcp": {"size": 123, "sha256": "..."}, "common.pt": {...}, ...}}

A shard overwritten with garbage of the same length passes every size check; only a checksum
finds it. megatron's writer streams the shards from its own worker processes, so the checksums
cannot be taken while writing: after every rank has written, the files are read back, split
evenly over the ranks (each hashes ``1 / world`` of them, in parallel, mostly from the page cache),
and rank 0 writes the manifest before the checkpoint is published. Loading verifies the same way
(``checkpoint.verify``: ``full`` checksums, ``size`` only the sizes, ``none``). ``run_id`` names
the run that wrote the checkpoint (``checkpoint/owner.py``). Pure ``hashlib``/``json``: no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
VerifyMode = Literal["full", "size", "none"]
VERIFY_MODES = ("full", "size", "none")
_CHUNK = 8 << 20


def checkpoint_files(directory: str | Path) -> List[str]:
    """Every regular file under ``directory`` (relative, sorted), the manifest itself excluded."""
    directory = Path(directory)
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if p.is_file() and p.name != MANIFEST_FILE)


def hash_file(path: str | Path) -> Tuple[int, str]:
    """(size in bytes, SHA-256 hex digest) of ``path``, read in 8 MiB chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            if not block:
                break
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def share(names: List[str], rank: int, world: int) -> List[str]:
    """The files rank ``rank`` of ``world`` hashes: every ``world``-th, starting at ``rank``."""
    return names[rank::world]


def hash_share(directory: str | Path, names: List[str], rank: int = 0, world: int = 1) -> Dict[str, Dict]:
    """``{name: {"size", "sha256"}}`` of this rank's share of ``names`` under ``directory``."""
    out = {}
    for name in share(names, rank, world):
        size, digest = hash_file(Path(directory) / name)
        out[name] = {"size": size, "sha256": digest}
    return out


def write_manifest(directory: str | Path, files: Dict[str, Dict], run_id: str, iteration: Optional[int]) -> Path:
    """Write ``manifest.json`` (fsynced) into ``directory``."""
    path = Path(directory) / MANIFEST_FILE
    with open(path, "w") as f:
        json.dump({"version": MANIFEST_VERSION, "run_id": run_id, "iteration": iteration,
                   "files": dict(sorted(files.items()))}, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def read_manifest(directory: str | Path) -> Optional[Dict]:
    """The manifest of a checkpoint directory, None when it has none (older or imported
    checkpoints); a manifest that cannot be parsed counts as a failed check (see ``verify``)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("files"), dict):
            raise ValueError("no files table")
        return data
    except (OSError, ValueError) as err:
        return {"unreadable": f"{path} cannot be read ({err})"}


def verify(directory: str | Path, mode: VerifyMode = "full", rank: int = 0, world: int = 1) -> List[str]:
    """Problems found in ``directory`` against its manifest (empty: verified). Every rank checks
    every size (cheap) and, with ``full``, the checksums of its share of the files; merge the
    ranks' lists. A checkpoint without a manifest gives no problem (nothing to check against)."""
    if mode == "none":
        return []
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        return []
    if "unreadable" in manifest:
        return [manifest["unreadable"]]
    files = manifest["files"]
    problems = []
    for name, entry in files.items():
        path = directory / name
        try:
            size = os.path.getsize(path)
        except OSError:
            problems.append(f"{path} is missing")
            continue
        if size != entry["size"]:
            problems.append(f"{path} has {size} bytes, the manifest says {entry['size']}")
    if mode == "full":
        broken = {p.split(" ", 1)[0] for p in problems}
        for name in share(sorted(files), rank, world):
            path = directory / name
            if str(path) in broken:
                continue
            if hash_file(path)[1] != files[name]["sha256"]:
                problems.append(f"{path} does not match its checksum in {MANIFEST_FILE} (corrupt)")
    return problems


def owner_run_id(directory: str | Path) -> Optional[str]:
    """The ``run_id`` of the run that saved checkpoint ``directory`` (None: unknown)."""
    manifest = read_manifest(directory)
    return None if manifest is None else manifest.get("run_id")
