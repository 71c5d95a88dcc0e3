"""Resume from a checkpoint at any TP/PP/DP layout (dist_checkpointing reshards the tensors)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import List, Optional

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from lumos_megatron.checkpoint.dist_optimizer_fixes import apply_load_fix, prime_empty_state, unshare_steps
from lumos_megatron.checkpoint.integrity import (
    describe_error,
    model_shape_problems,
    require_common_file,
    verify_shard_files,
)
from lumos_megatron.checkpoint.directory import CheckpointError, checkpoint_dir, list_checkpoints, resolve_load
from lumos_megatron.checkpoint.manifest import verify as verify_manifest
from lumos_megatron.checkpoint.sharded import (
    build_state_dict,
    model_keys,
    model_sharded_state_dict,
    sharding_metadata,
    unwrap,
)
from lumos_megatron.checkpoint.state import (
    CHECKPOINT_VERSION,
    TrainProgress,
    capture_rng_state,
    layout_signature,
    is_model_only,
    progress_from_common,
    restore_rng_state,
)

def _raise_if_any(problems: List[str], path: Path) -> None:
    """All ranks raise the same error if any rank found a problem (a pipeline stage only sees its
    own parameters; a rank raising alone would leave the others hanging in the load)."""
    gathered: List[Optional[List[str]]] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, problems)
    found = [p for rank_problems in gathered for p in (rank_problems or [])]
    found = list(dict.fromkeys(found))  # de-duplicated, first occurrence order
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise CheckpointError(f"checkpoint {path} does not match the model configuration: "
                              + "; ".join(found[:3]) + more)


def _check_common(common: dict, path: Path, distributed_optimizer: Optional[bool]) -> None:
    """``distributed_optimizer`` None: the optimizer state is not loaded (weights only)."""
    version = common.get("checkpoint_version")
    if version != CHECKPOINT_VERSION or "train_state" not in common:
        raise CheckpointError(f"{path} is not a lumos_megatron checkpoint of version {CHECKPOINT_VERSION} "
                              f"(found version {version!r})")
    if distributed_optimizer is None:
        return
    saved = bool(common.get("distributed_optimizer"))
    if saved != distributed_optimizer:
        raise CheckpointError(
            f"checkpoint {path} was saved {'with' if saved else 'without'} the distributed optimizer, "
            f"whose optimizer states are not interchangeable; set parallel.use_distributed_optimizer="
            f"{str(saved).lower()}")


def _read_common(path: Path) -> dict:
    from megatron.core import dist_checkpointing

    verify_shard_files(path)
    require_common_file(path)
    try:
        return dist_checkpointing.load_common_state_dict(str(path))
    except Exception as err:  # a missing/damaged common.pt or metadata.json
        raise CheckpointError(f"cannot read the common state of checkpoint {path} (common.pt): "
                              f"{describe_error(err)}") from None


def _load_sharded(state: dict, path: Path) -> dict:
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.serialization import get_default_load_sharded_strategy

    try:
        with warnings.catch_warnings():
            # torch DCP deprecation notices about the APIs megatron 0.16 calls; nothing to act on.
            warnings.simplefilter("ignore", FutureWarning)
            return dist_checkpointing.load(state, str(path),
                                           sharded_strategy=get_default_load_sharded_strategy(str(path)))
    except (Exception, CheckpointException) as err:  # torch's CheckpointException is a BaseException
        raise CheckpointError(f"cannot load checkpoint {path}: {describe_error(err)}") from err


def _problems_everywhere(path: Path, mode: str) -> List[str]:
    """Every rank's findings on checkpoint ``path`` (manifest sizes and, with ``full``, this rank's
    share of the checksums; the torch_dist shard sizes; common.pt), merged: all ranks agree."""
    problems = verify_manifest(path, mode, dist.get_rank(), dist.get_world_size())
    try:
        verify_shard_files(path)
        require_common_file(path)
    except CheckpointError as err:
        problems.append(str(err))
    gathered: List[Optional[List[str]]] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, problems)
    return list(dict.fromkeys(p for rank_problems in gathered for p in (rank_problems or [])))


def choose_checkpoint(root: str, step: Optional[int], mode: str = "full", fallback: bool = True) -> Optional[Path]:
    """The checkpoint directory to resume from, verified (``checkpoint.verify``). Collective.

    When the one ``latest`` names fails, ``fallback`` loads the newest older one that passes, with
    a loud warning; an explicit ``step`` never falls back. Raises ``CheckpointError`` naming the
    file that failed; None when ``root`` holds no checkpoint."""
    path = resolve_load(root, step)
    if path is None:
        return None
    problems = _problems_everywhere(path, mode)
    if not problems:
        return path
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    failed = f"checkpoint {path} failed verification: {problems[0]}{more}"
    if step is not None or not fallback:
        raise CheckpointError(failed, earlier_step=True)
    iteration = int(path.name.split("_")[1])
    for older in reversed([i for i in list_checkpoints(root) if i < iteration]):
        candidate = checkpoint_dir(root, older)
        if not _problems_everywhere(candidate, mode):
            if dist.get_rank() == 0:
                bar = "!" * 100
                print(f"{bar}\nWARNING: {failed}\nWARNING: loading the newest checkpoint that passes instead: "
                      f"{candidate} (checkpoint.fallback=true)\n{bar}", flush=True)
            return candidate
    raise CheckpointError(f"{failed}; no older checkpoint under {root} passes either")


def load_model_weights(path: Path, chunks) -> dict:
    """Load only the model weights of checkpoint directory ``path`` into ``chunks`` (any saved
    layout, resharded; the stored dtype is cast to the parameters'). Collective. Returns the
    checkpoint's common state."""
    common = _read_common(path)
    _check_common(common, path, None)
    metadata = sharding_metadata()
    _raise_if_any(model_shape_problems(path, model_sharded_state_dict(chunks, metadata)), path)
    loaded = _load_sharded(model_sharded_state_dict(chunks, metadata), path)
    for key, chunk in zip(model_keys(len(chunks)), chunks):
        unwrap(chunk).load_state_dict(loaded[key], strict=True)
    return common


def load_checkpoint(root: str, step: Optional[int], chunks, optimizer, scheduler, layout,
                    distributed_optimizer: bool, finetune: bool = False, verify: str = "full",
                    fallback: bool = True) -> Optional[TrainProgress]:
    """Load model, optimizer, LR schedule, progress and (same layout only) RNG states.

    With ``finetune`` (Megatron ``--finetune``), or for a checkpoint that holds weights only (an
    imported one), only the model weights are loaded: the optimizer and schedule stay fresh and
    training starts at iteration 0 with no samples consumed.

    The checkpoint is verified first (``choose_checkpoint``: ``verify`` against its manifest, with
    ``fallback`` to the newest older one that passes).

    Collective. Returns None (training starts from scratch) when ``root`` holds no checkpoint;
    raises ``CheckpointError`` (one line naming the path, the file or the parameter) for a
    ``latest`` file naming a missing directory, a corrupt, truncated or missing file with no
    fallback, or a model whose parameter shapes differ from the checkpoint's.
    """
    start = time.perf_counter()
    rank0 = dist.get_rank() == 0
    path = choose_checkpoint(root, step, verify, fallback)
    if path is None:
        if rank0:
            print(f"WARNING: no checkpoint found under {root} (no latest_checkpointed_iteration.txt); "
                  "training from scratch", flush=True)
        return None
    common = _read_common(path)
    if finetune or is_model_only(common):
        load_model_weights(path, chunks)
        if rank0:
            why = "--finetune" if finetune else "the checkpoint holds model weights only"
            print(f"loaded model weights of {path} ({why}): starting at iteration 0 with a fresh "
                  f"optimizer in {time.perf_counter() - start:.1f} s", flush=True)
        return TrainProgress(iteration=0, consumed_samples=0)
    _check_common(common, path, distributed_optimizer)
    _raise_if_any(model_shape_problems(path, model_sharded_state_dict(chunks, sharding_metadata())), path)

    # RNG states are per rank: they only mean something for the same ranks in the same layout.
    same_layout = common.get("parallel_layout") == layout_signature(layout)
    apply_load_fix()
    prime_empty_state(optimizer)
    state = build_state_dict(chunks, optimizer, {}, is_loading=True,
                             rng_state=capture_rng_state() if same_layout else None)
    loaded = _load_sharded(state, path)
    for key, chunk in zip(model_keys(len(chunks)), chunks):
        unwrap(chunk).load_state_dict(loaded[key], strict=True)
    with torch.no_grad():
        optimizer.load_state_dict(loaded["optimizer"])
    unshare_steps(optimizer)  # fix (c): silent divergence after resume otherwise
    scheduler.load_state_dict(loaded["opt_param_scheduler"])
    if same_layout:
        restore_rng_state(loaded["rng_state"])
    progress = progress_from_common(common)
    if rank0:
        saved = common.get("parallel_layout") or {}
        note = "" if same_layout else (
            " (resharded from " + " x ".join(f"{k.upper()} {saved.get(k)}" for k in ("tp", "pp", "cp", "dp"))
            + "; per-rank RNG states not restored)")
        print(f"loaded checkpoint {path} at iteration {progress.iteration}, consumed samples "
              f"{progress.consumed_samples}{note} in {time.perf_counter() - start:.1f} s", flush=True)
    return progress
