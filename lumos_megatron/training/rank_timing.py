"""Each rank's own work per step, the measure behind the slowest-rank report.

Every step ends in collectives, so a rank's wall time per step is the same everywhere: the fast
ranks wait for the slow one. What differs is how long each rank works *before* it first waits
for the others on the gradient reduction: loading its data, then its forward and backward passes.
``RankWorkClock`` measures that span, from the step's start to the entry of megatron's gradient
finalisation (``finalize_model_grads_func``, where the data-parallel all-reduce waits for the
slowest rank). On GPU it uses CUDA events, read after the step (device time, no extra host
sync); on CPU ``time.perf_counter``.

Tensor, context and pipeline parallelism put collectives inside the forward and backward passes,
so the ranks of such a group wait for one another before that point: the report then names one
rank of the slow group.
"""

from __future__ import annotations

import time
from typing import Optional

import torch


class RankWorkClock:
    """Times this rank's own work per step and averages it over a logging window."""

    def __init__(self, use_cuda: Optional[bool] = None):
        self.use_cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
        self._window_ms = 0.0
        self._window_steps = 0
        self._ready_seen = False
        if self.use_cuda:
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._ready_event = torch.cuda.Event(enable_timing=True)
        self._start_s = self._ready_s = 0.0

    def start(self) -> None:
        """The step begins (before its data is loaded)."""
        self._ready_seen = False
        if self.use_cuda:
            self._start_event.record()
        else:
            self._start_s = time.perf_counter()

    def ready(self) -> None:
        """This rank's forward and backward passes are issued: what follows waits for others."""
        if self._ready_seen:  # one mark per step: the first finalisation
            return
        self._ready_seen = True
        if self.use_cuda:
            self._ready_event.record()
        else:
            self._ready_s = time.perf_counter()

    def stop(self) -> float:
        """The step ended: adds its own-work time to the window and returns it (ms)."""
        if not self._ready_seen:  # no finalisation seen: the whole step counts
            self.ready()
        if self.use_cuda:
            # Normally already complete (the step read its grad norm or loss on the host).
            self._ready_event.synchronize()
            ms = float(self._start_event.elapsed_time(self._ready_event))
        else:
            ms = (self._ready_s - self._start_s) * 1000.0
        self._window_ms += ms
        self._window_steps += 1
        return ms

    def take_window_mean_ms(self) -> float:
        """Mean own-work time per step since the last call (0 when no step ended), and reset."""
        mean = self._window_ms / self._window_steps if self._window_steps else 0.0
        self._window_ms, self._window_steps = 0.0, 0
        return mean

    def attach(self, transformer_config) -> None:
        """Mark ``ready`` when megatron's schedule calls the config's gradient finalisation."""
        finalize = transformer_config.finalize_model_grads_func

        def timed_finalize(*args, **kwargs):
            self.ready()
            return finalize(*args, **kwargs)

        transformer_config.finalize_model_grads_func = timed_finalize
