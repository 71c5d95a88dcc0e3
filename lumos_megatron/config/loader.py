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

import dataclasses
import typing
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from lumos_megatron.config.schema import LumosConfig


class ConfigError(ValueError):
    """A recipe or command line that does not describe a valid run; the message says which key."""


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


def _field_types(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to the field type ``hint``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path)
    if origin in (list, List):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split()
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(v, args[0] if args else str, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected an integer, got {value!r}") from None
        if as_float != int(as_float):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return int(as_float)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    if origin is typing.Literal:  # a choice: kept as given; validate_config names the choices
        return _coerce(value, type(args[0]), path)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported field type {hint!r}")


def _section_names(cfg: LumosConfig) -> List[str]:
    return [f.name for f in dataclasses.fields(cfg)]


def set_value(cfg: LumosConfig, dotted: str, value: Any) -> None:
    """Set ``cfg.<section>.<field>`` from a dotted key, coercing to the field's type."""
    parts = dotted.split(".")
    if len(parts) != 2:
        raise ConfigError(
            f"bad config key {dotted!r}: use <section>.<field>, sections: {', '.join(_section_names(cfg))}"
        )
    section_name, field_name = parts
    if section_name not in _section_names(cfg):
        raise ConfigError(
            f"unknown config section {section_name!r} in {dotted!r}; sections: "
            f"{', '.join(_section_names(cfg))}"
        )
    section = getattr(cfg, section_name)
    hints = _field_types(type(section))
    if field_name not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(section))
        raise ConfigError(f"unknown config key {dotted!r}; {section_name} has: {known}")
    setattr(section, field_name, _coerce(value, hints[field_name], dotted))


def apply_mapping(cfg: LumosConfig, mapping: Dict[str, Any], source: str) -> None:
    """Apply a nested ``{section: {field: value}}`` mapping (a parsed recipe) onto ``cfg``."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(mapping).__name__}")
    for section_name, fields in mapping.items():
        if fields is None:
            continue
        if not isinstance(fields, dict):
            raise ConfigError(f"{source}: section {section_name!r} must be a mapping")
        for field_name, value in fields.items():
            try:
                set_value(cfg, f"{section_name}.{field_name}", value)
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None


def load_recipe(path: str | Path, cfg: Optional[LumosConfig] = None) -> LumosConfig:
    """Read a YAML recipe onto ``cfg`` (a fresh default config when None)."""
    cfg = cfg if cfg is not None else LumosConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        mapping = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    apply_mapping(cfg, mapping, str(path))
    return cfg


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
    from lumos_megatron.checkpoint.run_config import read_run_config, resolve_checkpoint_dir

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


def config_to_dict(cfg: LumosConfig) -> Dict[str, Any]:
    """Plain nested dict of the config (for run_config.yaml and logging)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: LumosConfig) -> str:
    """The resolved config as YAML, loadable again by ``load_recipe``."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
