"""Checks run on a checkpoint before loading it, so that a bad one fails with one clear line.

Every rank runs the same checks on the same files, so every rank reaches the same verdict and
none is left waiting in a collective while another raises. Both checks read metadata only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

from lumos_megatron.checkpoint.directory import CheckpointError, resolve_load

_DCP_METADATA = ".metadata"


def _read_dcp_metadata(path: Path):
    from torch.distributed.checkpoint import FileSystemReader

    if not (path / _DCP_METADATA).is_file():
        raise CheckpointError(f"{path} is not a complete torch_dist checkpoint: {path / _DCP_METADATA} "
                              "is missing (the save was interrupted?)", earlier_step=True)
    try:
        return FileSystemReader(str(path)).read_metadata()
    except Exception as err:  # unpickling errors of a damaged metadata file
        raise CheckpointError(f"{path / _DCP_METADATA} is corrupt ({type(err).__name__}: {err})",
                              earlier_step=True) from None


def require_common_file(path: str | Path) -> Path:
    """``path/common.pt`` (the checkpoint's common state); ``CheckpointError`` naming it when it is
    missing."""
    common = Path(path) / "common.pt"
    if not common.is_file():
        raise CheckpointError(f"{common} is missing: the checkpoint is incomplete", earlier_step=True)
    return common


def expected_shard_sizes(path: str | Path) -> Dict[str, int]:
    """Minimum size in bytes of every shard file, from the torch_dist (DCP) metadata."""
    metadata = _read_dcp_metadata(Path(path))
    sizes: Dict[str, int] = {}
    for info in metadata.storage_data.values():
        end = int(info.offset) + int(info.length)
        sizes[info.relative_path] = max(sizes.get(info.relative_path, 0), end)
    return sizes


def verify_shard_files(path: str | Path) -> None:
    """Raise ``CheckpointError`` naming the first shard file that is missing or shorter than its
    metadata says (a truncated copy, a full disk during save, a partial rsync)."""
    path = Path(path)
    for name, needed in sorted(expected_shard_sizes(path).items()):
        file = path / name
        try:
            size = os.path.getsize(file)
        except OSError:
            raise CheckpointError(f"checkpoint shard {file} is missing; the checkpoint is incomplete",
                                  earlier_step=True) from None
        if size < needed:
            raise CheckpointError(f"checkpoint shard {file} is truncated ({size} of at least {needed} "
                                  "bytes); the checkpoint is corrupt", earlier_step=True)


def model_shape_problems(path: str | Path, model_sharded: Dict) -> List[str]:
    """Parameters of this rank's model whose global shape differs from the checkpoint's, or that
    the checkpoint lacks (one message each, naming the parameter)."""
    from megatron.core.dist_checkpointing import load_tensors_metadata
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories

    saved = load_tensors_metadata(str(path))
    apply_factories(model_sharded)  # SwiGLU fc1 etc. become their stored ShardedTensors
    problems, seen = [], set()
    for tensor in nested_values(model_sharded):
        if not isinstance(tensor, ShardedTensor) or tensor.key in seen:
            continue
        seen.add(tensor.key)
        if tensor.key not in saved:
            problems.append(f"parameter {tensor.key} is not in the checkpoint")
        elif tuple(saved[tensor.key].global_shape) != tuple(tensor.global_shape):
            problems.append(f"parameter {tensor.key} has shape {tuple(saved[tensor.key].global_shape)} "
                            f"in the checkpoint but {tuple(tensor.global_shape)} in this model")
    return problems


def describe_error(err: BaseException) -> str:
    """``Type: first line`` of an error; for torch DCP's per-rank ``CheckpointException``, of the
    first rank's underlying error (its own text is a multi-line traceback dump)."""
    from torch.distributed.checkpoint.api import CheckpointException

    failures = getattr(err, "failures", None)
    if isinstance(err, CheckpointException) and failures:
        rank, failure = next(iter(failures.items()))
        inner = failure[0] if isinstance(failure, tuple) else failure  # (exception, stack summary)
        return f"{describe_error(inner)} (rank {rank})"
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text[:300]}"


def preflight(save: Optional[str], load: Optional[str], load_step: Optional[int], fallback: bool = False) -> None:
    """Filesystem-only checks of ``--save``/``--load`` that every rank can run before any process
    group exists, so that a wrong path fails in a second rather than after the model is built:
    the save directory can be created; the checkpoint to resume (if any) exists and, unless the
    loader may fall back to an older one (``fallback``, no explicit step), its shard files are
    complete. Raises ``CheckpointError``."""
    if save:
        try:
            Path(save).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"cannot create the checkpoint directory {save}: {err}") from None
    if load:
        path = resolve_load(load, load_step)
        if path is not None and (load_step is not None or not fallback):
            verify_shard_files(path)
