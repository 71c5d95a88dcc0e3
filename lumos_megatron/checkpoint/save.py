"""Save a checkpoint: torch_dist shards into a temporary directory, then an atomic publish."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from lumos_megatron.checkpoint import directory as ckpt_dir
from lumos_megatron.checkpoint.dist_optimizer_fixes import prime_empty_state
from lumos_megatron.checkpoint.integrity import describe_error
from lumos_megatron.checkpoint.directory import CheckpointError
from lumos_megatron.checkpoint.sharded import build_state_dict, save_strategy
from lumos_megatron.checkpoint.state import TrainProgress, capture_rng_state, common_state
from lumos_megatron.checkpoint.writer_process import start_writer_results_queue


def _only_rank_invariant(common):
    # The DistOpt's gathered state exists only on DP rank 0 and the RNG differs per rank by
    # design: leave them out of megatron's cross-rank consistency check of the common state.
    return {k: v for k, v in common.items() if k not in ("optimizer", "rng_state")}


def _on_rank0(step: Callable[[], None], what: str) -> None:
    """Run a filesystem step on rank 0 and share its outcome: every rank raises the same
    ``CheckpointError`` if it failed (a rank-0-only exception would leave the others waiting in
    the next collective). Doubles as a barrier."""
    error: Optional[str] = None
    if dist.get_rank() == 0:
        try:
            step()
        except OSError as err:
            error = f"cannot {what}: {err}"
    shared = [error]
    dist.broadcast_object_list(shared, src=0)
    if shared[0] is not None:
        raise CheckpointError(shared[0])


def _write_run_config(directory: Path, run_config: str) -> None:
    with open(directory / ckpt_dir.RUN_CONFIG_FILE, "w") as f:
        f.write(run_config)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(root: str, progress: TrainProgress, chunks, optimizer, scheduler, layout,
                    run_config: str, global_batch_size: int, distributed_optimizer: bool,
                    keep_last: int) -> Path:
    """Write ``root/iter_NNNNNNN`` (collective: every rank calls it) and point ``latest`` at it.

    Order, so that a kill at any moment leaves the previous checkpoint intact: rank 0 creates
    ``.iter_NNNNNNN.tmp``; all ranks write their shards; rank 0 adds ``run_config.yaml``; once
    every rank is done, rank 0 renames the directory, rewrites ``latest`` (temp + rename) and
    prunes to the newest ``keep_last`` checkpoints. ``root`` must be one filesystem seen by all
    ranks (as for Megatron). Returns the published directory.
    """
    from megatron.core import dist_checkpointing

    start = time.perf_counter()
    tmp = ckpt_dir.temporary_dir(root, progress.iteration)
    final = ckpt_dir.checkpoint_dir(root, progress.iteration)
    _on_rank0(lambda: ckpt_dir.prepare_temporary(root, progress.iteration), f"create {tmp}")

    start_writer_results_queue()
    prime_empty_state(optimizer)  # DistOpt state before the first step (fix (a)); no-op otherwise
    common = common_state(progress, layout, scheduler, run_config, global_batch_size,
                          distributed_optimizer)
    state = build_state_dict(chunks, optimizer, common, is_loading=False, rng_state=capture_rng_state())
    try:
        dist_checkpointing.save(state, str(tmp), sharded_strategy=save_strategy(),
                                preprocess_common_before_consistancy_check=_only_rank_invariant)
    except (Exception, CheckpointException) as err:  # e.g. a full disk, on every rank alike
        raise CheckpointError(f"cannot save checkpoint {tmp}: {describe_error(err)}; the previous "
                              f"checkpoint under {root} is untouched") from err

    def publish() -> None:
        _write_run_config(tmp, run_config)
        ckpt_dir.publish(tmp, final)
        ckpt_dir.write_latest(root, progress.iteration)
        ckpt_dir.prune(root, keep_last, protect=progress.iteration)

    dist.barrier()  # every shard is on disk before the checkpoint becomes visible
    _on_rank0(publish, f"publish checkpoint {final}")
    if dist.get_rank() == 0:
        print(f"saved checkpoint {final} (iteration {progress.iteration}, consumed samples "
              f"{progress.consumed_samples}) in {time.perf_counter() - start:.1f} s", flush=True)
    return final
