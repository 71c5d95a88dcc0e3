"""Save a checkpoint: torch_dist shards into a temporary directory, then an atomic publish."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch.distributed as dist

from lumos_megatron.checkpoint import layout as ckpt_layout
from lumos_megatron.checkpoint.dist_optimizer_fixes import prime_empty_state
from lumos_megatron.checkpoint.sharded import build_state_dict, save_strategy
from lumos_megatron.checkpoint.state import TrainProgress, capture_rng_state, common_state
from lumos_megatron.checkpoint.writer_process import start_writer_results_queue

logger = logging.getLogger(__name__)


def _only_rank_invariant(common):
    # The DistOpt's gathered state exists only on DP rank 0 and the RNG differs per rank by
    # design: leave them out of megatron's cross-rank consistency check of the common state.
    return {k: v for k, v in common.items() if k not in ("optimizer", "rng_state")}


def save_checkpoint(root: str, progress: TrainProgress, chunks, optimizer, scheduler, layout,
                    run_config: str, global_batch_size: int, distributed_optimizer: bool,
                    keep_last: int) -> Path:
    """Write ``root/iter_NNNNNNN`` (collective: every rank calls it) and point ``latest`` at it.

    Order, so that a kill at any moment leaves the previous checkpoint intact: rank 0 creates
    ``.iter_NNNNNNN.tmp``; all ranks write their shards; rank 0 adds ``run_config.yaml``; after a
    barrier rank 0 renames the directory, rewrites ``latest`` (temp + rename) and prunes to the
    newest ``keep_last`` checkpoints. Returns the published directory.
    """
    from megatron.core import dist_checkpointing

    start = time.perf_counter()
    rank = dist.get_rank()
    tmp = ckpt_layout.temporary_dir(root, progress.iteration)
    final = ckpt_layout.checkpoint_dir(root, progress.iteration)
    if rank == 0:
        ckpt_layout.prepare_temporary(root, progress.iteration)
    dist.barrier()

    start_writer_results_queue()
    prime_empty_state(optimizer)  # a save before the first step (fix (a))
    common = common_state(progress, layout, scheduler, run_config, global_batch_size,
                          distributed_optimizer)
    state = build_state_dict(chunks, optimizer, common, is_loading=False, rng_state=capture_rng_state())
    dist_checkpointing.save(state, str(tmp), sharded_strategy=save_strategy(),
                            preprocess_common_before_consistancy_check=_only_rank_invariant)
    if rank == 0:
        config_path = tmp / ckpt_layout.RUN_CONFIG_FILE
        with open(config_path, "w") as f:
            f.write(run_config)
            f.flush()
            os.fsync(f.fileno())
    dist.barrier()  # every shard is on disk before the checkpoint becomes visible
    if rank == 0:
        ckpt_layout.publish(tmp, final)
        ckpt_layout.write_latest(root, progress.iteration)
        ckpt_layout.prune(root, keep_last, protect=progress.iteration)
        print(f"saved checkpoint {final} (iteration {progress.iteration}, consumed samples "
              f"{progress.consumed_samples}) in {time.perf_counter() - start:.1f} s", flush=True)
    dist.barrier()  # nobody starts the next save (or exits) before the publish
    return final
