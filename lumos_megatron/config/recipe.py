"""Recipes: a ``LumosConfig`` from a YAML mapping, and back.

Every key is checked against the schema (a typo is an error, never a silently ignored setting)
and every value converted to its field's type. The command-line side (flags, dotted overrides,
``--load`` without ``--config``) is ``config.loader``.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from lumos_megatron.config.schema import LumosConfig


class ConfigError(ValueError):
    """A recipe or command line that does not describe a valid run; the message says which key."""


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


RECIPE_DIR = "${recipe_dir}"
"""In a recipe's string values, the directory of the recipe file itself: a path written as
``${recipe_dir}/..`` moves with the file (the importer's ``checkpoint.load`` does this, so a
moved checkpoint still loads)."""


def _expand_recipe_dir(value: Any, directory: str) -> Any:
    if isinstance(value, str):
        return value.replace(RECIPE_DIR, directory)
    if isinstance(value, dict):
        return {k: _expand_recipe_dir(v, directory) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_recipe_dir(v, directory) for v in value]
    return value


def load_recipe(path: str | Path, cfg: Optional[LumosConfig] = None) -> LumosConfig:
    """Read a YAML recipe onto ``cfg`` (a fresh default config when None); ``${recipe_dir}`` in
    its values is the recipe file's directory."""
    cfg = cfg if cfg is not None else LumosConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        mapping = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    apply_mapping(cfg, _expand_recipe_dir(mapping, str(path.resolve().parent)), str(path))
    return cfg


def config_to_dict(cfg: LumosConfig) -> Dict[str, Any]:
    """Plain nested dict of the config (for run_config.yaml and logging)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: LumosConfig) -> str:
    """The resolved config as YAML, loadable again by ``load_recipe``."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
