"""Per-iteration reporting: the Megatron-style stdout line and TensorBoard scalars (last rank).

Memory stays bounded however long the run: the reporter keeps only a window of recent
``IterationStats`` plus running totals for the end-of-training summary.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Optional

import torch


@dataclass
class IterationStats:
    """What one optimizer step produced (already reduced over the global batch)."""

    iteration: int  # 1-based, as Megatron prints it
    consumed_samples: int
    elapsed_ms: float
    lr: float
    lm_loss: float
    loss_tokens: int
    grad_norm: Optional[float]
    skipped: bool = False
    extra: Dict[str, float] = field(default_factory=dict)
    """Further TensorBoard scalars by name (``loss/frame_k``, ``ardf/mask-ratio``)."""
    tokens: int = 0
    """Tokens computed by the whole step, padding included (padded rows x their length, or the
    packed sequences' lengths)."""
    model_flops: float = 0.0
    """Model FLOPs of the whole step (``training.flops.step_flops``), 0 when not counted."""
    memory_gb: float = 0.0
    """Peak device memory (GPU) or resident set (CPU) of the reporting process, GiB."""
    global_batch_size: int = 0
    """Samples of this step (joint training: the image or video step's); 0 = the run's."""
    slowest_rank: Optional[int] = None
    """The rank whose own work took longest over the logging window that ends here (None: not
    gathered at this iteration, or a single process)."""
    slowest_rank_ms: float = 0.0
    """That rank's mean own-work time per step over the window, ms (``training.rank_timing``)."""


@dataclass(frozen=True)
class Throughput:
    """Per-device rates of one iteration."""

    tokens_per_s: float
    tflops: float
    mfu: Optional[float]


def throughput(stats: IterationStats, world_size: int, peak_tflops: Optional[float]) -> Throughput:
    """Tokens/s and model TFLOP/s per device, and MFU against ``peak_tflops`` (None: unknown)."""
    seconds = max(stats.elapsed_ms, 1e-6) / 1000.0
    tflops = stats.model_flops / seconds / world_size / 1e12
    return Throughput(stats.tokens / seconds / world_size, tflops,
                      tflops / peak_tflops if peak_tflops else None)


def peak_memory_gb() -> float:
    """Peak allocated CUDA memory of this process, or its resident set size on CPU (GiB)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def format_eta(seconds: float) -> str:
    """``H:MM:SS`` (days folded into hours)."""
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_log_line(stats: IterationStats, train_iters: int, global_batch_size: int,
                    rates: Optional[Throughput] = None, eta_s: Optional[float] = None) -> str:
    """Megatron's pipe-separated iteration line (plus tokens/s/GPU, MFU and ETA when known)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    grad = f"{stats.grad_norm:.3f}" if stats.grad_norm is not None else "n/a"
    perf = ""
    if rates is not None and stats.model_flops > 0:
        perf = (f" throughput per GPU (TFLOP/s/GPU): {rates.tflops:.3f} |"
                f" tokens/s/GPU: {rates.tokens_per_s:.1f} |"
                + (f" MFU: {rates.mfu:.2%} |" if rates.mfu is not None else ""))
    eta = f" ETA: {format_eta(eta_s)} |" if eta_s is not None else ""
    slowest = (f" slowest rank {stats.slowest_rank} ({stats.slowest_rank_ms:.1f} ms) |"
               if stats.slowest_rank is not None else "")
    return (
        f" [{stamp}] iteration {stats.iteration:8d}/{train_iters:8d} |"
        f" consumed samples: {stats.consumed_samples:12d} |"
        f" elapsed time per iteration (ms): {stats.elapsed_ms:.1f} |"
        + perf + f" learning rate: {stats.lr:.6E} |"
        f" global batch size: {stats.global_batch_size or global_batch_size:5d} |"
        f" lm loss: {stats.lm_loss:.6E} |"
        f" loss tokens: {stats.loss_tokens:8d} |"
        f" grad norm: {grad} |"
        + (f" mask ratio: {stats.extra['ardf/mask-ratio']:.3f} |" if "ardf/mask-ratio" in stats.extra else "")
        + (f" padding: {stats.extra['data/padding-fraction']:.1%} |" if "data/padding-fraction" in stats.extra else "")
        + (f" DP imbalance: {stats.extra['data/dp-imbalance']:.3f} |" if "data/dp-imbalance" in stats.extra else "")
        + f" number of skipped iterations: {int(stats.skipped):3d} |"
        + slowest + eta
    )


HISTORY_WINDOW = 100
"""Iterations ``Reporter.history`` keeps (the newest); older ones only count in the totals."""
ETA_WINDOW = 20
"""The ETA extrapolates the mean time of this many recent iterations."""


@dataclass
class Reporter:
    """Prints and records iteration stats; only the process constructed with ``active`` does.

    ``history`` holds the newest ``history_window`` iterations only: a long run would otherwise
    keep every iteration's stats (about 1.3 KB each at 7 frames, 130 MB per 100k iterations).
    The summary printed by ``close`` comes from running totals, so it still covers every
    iteration logged."""

    active: bool
    train_iters: int
    global_batch_size: int
    log_interval: int = 1
    tensorboard_dir: Optional[str] = None
    world_size: int = 1
    peak_tflops: Optional[float] = None
    history_window: int = HISTORY_WINDOW
    history: Deque[IterationStats] = field(init=False, repr=False)

    def __post_init__(self):
        self.history = deque(maxlen=self.history_window)
        # Running totals of every iteration logged in this process (the summary's numbers).
        self.count = 0
        self.total_elapsed_ms = 0.0
        self.first_loss: Optional[float] = None
        self.last_loss: Optional[float] = None
        # Times for the ETA; the first iteration (warm-up, compilation) never enters it.
        self._recent_ms: Deque[float] = deque(maxlen=ETA_WINDOW)
        self._writer = None
        if self.active and self.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.tensorboard_dir, max_queue=1000)

    def is_log_iteration(self, iteration: int) -> bool:
        """Whether ``iteration`` (1-based) prints a line: every ``log_interval``, and the last.
        Every rank can ask (the slowest-rank gather at these iterations is collective)."""
        return iteration % self.log_interval == 0 or iteration == self.train_iters

    def record(self, stats: IterationStats) -> float:
        """Add ``stats`` to the window and the running totals (no output); returns the ETA in
        seconds: the iterations left x the mean of the last ``ETA_WINDOW`` (the first iteration
        only while it is the only one)."""
        if self.count > 0:
            self._recent_ms.append(stats.elapsed_ms)
        self.count += 1
        self.total_elapsed_ms += stats.elapsed_ms
        if self.first_loss is None:
            self.first_loss = stats.lm_loss
        self.last_loss = stats.lm_loss
        self.history.append(stats)
        # Sums at most ETA_WINDOW floats in place: nothing is copied per iteration.
        recent_ms, n = (sum(self._recent_ms), len(self._recent_ms)) if self._recent_ms else (stats.elapsed_ms, 1)
        return (self.train_iters - stats.iteration) * recent_ms / n / 1e3

    def log(self, stats: IterationStats) -> None:
        """Record one iteration (stdout every ``log_interval``; TensorBoard every iteration).

        TensorBoard tags (each also as ``<tag> vs samples``): ``lm loss``, ``learning-rate``,
        ``iteration-time``, ``loss-tokens`` (loss positions of the step), ``tokens`` (tokens the
        step computed, padding included; ``data/padding-fraction`` says how much of it was padding and
        ``data/dp-imbalance`` the max / mean of the DP ranks' planned work), ``throughput``/``tokens-per-sec-per-gpu``/``mfu`` when
        FLOPs are counted, ``memory/peak-gb``, ``grad-norm``, ``time/slowest-rank-ms`` and
        ``time/slowest-rank`` once per logging window (several processes) and the objective's
        extras."""
        if not self.active:
            return
        eta_s = self.record(stats)
        rates = throughput(stats, self.world_size, self.peak_tflops)
        if self.is_log_iteration(stats.iteration):
            print(format_log_line(stats, self.train_iters, self.global_batch_size, rates, eta_s), flush=True)
        if self._writer is not None:
            scalars: Dict[str, float] = {"lm loss": stats.lm_loss, "learning-rate": stats.lr,
                                         "iteration-time": stats.elapsed_ms / 1e3,
                                         # Per step: what scaling-law collection sums up.
                                         "loss-tokens": stats.loss_tokens}
            if stats.tokens > 0:
                scalars["tokens"] = stats.tokens
            if stats.model_flops > 0:
                scalars["throughput"] = rates.tflops
                scalars["tokens-per-sec-per-gpu"] = rates.tokens_per_s
                if rates.mfu is not None:
                    scalars["mfu"] = rates.mfu
            if stats.memory_gb > 0:
                scalars["memory/peak-gb"] = stats.memory_gb
            if stats.grad_norm is not None:
                scalars["grad-norm"] = stats.grad_norm
            if stats.slowest_rank is not None:
                scalars["time/slowest-rank-ms"] = stats.slowest_rank_ms
                scalars["time/slowest-rank"] = stats.slowest_rank
            scalars.update(stats.extra)
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, stats.iteration)
                self._writer.add_scalar(f"{name} vs samples", value, stats.consumed_samples)

    def summary_line(self) -> Optional[str]:
        """The end-of-training summary over every iteration logged (None before the first)."""
        if not self.count:
            return None
        return (f"training summary: {self.count} iterations, lm loss {self.first_loss:.4f} -> "
                f"{self.last_loss:.4f}, {self.total_elapsed_ms / self.count:.1f} ms/iteration")

    def log_evaluation(self, iteration: int, consumed_samples: int, losses: Dict[str, float],
                       extra: Optional[Dict[str, float]] = None) -> None:
        """Megatron's validation block (``lm loss`` value and PPL, plus per-stream losses in
        joint training) and the ``lm loss validation`` scalars; ``extra`` (the objective's, e.g.
        ``loss/frame_k``) go to TensorBoard only, as ``<name> validation``."""
        if not self.active:
            return
        text = " | ".join(f"{name} value: {value:.6E} | {name} PPL: {math.exp(min(value, 700.0)):.6E}"
                          for name, value in losses.items())
        line = f" validation loss at iteration {iteration} | {text} |"
        bar = "-" * len(line)
        print(f"{bar}\n{line}\n{bar}", flush=True)
        if self._writer is not None:
            for name, value in losses.items():
                self._writer.add_scalar(f"{name} validation", value, iteration)
                self._writer.add_scalar(f"{name} validation vs samples", value, consumed_samples)
                self._writer.add_scalar(f"{name} validation ppl", math.exp(min(value, 700.0)), iteration)
            for name, value in (extra or {}).items():
                self._writer.add_scalar(f"{name} validation", value, iteration)
                self._writer.add_scalar(f"{name} validation vs samples", value, consumed_samples)

    def close(self) -> None:
        """Flush TensorBoard and print the run summary."""
        if not self.active:
            return
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
        summary = self.summary_line()
        if summary is not None:
            print(summary, file=sys.stdout)
        if self.tensorboard_dir:
            print(f"TensorBoard logs: {self.tensorboard_dir}  (tensorboard --logdir {self.tensorboard_dir})")
        sys.stdout.flush()
