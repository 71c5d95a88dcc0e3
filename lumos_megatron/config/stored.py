"""The run configuration stored in every checkpoint directory (``run_config.yaml``).

It lives with the configuration, not with the checkpoint code: reading it needs only the
checkpoint directory's layout (``checkpoint.directory``), and the checkpoint package never
imports the configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from lumos_megatron.checkpoint import directory as ckpt_dir
from lumos_megatron.checkpoint.directory import CheckpointError
from lumos_megatron.config.recipe import ConfigError, load_recipe
from lumos_megatron.config.schema import LumosConfig


def resolve_checkpoint_dir(path: str | Path, iteration: Optional[int] = None) -> Path:
    """The ``iter_*`` directory to read: ``path`` itself when it is one, otherwise the checkpoint
    of ``iteration`` (default: the one ``latest_checkpointed_iteration.txt`` names) under the root
    ``path``. Raises ``CheckpointError`` naming what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if (path / ckpt_dir.RUN_CONFIG_FILE).is_file() or (path / ".metadata").is_file():
        if iteration is not None:
            raise CheckpointError(f"{path} is already one iteration's directory; do not also name an iteration")
        return path
    found = ckpt_dir.resolve_load(path, iteration)
    if found is None:
        have = ", ".join(str(i) for i in ckpt_dir.list_checkpoints(path)) or "none"
        raise CheckpointError(f"{path}: no {ckpt_dir.LATEST_FILE} and no iteration given (checkpoints: {have})")
    return found


def read_run_config(path: str | Path) -> LumosConfig:
    """The configuration of the run that wrote checkpoint directory ``path``."""
    recipe = Path(path) / ckpt_dir.RUN_CONFIG_FILE
    if not recipe.is_file():
        raise CheckpointError(f"{recipe}: missing (every lumos_megatron checkpoint stores its configuration)")
    try:
        return load_recipe(recipe)
    except ConfigError as err:
        raise CheckpointError(f"{recipe}: {err}") from None
