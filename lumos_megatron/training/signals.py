"""When to stop early: stop signals, the wall-time budget and a non-finite loss.

Every rank must stop after the *same* iteration (the save that follows is collective), but a
signal may reach the ranks at different moments and only the last pipeline stage knows the loss.
So each rank contributes its local view and one small all-reduce (MAX) per iteration turns the
views into one decision that every rank shares.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
"""SIGTERM: SLURM at preemption/time limit and torchrun forwarding its own; SIGUSR1: the usual
``sbatch --signal=USR1@90`` warning before the time limit."""


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/Inf; training stops without saving."""


@dataclass(frozen=True)
class StopDecision:
    """What the ranks agreed on after one iteration."""

    signal_received: bool = False
    time_exceeded: bool = False
    nonfinite: bool = False

    @property
    def stop(self) -> bool:
        """True when training must end after this iteration."""
        return self.signal_received or self.time_exceeded or self.nonfinite


class StopMonitor:
    """Installs the stop-signal handlers and makes the per-iteration stop decision.

    ``exit_duration_in_mins`` (None: no budget) is measured from ``start_time`` (``time.time()``;
    default: construction).
    """

    def __init__(self, exit_duration_in_mins: Optional[float] = None, start_time: Optional[float] = None):
        self.exit_duration_in_mins = exit_duration_in_mins
        self.start_time = time.time() if start_time is None else start_time
        self.received: Optional[int] = None
        self._previous: Dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        # Only note it: the current iteration finishes, then all ranks save together.
        if self.received is None:
            self.received = signum

    def install(self) -> "StopMonitor":
        """Route SIGTERM/SIGUSR1 to this monitor (main thread only, as Python requires)."""
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        """Restore the handlers that were there before ``install``."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def elapsed_minutes(self) -> float:
        """Wall time since ``start_time``."""
        return (time.time() - self.start_time) / 60.0

    def local_flags(self, loss: Optional[float], grad_norm: Optional[float]) -> torch.Tensor:
        """This rank's view: [signal received, time budget exceeded, non-finite loss/grad norm]."""
        over = self.exit_duration_in_mins is not None and self.elapsed_minutes() > self.exit_duration_in_mins
        bad = any(v is not None and not math.isfinite(v) for v in (loss, grad_norm))
        return torch.tensor([float(self.received is not None), float(over), float(bad)])

    def decide(self, loss: Optional[float], grad_norm: Optional[float]) -> StopDecision:
        """Collective: the all-ranks decision after this iteration (``loss`` None off the last
        pipeline stage)."""
        flags = self.local_flags(loss, grad_norm)
        if dist.is_initialized() and dist.get_world_size() > 1:
            device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
            flags = flags.to(device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            flags = flags.cpu()
        return StopDecision(*(bool(v > 0) for v in flags.tolist()))

    def signal_name(self) -> str:
        """Name of the received stop signal ('a stop signal' when it arrived on another rank)."""
        return signal.Signals(self.received).name if self.received is not None else "a stop signal"
