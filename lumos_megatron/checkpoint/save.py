"""Save a checkpoint: torch_dist shards into a temporary directory, a manifest of checksums, then an
atomic publish by the directory's owner."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional, Tuple, TypeVar

import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from lumos_megatron.checkpoint import directory as ckpt_dir
from lumos_megatron.checkpoint.dist_optimizer_fixes import prime_empty_state
from lumos_megatron.checkpoint.directory import CheckpointError, NoSpaceError
from lumos_megatron.checkpoint.integrity import describe_error
from lumos_megatron.checkpoint.manifest import checkpoint_files, hash_share, owner_run_id, write_manifest
from lumos_megatron.checkpoint.owner import Owner, OwnerConflict, ensure_owner
from lumos_megatron.platform.disk_space import directory_bytes, free_bytes, gigabytes, is_no_space, no_space_message
from lumos_megatron.checkpoint.sharded import build_state_dict, save_strategy
from lumos_megatron.checkpoint.state import TrainProgress, capture_rng_state, common_state
from lumos_megatron.checkpoint.writer_process import start_writer_results_queue

T = TypeVar("T")


def _only_rank_invariant(common):
    # The DistOpt's gathered state exists only on DP rank 0 and the RNG differs per rank by
    # design: leave them out of megatron's cross-rank consistency check of the common state.
    return {k: v for k, v in common.items() if k not in ("optimizer", "rng_state")}


def on_rank0(step: Callable[[], T], what: str) -> T:
    """Run a filesystem step on rank 0 and share its outcome: every rank returns the step's value,
    or raises the same error (a ``CheckpointError`` keeps its class; an ``OSError`` becomes
    ``CheckpointError("cannot WHAT: ...")``). A rank-0-only exception would leave the others
    waiting in the next collective. Doubles as a barrier."""
    outcome = [(None, None, None)]
    if dist.get_rank() == 0:
        try:
            outcome = [(step(), None, None)]
        except CheckpointError as err:
            outcome = [(None, type(err), str(err))]
        except OSError as err:
            outcome = [(None, CheckpointError, f"cannot {what}: {err}")]
    dist.broadcast_object_list(outcome, src=0)
    value, kind, message = outcome[0]
    if kind is not None:
        raise kind(message)
    return value


def _write_run_config(directory: Path, run_config: str) -> None:
    with open(directory / ckpt_dir.RUN_CONFIG_FILE, "w") as f:
        f.write(run_config)
        f.flush()
        os.fsync(f.fileno())


def _last_checkpoint_size(root: str) -> int:
    """Bytes of the newest published checkpoint under ``root`` (0 when there is none)."""
    found = ckpt_dir.list_checkpoints(root)
    return directory_bytes(ckpt_dir.checkpoint_dir(root, found[-1])) if found else 0


def warn_if_low_on_space(root: str, last_size: int) -> None:
    """Rank 0, before a save: warn early when the free space is below the last checkpoint's size
    (the next save will likely fail; time to free space before the run stops)."""
    free = free_bytes(root)
    if last_size and 0 <= free < 1.1 * last_size:
        print(f"WARNING: {root} has {gigabytes(free)} free, the last checkpoint took {gigabytes(last_size)}: "
              "the next save may run out of space", flush=True)


def _manifest(tmp: Path, owner_id: str, iteration: int) -> None:
    """Hash every file of the written checkpoint (each rank its share) and write the manifest on
    rank 0. Collective."""
    names = [checkpoint_files(tmp) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(names, src=0)
    mine = hash_share(tmp, names[0], dist.get_rank(), dist.get_world_size())
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    if dist.get_rank() == 0:
        files = {}
        for part in gathered:
            files.update(part or {})
        write_manifest(tmp, files, owner_id, iteration)


def save_checkpoint(root: str, progress: TrainProgress, chunks, optimizer, scheduler, layout,
                    run_config: str, global_batch_size: int, distributed_optimizer: bool,
                    keep_last: int, owner: Optional[Owner] = None, rewind_from: Optional[int] = None,
                    stale_tokens: Tuple[str, ...] = ()) -> Path:
    """Write ``root/iter_NNNNNNN`` (collective: every rank calls it) and point ``latest`` at it.

    Order, so that a kill at any moment leaves the previous checkpoint intact: rank 0 creates
    ``.iter_NNNNNNN.<run>.tmp``; all ranks write their shards; rank 0 adds ``run_config.yaml``;
    the ranks hash the files and rank 0 writes ``manifest.json``; once every rank is done, rank 0
    checks that this run still owns ``root`` (``owner``), renames the directory, rewrites
    ``latest`` (temp + rename) and prunes to the newest ``keep_last`` checkpoints and this run's
    own leftovers. An existing ``iter_N`` saved by another run is never replaced and ``latest``
    never moves backwards, unless this run resumed from an earlier step of the same directory
    (``rewind_from``, an explicit ``--ckpt-step``). ``root`` must be one filesystem seen by all
    ranks (as for Megatron). Returns the published directory.

    Raises ``NoSpaceError`` when the device ran out of space (the partial save removed, the
    previous checkpoint intact), ``OwnerConflict`` when another run took the directory over, and
    ``CheckpointError`` for other failures.
    """
    from megatron.core import dist_checkpointing

    start = time.perf_counter()
    token = owner.run_id if owner else ""
    tmp = ckpt_dir.temporary_dir(root, progress.iteration, token)
    final = ckpt_dir.checkpoint_dir(root, progress.iteration)
    last_size = _last_checkpoint_size(root) if dist.get_rank() == 0 else 0
    if dist.get_rank() == 0:
        warn_if_low_on_space(root, last_size)
    on_rank0(lambda: ckpt_dir.prepare_temporary(root, progress.iteration, token), f"create {tmp}")

    start_writer_results_queue()
    prime_empty_state(optimizer)  # DistOpt state before the first step (fix (a)); no-op otherwise
    common = common_state(progress, layout, scheduler, run_config, global_batch_size,
                          distributed_optimizer)
    state = build_state_dict(chunks, optimizer, common, is_loading=False, rng_state=capture_rng_state())
    failure: Optional[BaseException] = None
    try:
        dist_checkpointing.save(state, str(tmp), sharded_strategy=save_strategy(),
                                preprocess_common_before_consistancy_check=_only_rank_invariant)
        on_rank0(lambda: _write_run_config(tmp, run_config), f"write {tmp / ckpt_dir.RUN_CONFIG_FILE}")
        dist.barrier()  # every shard is on disk before it is hashed
        _manifest(tmp, token, progress.iteration)
    except (Exception, CheckpointException) as err:  # e.g. a full disk, on every rank alike
        failure = err
    if failure is not None:
        _fail(failure, root, tmp, last_size)

    def publish() -> None:
        if owner is not None:
            ensure_owner(root, owner)
        if final.exists() and rewind_from is None and owner_run_id(final) != (token or None):
            raise CheckpointError(f"{final} already exists, saved by another run; not replacing it (give this run "
                                  "its own checkpoint.save)")
        ckpt_dir.publish(tmp, final, token)
        latest = ckpt_dir.read_latest(root)
        if latest is not None and latest > progress.iteration and rewind_from is None:
            print(f"WARNING: {root}/{ckpt_dir.LATEST_FILE} names iteration {latest}, newer than this save "
                  f"({progress.iteration}); it is left as it is", flush=True)
        else:
            ckpt_dir.write_latest(root, progress.iteration)
        ckpt_dir.prune(root, keep_last, protect=progress.iteration, tokens=(token, *stale_tokens) if token else None)

    dist.barrier()  # every rank is done before the checkpoint becomes visible
    try:
        on_rank0(publish, f"publish checkpoint {final}")
    except CheckpointError as err:
        if isinstance(err, OwnerConflict):
            raise
        _fail(err, root, tmp, last_size)
    if dist.get_rank() == 0:
        print(f"saved checkpoint {final} (iteration {progress.iteration}, consumed samples "
              f"{progress.consumed_samples}) in {time.perf_counter() - start:.1f} s", flush=True)
    return final


def _fail(err: BaseException, root: str, tmp: Path, last_size: int) -> None:
    """Remove this save's partial output (rank 0) and raise the error every rank agrees on."""
    verdict = [None]
    if dist.get_rank() == 0:
        need = max(last_size, directory_bytes(tmp))
        shutil.rmtree(tmp, ignore_errors=True)
        if is_no_space(err, root, need):
            verdict = [("space", no_space_message(root, need) + "; the partial save was removed and the previous "
                                 "checkpoint is intact")]
        else:
            verdict = [("other", f"cannot save checkpoint {tmp}: {describe_error(err)}; the partial save was removed "
                                 f"and the previous checkpoint under {root} is untouched")]
    dist.broadcast_object_list(verdict, src=0)
    kind, message = verdict[0]
    raise (NoSpaceError if kind == "space" else CheckpointError)(message) from err
