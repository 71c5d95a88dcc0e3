"""The checkpoint writer's helper process, started so that it survives stop signals.

Kept free of heavy imports: the helper is a *spawned* process that imports this module to run
its initializer.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from multiprocessing.managers import SyncManager

_MANAGER = None


def _ignore_stop_signals() -> None:
    """Initializer of the manager process: the stop signals are for the training ranks."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def start_writer_results_queue() -> None:
    """Create dist_checkpointing's results queue ourselves (idempotent).

    megatron's writer keeps its results queue in a spawned Manager process, created on the first
    save and reused (dist_checkpointing/strategies/filesystem_async.py:51-56). That process is in
    the rank's process group, and torchrun (``os.killpg``) and SLURM deliver SIGTERM/SIGUSR1 to
    the whole group: it would die and fail the very save the signal asks for.
    """
    global _MANAGER
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        _MANAGER = SyncManager(ctx=mp.get_context("spawn"))
        _MANAGER.start(initializer=_ignore_stop_signals)
        filesystem_async._results_queue = _MANAGER.Queue()
