"""One owner per checkpoint directory: the record that keeps two runs from saving into one ``--save``.

Two runs pointed at the same save directory (a SLURM requeue overlapping its predecessor, a copied
sbatch line) would delete each other's temporaries, replace each other's checkpoints and move
``latest`` backwards. So the first save directory a run opens gets an owner record::

    SAVE/.owner.json                  {"run_id", "host", "pid", "slurm_job_id", "slurm_step_id", "started", "heartbeat"}
    SAVE/.owner.heartbeat.<run_id>    the owner's latest heartbeat time

created with ``O_EXCL`` (one winner when two runs start at once). The record is written only by a
claim; the owner's heartbeat thread refreshes its own file next to it and never rewrites the
record, so a takeover that lands between the thread's check and its write cannot be undone by
it. A second run finds a **live** owner and refuses with one line naming it. An owner is **stale**, and is taken over with a warning
(what a requeue needs), when

* its process is gone: same host, and its PID no longer exists (or it is this very process: an
  earlier ``train()`` in it that ended with an error);
* it is an earlier allocation of the same SLURM job (a requeued job keeps its job id); or
* its heartbeat, refreshed every ``HEARTBEAT_S`` by a thread of the owning process, is older than
  the timeout (``checkpoint.stale_owner_after_s``; a host that died cannot be asked about its PIDs).

Ownership is checked again right before every publish (fencing): a run whose record was taken over
while it was alive (its heartbeat stalled past the timeout) stops saving instead of overwriting
its successor. The owner's temporaries carry its ``run_id``, so it only ever deletes its own.
Pure ``os``/``json``/``threading``: no torch.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Tuple

from lumos_megatron.checkpoint.directory import CheckpointError, write_atomically

OWNER_FILE = ".owner.json"
HEARTBEAT_PREFIX = ".owner.heartbeat."
HEARTBEAT_S = 30.0
DEFAULT_STALE_AFTER_S = 900.0


class OwnerConflict(CheckpointError):
    """Another live run owns the save directory."""


@dataclass(frozen=True)
class Owner:
    """Who writes into a save directory."""

    run_id: str
    host: str
    pid: int
    slurm_job_id: str
    slurm_step_id: str
    started: float
    heartbeat: float

    @classmethod
    def this_process(cls) -> "Owner":
        """A new record for the calling process (a fresh ``run_id``)."""
        now = time.time()
        return cls(uuid.uuid4().hex[:12], socket.gethostname(), os.getpid(), os.environ.get("SLURM_JOB_ID", ""),
                   os.environ.get("SLURM_STEP_ID", ""), now, now)

    def describe(self, now: Optional[float] = None) -> str:
        """``PID 12 on host h (SLURM job 7 step 0), started ..., heartbeat 5 s ago``."""
        now = time.time() if now is None else now
        slurm = f" (SLURM job {self.slurm_job_id} step {self.slurm_step_id or '?'})" if self.slurm_job_id else ""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return (f"PID {self.pid} on host {self.host}{slurm}, started {started}, "
                f"heartbeat {max(0.0, now - self.heartbeat):.0f} s ago")


def heartbeat_path(root: str | Path, run_id: str) -> Path:
    """The file in which run ``run_id`` refreshes its heartbeat."""
    return Path(root) / f"{HEARTBEAT_PREFIX}{run_id}"


def read_owner(root: str | Path) -> Optional[Owner]:
    """The owner record of ``root`` with its latest heartbeat, or None (no record, or one that
    cannot be parsed: a writer killed mid-write leaves an empty file, which owns nothing)."""
    try:
        data = json.loads((Path(root) / OWNER_FILE).read_text())
        owner = Owner(**{k: data[k] for k in Owner.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        beat = float(heartbeat_path(root, owner.run_id).read_text())
    except (OSError, ValueError):
        return owner  # not refreshed yet: the record's own time
    return Owner(**{**asdict(owner), "heartbeat": max(owner.heartbeat, beat)})


def _remove_heartbeat(root: str | Path, run_id: str) -> None:
    try:
        heartbeat_path(root, run_id).unlink()
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def stale_reason(owner: Owner, me: Owner, stale_after_s: float, now: Optional[float] = None) -> Optional[str]:
    """Why ``owner`` no longer writes into the directory, or None when it may still be alive."""
    now = time.time() if now is None else now
    if owner.host == me.host and owner.pid == me.pid:  # train() is not re-entrant
        return "it is an earlier run in this same process"
    if owner.host == me.host and not _pid_alive(owner.pid):
        return f"its process {owner.pid} on {owner.host} is gone"
    if owner.slurm_job_id and owner.slurm_job_id == me.slurm_job_id:
        return f"it is an earlier allocation of this SLURM job {me.slurm_job_id} (requeued)"
    if now - owner.heartbeat > stale_after_s:
        return f"its heartbeat is {now - owner.heartbeat:.0f} s old (limit {stale_after_s:.0f} s)"
    return None


def _write(path: Path, owner: Owner, exclusive: bool) -> None:
    text = json.dumps(asdict(owner), indent=1) + "\n"
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return
    write_atomically(path, text, tag=owner.run_id)


def claim(root: str | Path, stale_after_s: float = DEFAULT_STALE_AFTER_S, me: Optional[Owner] = None,
          warn=print) -> Tuple[Owner, Optional[Owner]]:
    """Become the owner of save directory ``root`` (created if missing); returns (this run's
    record, the stale owner taken over or None).

    Raises ``OwnerConflict`` (one line naming the owner) when another live run owns it. A stale
    owner is taken over with a warning (``warn``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    me = me or Owner.this_process()
    path = root / OWNER_FILE
    try:
        _write(path, me, exclusive=True)
        return me, None
    except FileExistsError:
        pass
    current = read_owner(root)
    if current is not None and current.run_id != me.run_id:
        reason = stale_reason(current, me, stale_after_s)
        if reason is None:
            raise OwnerConflict(
                f"{root} is the save directory of another live run ({current.describe()}); give this run "
                f"its own checkpoint.save, or stop the other one (it is taken over once {stale_after_s:.0f} s "
                f"pass without its heartbeat)")
        warn(f"WARNING: taking over the save directory {root} from {current.describe()}: {reason}")
    _write(path, me, exclusive=False)
    if current is not None and current.run_id != me.run_id:
        _remove_heartbeat(root, current.run_id)
    return me, current


def ensure_owner(root: str | Path, me: Owner) -> None:
    """Raise ``OwnerConflict`` unless ``me`` still owns ``root`` (checked before every publish)."""
    current = read_owner(root)
    if current is None or current.run_id != me.run_id:
        who = current.describe() if current else "nobody (the owner record is gone)"
        raise OwnerConflict(f"this run no longer owns the save directory {root}: it now belongs to {who}; "
                            "not publishing, so as not to overwrite the other run's checkpoints")


def release(root: str | Path, me: Owner) -> None:
    """Remove the owner record if it is still ``me`` (a clean end of the run), and ``me``'s
    heartbeat file in any case."""
    current = read_owner(root)
    if current is not None and current.run_id == me.run_id:
        try:
            (Path(root) / OWNER_FILE).unlink()
        except OSError:
            pass
    _remove_heartbeat(root, me.run_id)


class Heartbeat:
    """A daemon thread refreshing ``me``'s heartbeat in ``root`` every ``interval_s`` while it is
    still the owner (it stops on its own once another run has taken over).

    It writes only ``me``'s heartbeat file, never the owner record: a beat racing a takeover
    refreshes a file the new owner's record does not point at, and the thread then removes it."""

    def __init__(self, root: str | Path, me: Owner, interval_s: float = HEARTBEAT_S):
        self.root, self.me, self.interval_s = Path(root), me, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-owner-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s) and self.beat():
            pass

    def beat(self) -> bool:
        """Refresh the heartbeat once; False (and ``me``'s heartbeat file removed) once ``me`` no
        longer owns the directory: the next publish then raises ``OwnerConflict``."""
        current = read_owner(self.root)
        if current is None or current.run_id != self.me.run_id:
            _remove_heartbeat(self.root, self.me.run_id)
            return False
        try:
            write_atomically(heartbeat_path(self.root, self.me.run_id), f"{time.time():.6f}\n", tag=self.me.run_id)
        except OSError:
            pass  # a full or flaky disk: the next beat retries; the timeout is generous
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop beating and wait for a beat in flight (so a ``release`` that follows is not
        undone by it); the record stays until ``release``."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
