"""This run's checkpoint saves: ownership of the save directory, and saves that survive a bad day.

* **Ownership.** Before the first save, rank 0 claims ``checkpoint.save`` (``checkpoint/owner.py``)
  and every rank learns the verdict: a second live run refuses (``OwnerConflict``, exit 2), a stale
  owner is taken over with a warning. A heartbeat thread keeps the record fresh; it is released
  at the end of the run.
* **Periodic saves tolerate transient failures.** A periodic save that fails (an I/O error on a
  shared filesystem) is logged and training goes on; the next interval retries. After
  ``checkpoint.max_save_failures`` failures in a row the run stops (``SaveFailed``, exit 5). The
  final save and the signal-driven one are not retried: their failure stops the run at once.
* **A full disk stops the run** (``NoSpaceError``, exit 4): retrying cannot help, a person must
  free space; the partial save is gone and the previous checkpoint is intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import torch.distributed as dist

from lumos_megatron.checkpoint.directory import CheckpointError, NoSpaceError, read_latest
from lumos_megatron.checkpoint.owner import Heartbeat, Owner, OwnerConflict, claim, release
from lumos_megatron.checkpoint.save import on_rank0
from lumos_megatron.checkpoint.state import TrainProgress
from lumos_megatron.config import LumosConfig, dump_config


class SaveFailed(CheckpointError):
    """Checkpoint saves kept failing; the message names the last error."""


def _claim_on_rank0(root: str, stale_after_s: float) -> Tuple[Owner, Optional[Owner]]:
    """Rank 0 claims ``root``; every rank returns the same records or raises the same error."""
    return on_rank0(lambda: claim(root, stale_after_s, warn=lambda m: print(m, flush=True)),
                    f"claim the save directory {root}")


def _rewind_step(cfg: LumosConfig) -> Optional[int]:
    """The step this run resumes from when it rewinds its own save directory (``--load`` = ``--save``
    with a ``--ckpt-step`` below ``latest``): the one case where a save may replace an existing
    iteration and move ``latest`` backwards. None otherwise."""
    c = cfg.checkpoint
    if not (c.load and c.save and c.load_step is not None):
        return None
    if Path(c.load).resolve() != Path(c.save).resolve():
        return None
    try:
        latest = read_latest(c.save)
    except CheckpointError:
        return None
    return c.load_step if latest is not None and latest > c.load_step else None


class CheckpointSaver:
    """Saves of one training run into ``checkpoint.save``. Collective: every rank builds it."""

    def __init__(self, cfg: LumosConfig, parallel_layout, chunks, optimizer, scheduler):
        from lumos_megatron.data.tokenizer_record import with_recorded_tokenizers

        self.cfg, self.layout = cfg, parallel_layout
        self.chunks, self.optimizer, self.scheduler = chunks, optimizer, scheduler
        # The tokenizers go into every checkpoint, so that generation finds them (--load C alone).
        self.run_config = dump_config(with_recorded_tokenizers(cfg))
        self.root = cfg.checkpoint.save
        self.owner, previous = _claim_on_rank0(self.root, cfg.checkpoint.stale_owner_after_s)
        self.stale_tokens = (previous.run_id,) if previous else ()
        self.rewind_from = _rewind_step(cfg)
        self.failures = 0
        self.heartbeat = Heartbeat(self.root, self.owner).start() if dist.get_rank() == 0 else None

    def _save(self, progress: TrainProgress) -> None:
        from lumos_megatron.checkpoint.save import save_checkpoint

        c = self.cfg.checkpoint
        save_checkpoint(self.root, progress, self.chunks, self.optimizer, self.scheduler, self.layout,
                        self.run_config, self.cfg.train.global_batch_size,
                        self.cfg.parallel.use_distributed_optimizer, c.keep_last, owner=self.owner,
                        rewind_from=self.rewind_from, stale_tokens=self.stale_tokens)

    def periodic(self, progress: TrainProgress) -> bool:
        """An interval save; returns whether it was published. A failure other than a full disk or
        a lost directory is logged and training goes on, until ``max_save_failures`` in a row."""
        try:
            self._save(progress)
        except (NoSpaceError, OwnerConflict):
            raise
        except CheckpointError as err:
            self.failures += 1
            limit = self.cfg.checkpoint.max_save_failures
            if self.failures >= limit:
                raise SaveFailed(f"{self.failures} checkpoint saves in a row failed; the last: {err}") from err
            if dist.get_rank() == 0:
                print(f"WARNING: checkpoint save at iteration {progress.iteration} failed ({err}); training "
                      f"goes on and retries at the next interval ({self.failures} of {limit} failures in a "
                      "row allowed)", flush=True)
            return False
        self.failures = 0
        return True

    def final(self, progress: TrainProgress) -> None:
        """The last save of the run (end of training, stop signal, exit duration): not retried."""
        try:
            self._save(progress)
        except (NoSpaceError, OwnerConflict, SaveFailed):
            raise
        except CheckpointError as err:
            raise SaveFailed(f"the final checkpoint save failed: {err}") from err

    def close(self) -> None:
        """Stop the heartbeat and give the directory up (rank 0)."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
            release(self.root, self.owner)
