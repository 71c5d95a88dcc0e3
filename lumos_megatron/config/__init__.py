"""Run configuration: typed dataclasses, YAML recipes, dotted overrides and Megatron flag aliases."""

from lumos_megatron.config.loader import (
    ConfigError,
    dump_config,
    load_recipe,
    parse_cli,
    set_value,
)
from lumos_megatron.config.schema import (
    ARDFConfig,
    CheckpointConfig,
    DataConfig,
    LoggingConfig,
    LumosConfig,
    ModelConfig,
    ParallelConfig,
    TrainConfig,
)
from lumos_megatron.config.validate import (
    check_runtime_support,
    head_dim,
    resolved_train_iters,
    validate_config,
)

__all__ = [
    "ARDFConfig", "CheckpointConfig", "ConfigError", "DataConfig", "LoggingConfig", "LumosConfig",
    "ModelConfig", "ParallelConfig", "TrainConfig", "check_runtime_support", "dump_config",
    "head_dim", "load_recipe", "parse_cli", "resolved_train_iters", "set_value", "validate_config",
]
