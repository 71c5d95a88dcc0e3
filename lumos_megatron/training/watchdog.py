"""Hang watchdog: a step far slower than usual dumps every thread's stack and ends the process.

A rank that hangs (a deadlocked collective, a stuck file system, a dead GPU) leaves every other
rank blocked in its next collective, and the job would sit idle until the scheduler's wall time.
Each rank therefore runs its own watchdog thread. The loop arms it when a step (or an evaluation,
a checkpoint load or save) begins and disarms it when that ends; a step still running after its
limit makes the thread

1. write one line naming the rank, the iteration and the limit to stderr,
2. dump the Python stack of every thread (``faulthandler``: works while the main thread is
   blocked inside a collective, which releases the GIL),
3. wait ``EXIT_GRACE_S``, then end the process with ``os._exit(exit_codes.HUNG)`` (no clean-up:
   the main thread may never return).

The ranks' limits agree to within milliseconds (every step ends in a collective, so all ranks
start a step together and time alike), so every rank fires too: the one that hangs and the ones
waiting for it. The grace lets them all dump before the first exit breaks their connections.

Limits: ``hang_timeout_s`` for the first ``MEDIAN_MIN_STEPS`` steps of the process (compilation,
warm-up) and for evaluations and checkpoint loads/saves; after that ``hang_timeout_factor`` x the
median of the last ``MEDIAN_WINDOW`` step times, at least ``hang_timeout_min_s``.

Should a C call hold the GIL so that the thread cannot run, ``faulthandler``'s own C timer, armed
with each step ``BACKSTOP_MARGIN_S`` beyond the limit, dumps the stacks and exits with status 1.
"""

from __future__ import annotations

import faulthandler
import os
import statistics
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, Deque, Iterator, Optional

from lumos_megatron.training import exit_codes

MEDIAN_WINDOW = 50
"""Step times the median is taken over (the newest)."""
MEDIAN_MIN_STEPS = 5
"""Steps measured before the median applies; a slow first step or two (compilation) barely
moves a median of five."""
EXIT_GRACE_S = 5.0
"""Seconds between the dump and the exit, so that the other ranks' watchdogs dump too."""
BACKSTOP_MARGIN_S = 60.0
"""The C-level backstop fires this long after the limit plus the grace."""


class HangWatchdog:
    """Per-rank watchdog over the loop's steps (see the module docstring).

    ``factor`` 0 disables it. ``clock`` (seconds, monotonic) is injectable for tests; the timing
    logic (``limit_s``, ``overdue``) needs no thread, which only ``start`` creates."""

    def __init__(self, factor: float, timeout_s: float, min_timeout_s: float, rank: int = 0,
                 clock: Callable[[], float] = time.monotonic, exit_grace_s: float = EXIT_GRACE_S):
        self.factor = factor
        self.timeout_s = timeout_s
        self.min_timeout_s = min_timeout_s
        self.rank = rank
        self.exit_grace_s = exit_grace_s
        self._clock = clock
        self._times: Deque[float] = deque(maxlen=MEDIAN_WINDOW)
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._stopped = False
        self.fired = False
        # What is being watched: its description, start and limit (None: nothing armed).
        self._what = ""
        self._armed_at: Optional[float] = None
        self._limit: float = 0.0
        self._is_step = False
        self._backstop = False

    @property
    def enabled(self) -> bool:
        """False when ``factor`` is 0: nothing is armed and no thread runs."""
        return self.factor > 0

    def limit_s(self) -> float:
        """The limit of the next step: the fixed one until ``MEDIAN_MIN_STEPS`` steps are
        measured, then ``factor`` x the recent median, at least ``min_timeout_s``."""
        if len(self._times) < MEDIAN_MIN_STEPS:
            return self.timeout_s
        return max(self.factor * statistics.median(self._times), self.min_timeout_s)

    def _arm(self, what: str, limit: float, is_step: bool) -> None:
        if not self.enabled:
            return
        with self._cond:
            self._what, self._limit, self._is_step = what, limit, is_step
            self._armed_at = self._clock()
            self._cond.notify()
        if self._backstop:
            # Re-armed per step; only fires when the thread above cannot run (GIL held).
            faulthandler.dump_traceback_later(limit + self.exit_grace_s + BACKSTOP_MARGIN_S,
                                              exit=True, file=_stderr())

    def _disarm(self) -> Optional[float]:
        """Disarm; returns the watched duration."""
        if not self.enabled:
            return None
        with self._cond:
            if self._armed_at is None:
                return None
            elapsed = self._clock() - self._armed_at
            self._armed_at = None
            self._cond.notify()
        if self._backstop:
            faulthandler.cancel_dump_traceback_later()
        return elapsed

    def step_started(self, iteration: int) -> None:
        """Arm for training step ``iteration`` (1-based) with ``limit_s()``."""
        if self.enabled:
            self._arm(f"iteration {iteration}", self.limit_s(), is_step=True)

    def step_finished(self) -> None:
        """Disarm and add the step's time to the median window."""
        elapsed = self._disarm()
        if elapsed is not None:
            self._times.append(elapsed)

    @contextmanager
    def watching(self, what: str) -> Iterator[None]:
        """Watch a phase that is not a step (an evaluation, a checkpoint save) with the fixed
        ``timeout_s``; its time stays out of the median."""
        self._arm(what, self.timeout_s, is_step=False)
        try:
            yield
        finally:
            self._disarm()

    def overdue(self, now: Optional[float] = None) -> Optional[str]:
        """What has run past its limit at ``now`` (default: the clock), as one line; else None."""
        now = self._clock() if now is None else now
        if self._armed_at is None or now - self._armed_at <= self._limit:
            return None
        if self._is_step and len(self._times) >= MEDIAN_MIN_STEPS:
            basis = (f"{self.factor:g} x the median step time {statistics.median(self._times):.3f} s, "
                     f"at least {self.min_timeout_s:g} s")
        else:
            basis = "the fixed train.hang_timeout_s"
        return (f"{self._what} has run for {now - self._armed_at:.2f} s, over its limit of "
                f"{self._limit:.2f} s ({basis})")

    def start(self) -> "HangWatchdog":
        """Start the watching thread (nothing when disabled)."""
        if self.enabled and self._thread is None:
            self._backstop = True
            self._thread = threading.Thread(target=self._run, name="lumos-hang-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """End the watching thread. Once it has fired this blocks until it ends the process, so
        that an error raised meanwhile (a peer's exit breaking a collective) cannot end the
        process with another status."""
        if self._thread is None:
            return
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()  # after firing it never returns: the thread's os._exit ends the process
        if self._backstop:
            faulthandler.cancel_dump_traceback_later()
            self._backstop = False
        self._thread = None

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._stopped:
                    return
                reason = self.overdue()
                if reason is not None:
                    self.fired = True
                    break
                # Sleep until the deadline exactly: all ranks must fire at about the same time.
                timeout = None if self._armed_at is None else self._armed_at + self._limit - self._clock()
                self._cond.wait(None if timeout is None else max(timeout, 0.0) + 1e-3)
        self._fire(reason)

    def _fire(self, reason: str) -> None:
        faulthandler.cancel_dump_traceback_later()
        out = _stderr()
        out.write(f"lumos_megatron: hang watchdog on rank {self.rank}: {reason}; dumping every "
                  f"thread's stack, then exiting with status {exit_codes.HUNG}\n")
        out.flush()
        faulthandler.dump_traceback(file=out, all_threads=True)
        out.flush()
        time.sleep(self.exit_grace_s)
        os._exit(exit_codes.HUNG)


def _stderr():
    """A stderr with a file descriptor (faulthandler writes to the descriptor)."""
    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError):
        return sys.__stderr__


def watchdog_from_config(train_cfg, rank: int) -> HangWatchdog:
    """The watchdog ``train.hang_timeout_factor`` / ``hang_timeout_s`` / ``hang_timeout_min_s``
    describe, for ``rank`` (not started)."""
    return HangWatchdog(train_cfg.hang_timeout_factor, train_cfg.hang_timeout_s,
                        train_cfg.hang_timeout_min_s, rank=rank)
