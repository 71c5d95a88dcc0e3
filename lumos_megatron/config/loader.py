"""Build a ``LumosConfig`` from a YAML recipe, dotted overrides and Megatron-style flags.

Precedence: dataclass defaults < recipe < command line (in the order given). Every key is
checked against the schema: a typo is an error, never a silently ignored setting.

Command-line forms accepted by ``parse_cli``::

    --config examples/recipes/tiny_cpu.yaml
    train.lr=1e-4  parallel.sequence_parallel=true          # dotted overrides
    --tensor-model-parallel-size 2  --global-batch-size=8   # Megatron flag aliases
    --sequence-parallel                                      # boolean aliases
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from lumos_megatron.config.recipe import (  # noqa: F401  (ConfigError, load_recipe, ...: this module's API too)
    ConfigError,
    apply_mapping,
    config_to_dict,
    dump_config,
    load_recipe,
    set_value,
)
from lumos_megatron.config.schema import LumosConfig


# Megatron flag name → dotted config path.
FLAG_ALIASES: Dict[str, str] = {
    "--tensor-model-parallel-size": "parallel.tensor_model_parallel_size",
    "--pipeline-model-parallel-size": "parallel.pipeline_model_parallel_size",
    "--virtual-pipeline-model-parallel-size": "parallel.virtual_pipeline_model_parallel_size",
    "--context-parallel-size": "parallel.context_parallel_size",
    "--micro-batch-size": "train.micro_batch_size",
    "--global-batch-size": "train.global_batch_size",
    "--train-iters": "train.train_iters",
    "--train-samples": "train.train_samples",
    "--exit-duration-in-mins": "train.exit_duration_in_mins",
    "--lr": "train.lr",
    "--min-lr": "train.min_lr",
    "--seed": "train.seed",
    "--seq-length": "data.seq_length",
    "--tensorboard-dir": "logging.tensorboard_dir",
    "--log-interval": "logging.log_interval",
    "--save": "checkpoint.save",
    "--load": "checkpoint.load",
    "--save-interval": "checkpoint.save_interval",
    "--ckpt-step": "checkpoint.load_step",
    "--split": "data.split",
    "--eval-interval": "train.eval_interval",
    "--eval-iters": "train.eval_iters",
}

# Megatron flags taking every following value up to the next flag (a list field).
LIST_FLAG_ALIASES: Dict[str, str] = {
    "--data-path": "data.data_path",
}

# Megatron boolean flags (no value) → dotted path set to true.
BOOL_FLAG_ALIASES: Dict[str, str] = {
    "--sequence-parallel": "parallel.sequence_parallel",
    "--use-distributed-optimizer": "parallel.use_distributed_optimizer",
    "--overlap-grad-reduce": "parallel.overlap_grad_reduce",
    "--finetune": "checkpoint.finetune",
    "--bf16": "train.precision",
}

_BOOL_FLAG_VALUES = {"--bf16": "bf16"}


def _split_overrides(argv: Sequence[str]) -> Tuple[Optional[str], List[Tuple[str, Any]]]:
    """Turn argv into (recipe path, ordered list of (dotted key, raw value))."""
    recipe: Optional[str] = None
    pairs: List[Tuple[str, Any]] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            flag, eq, inline = arg.partition("=")
            if flag in BOOL_FLAG_ALIASES:
                if eq:
                    raise ConfigError(f"{flag} takes no value")
                pairs.append((BOOL_FLAG_ALIASES[flag], _BOOL_FLAG_VALUES.get(flag, True)))
                i += 1
                continue
            if flag in LIST_FLAG_ALIASES:
                values = [inline] if eq else []
                i += 1
                while i < len(args) and not args[i].startswith("--") and "=" not in args[i]:
                    values.append(args[i])
                    i += 1
                if not values:
                    raise ConfigError(f"{flag} needs at least one value")
                pairs.append((LIST_FLAG_ALIASES[flag], values))
                continue
            if flag != "--config" and flag not in FLAG_ALIASES:
                raise ConfigError(
                    f"unknown flag {flag!r}; use <section>.<field>=<value> or one of: "
                    f"--config, {', '.join(sorted(FLAG_ALIASES) + sorted(BOOL_FLAG_ALIASES) + sorted(LIST_FLAG_ALIASES))}"
                )
            if eq:
                value = inline
                i += 1
            else:
                if i + 1 >= len(args):
                    raise ConfigError(f"{flag} needs a value")
                value = args[i + 1]
                i += 2
            if flag == "--config":
                recipe = value
            else:
                pairs.append((FLAG_ALIASES[flag], value))
        elif "=" in arg:
            key, _, value = arg.partition("=")
            pairs.append((key.strip(), value))
            i += 1
        else:
            raise ConfigError(f"cannot parse argument {arg!r}: expected --flag VALUE or key=value")
    return recipe, pairs


def _checkpoint_model(pairs: List[Tuple[str, Any]]):
    """The model section stored with the checkpoint that ``--load`` (and ``--ckpt-step``) name,
    or None when there is none yet; a broken checkpoint is left to the load checks to report."""
    from lumos_megatron.checkpoint.directory import CheckpointError
    from lumos_megatron.config.stored import read_run_config, resolve_checkpoint_dir

    values = dict(pairs)
    load, step = values.get("checkpoint.load"), values.get("checkpoint.load_step")
    if not load:
        return None
    try:
        path = resolve_checkpoint_dir(load, int(step) if step is not None else None)
        return read_run_config(path).model
    except (CheckpointError, ValueError):
        return None


def parse_cli(argv: Iterable[str], validate: bool = True) -> LumosConfig:
    """Build (and unless ``validate`` is False, validate) the run configuration from arguments.

    Without ``--config``, a ``--load`` checkpoint supplies the model section (Megatron's
    ``--use-checkpoint-args``): ``train --load C`` trains the model that C holds.
    """
    from lumos_megatron.config.validate import validate_config

    recipe, pairs = _split_overrides(list(argv))
    cfg = load_recipe(recipe) if recipe else LumosConfig()
    if not recipe:
        model = _checkpoint_model(pairs)
        if model is not None:
            cfg.model = model
    for key, value in pairs:
        set_value(cfg, key, value)
    if validate:
        validate_config(cfg)
    return cfg
