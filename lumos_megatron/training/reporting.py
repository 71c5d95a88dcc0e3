"""Per-iteration reporting: the Megatron-style stdout line and TensorBoard scalars (last rank)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional


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


def format_log_line(stats: IterationStats, train_iters: int, global_batch_size: int) -> str:
    """Megatron's pipe-separated iteration line."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    grad = f"{stats.grad_norm:.3f}" if stats.grad_norm is not None else "n/a"
    return (
        f" [{stamp}] iteration {stats.iteration:8d}/{train_iters:8d} |"
        f" consumed samples: {stats.consumed_samples:12d} |"
        f" elapsed time per iteration (ms): {stats.elapsed_ms:.1f} |"
        f" learning rate: {stats.lr:.6E} |"
        f" global batch size: {global_batch_size:5d} |"
        f" lm loss: {stats.lm_loss:.6E} |"
        f" loss tokens: {stats.loss_tokens:8d} |"
        f" grad norm: {grad} |"
        + (f" mask ratio: {stats.extra['ardf/mask-ratio']:.3f} |" if "ardf/mask-ratio" in stats.extra else "")
        + f" number of skipped iterations: {int(stats.skipped):3d} |"
    )


@dataclass
class Reporter:
    """Prints and records iteration stats; only the process constructed with ``active`` does."""

    active: bool
    train_iters: int
    global_batch_size: int
    log_interval: int = 1
    tensorboard_dir: Optional[str] = None
    history: List[IterationStats] = field(default_factory=list)

    def __post_init__(self):
        self._writer = None
        if self.active and self.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.tensorboard_dir, max_queue=1000)

    def log(self, stats: IterationStats) -> None:
        """Record one iteration (stdout every ``log_interval``; TensorBoard every iteration)."""
        if not self.active:
            return
        self.history.append(stats)
        if stats.iteration % self.log_interval == 0 or stats.iteration == self.train_iters:
            print(format_log_line(stats, self.train_iters, self.global_batch_size), flush=True)
        if self._writer is not None:
            scalars: Dict[str, float] = {"lm loss": stats.lm_loss, "learning-rate": stats.lr}
            if stats.grad_norm is not None:
                scalars["grad-norm"] = stats.grad_norm
            scalars.update(stats.extra)
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, stats.iteration)
                self._writer.add_scalar(f"{name} vs samples", value, stats.consumed_samples)

    def close(self) -> None:
        """Flush TensorBoard and print the run summary."""
        if not self.active:
            return
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
        if self.history:
            first, last = self.history[0], self.history[-1]
            mean_ms = sum(s.elapsed_ms for s in self.history) / len(self.history)
            print(f"training summary: {len(self.history)} iterations, lm loss {first.lm_loss:.4f} -> "
                  f"{last.lm_loss:.4f}, {mean_ms:.1f} ms/iteration", file=sys.stdout)
        if self.tensorboard_dir:
            print(f"TensorBoard logs: {self.tensorboard_dir}  (tensorboard --logdir {self.tensorboard_dir})")
        sys.stdout.flush()
