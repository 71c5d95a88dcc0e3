"""Megatron's checkpoint directory convention, and crash-safe publication of a checkpoint.

::

    SAVE/
      latest_checkpointed_iteration.txt    # "100": the newest complete checkpoint
      iter_0000050/                        # torch_dist shards + common.pt + metadata.json
      iter_0000100/                        #   + run_config.yaml (the resolved configuration)
      .iter_0000150.<run_id>.tmp/          # a save in progress (or killed): never read
      .owner.json                          # the run that saves here (checkpoint/owner.py)
      .owner.heartbeat.<run_id>            #   and its latest heartbeat

A save writes into the hidden temporary directory, which is renamed to ``iter_NNNNNNN`` only when
every rank has finished writing; the ``latest`` file is then replaced atomically (write a temp
file, fsync, ``os.replace``). A process killed at any point therefore leaves the previous
``latest`` checkpoint complete and loadable. Pure ``os``/``pathlib``: no torch, no megatron.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Iterable, List, Optional

LATEST_FILE = "latest_checkpointed_iteration.txt"
RUN_CONFIG_FILE = "run_config.yaml"
_ITER_RE = re.compile(r"^iter_(\d{7,})$")
# What a killed save leaves: its temporary directory, or the previous copy of a re-saved iteration,
# named with the owning run's id (older versions: without).
_LEFTOVER_RE = re.compile(r"^\.iter_(\d{7,})(?:\.([0-9a-f]+))?\.(tmp|old)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be saved or loaded; the message names the path and what to do.

    ``earlier_step`` marks a damaged or incomplete checkpoint, which loading another iteration
    avoids: each command adds the flag it has for that (``with_step_hint``)."""

    def __init__(self, message: str, earlier_step: bool = False):
        super().__init__(message)
        self.earlier_step = earlier_step


class NoSpaceError(CheckpointError):
    """The checkpoint device ran out of space (the message says how much was needed and free)."""


def with_step_hint(err: BaseException, flag: Optional[str]) -> str:
    """The error's message, plus "pick another with FLAG N" when an earlier iteration would do and
    the command has such a flag (``--ckpt-step`` for training, ``--iteration`` for the tools)."""
    text = str(err)
    if getattr(err, "earlier_step", False) and flag:
        return f"{text}; pick another iteration with {flag} N"
    return text


def iteration_dir_name(iteration: int) -> str:
    """``iter_0000100`` for iteration 100 (Megatron's 7-digit zero padding)."""
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    return f"iter_{iteration:07d}"


def checkpoint_dir(root: str | Path, iteration: int) -> Path:
    """Directory of the checkpoint of ``iteration`` under ``root``."""
    return Path(root) / iteration_dir_name(iteration)


def temporary_dir(root: str | Path, iteration: int, token: str = "") -> Path:
    """Where a save of ``iteration`` is written before it is published (hidden, same filesystem
    as the final name so that the rename is atomic); ``token`` is the owning run's id."""
    return Path(root) / f".{iteration_dir_name(iteration)}{'.' + token if token else ''}.tmp"


def list_checkpoints(root: str | Path) -> List[int]:
    """Iterations of the published checkpoints under ``root``, ascending (temporaries ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _ITER_RE.match(entry.name)
        if match and entry.is_dir():
            found.append(int(match.group(1)))
    return sorted(found)


def write_atomically(path: Path, text: str, tag: str = "") -> None:
    """Replace ``path`` with ``text`` all at once (temp file, fsync, rename); ``tag`` makes the
    temp file's name unique to its writer when several processes may write the same file."""
    tmp = path.with_name(f".{path.name}{'.' + tag if tag else ''}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable across a power loss; not every filesystem allows opening a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_latest(root: str | Path, iteration: int) -> None:
    """Point ``latest_checkpointed_iteration.txt`` at ``iteration`` (atomic replace)."""
    write_atomically(Path(root) / LATEST_FILE, f"{iteration}\n")


def read_latest(root: str | Path) -> Optional[int]:
    """Iteration named by the ``latest`` file, or None when ``root`` or the file does not exist.

    Raises ``CheckpointError`` when the file exists but does not hold an iteration number.
    """
    path = Path(root) / LATEST_FILE
    if not path.is_file():
        return None
    text = path.read_text().strip()
    if not text.isdigit():
        raise CheckpointError(f"{path}: expected an iteration number, found {text[:40]!r}; fix or "
                              "delete the file", earlier_step=True)
    return int(text)


def publish(tmp: Path, final: Path, token: str = "") -> None:
    """Rename a completely written temporary checkpoint to its final name.

    An existing checkpoint of the same iteration (a save repeated by the same run) is moved aside
    first and deleted only after the new one is in place; callers decide whether replacing it is
    allowed (``save.py`` refuses another run's).
    """
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}{'.' + token if token else ''}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare_temporary(root: str | Path, iteration: int, token: str = "") -> Path:
    """Create an empty temporary directory for a save of ``iteration`` by the run ``token`` (its
    own leftover of a killed save is removed first). Call on one rank only."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = temporary_dir(root, iteration, token)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def prune(root: str | Path, keep_last: int, protect: Optional[int] = None,
          tokens: Optional[Iterable[str]] = None) -> List[int]:
    """Delete all but the newest ``keep_last`` checkpoints (0 keeps all); returns those deleted.

    ``protect`` (the iteration just saved, and the one ``latest`` names) is never deleted.
    Leftovers of killed saves (``.iter_NNNNNNN.<run>.tmp`` and ``.old``) are removed as well, but
    only those of the runs in ``tokens`` (this run, and the stale owner it took over; None: all):
    call this after a save has been published, when no save of this run is in progress.
    """
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, got {keep_last}")
    root = Path(root)
    keep = set()
    latest = read_latest(root)
    for it in (protect, latest):
        if it is not None:
            keep.add(it)
    iterations = list_checkpoints(root)
    deleted = []
    if keep_last:
        for it in iterations[:-keep_last]:
            if it not in keep:
                shutil.rmtree(checkpoint_dir(root, it), ignore_errors=True)
                deleted.append(it)
    for leftover in leftover_dirs(root, tokens):
        shutil.rmtree(leftover, ignore_errors=True)
    return deleted


def leftover_dirs(root: str | Path, tokens: Optional[Iterable[str]] = None) -> List[Path]:
    """Temporary directories of killed saves under ``root`` (never read by a load); with
    ``tokens``, only those of these runs (and of versions that named none)."""
    root = Path(root)
    if not root.is_dir():
        return []
    wanted = None if tokens is None else {t for t in tokens if t} | {None}
    out = []
    for entry in root.iterdir():
        match = _LEFTOVER_RE.match(entry.name)
        if match and entry.is_dir() and (wanted is None or match.group(2) in wanted):
            out.append(entry)
    return sorted(out)


def resolve_load(root: str | Path, step: Optional[int] = None) -> Optional[Path]:
    """The checkpoint directory to resume from, or None when there is nothing to resume.

    ``step`` (Megatron ``--ckpt-step``, the tools' ``--iteration``) selects an iteration explicitly; otherwise the ``latest``
    file decides. A missing ``root`` or an empty one (no ``latest`` file) means "start from
    scratch", as Megatron does; a ``latest`` file or ``step`` naming a missing directory is an
    error.
    """
    root = Path(root)
    if step is not None:
        path = checkpoint_dir(root, step)
        if not path.is_dir():
            have = ", ".join(str(i) for i in list_checkpoints(root)) or "none"
            raise CheckpointError(f"checkpoint {path} does not exist (checkpoints under {root}: {have})")
        return path
    latest = read_latest(root)
    if latest is None:
        return None
    path = checkpoint_dir(root, latest)
    if not path.is_dir():
        raise CheckpointError(
            f"{root / LATEST_FILE} names iteration {latest}, but {path} does not exist; "
            "point the file at an existing iter_* directory", earlier_step=True)
    return path
