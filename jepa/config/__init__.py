"""jepa.config: typed configuration loaded from YAML."""

from jepa.config.config import (
    Config,
    ConfigError,
    DataConfig,
    LoggingConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    PlanningConfig,
    SchedulerConfig,
    TrainingConfig,
    ValidationConfig,
    WorldModelConfig,
    config_from_dict,
    load_config,
    save_config,
    shipped_configs,
)

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "LoggingConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PlanningConfig",
    "SchedulerConfig",
    "TrainingConfig",
    "ValidationConfig",
    "WorldModelConfig",
    "config_from_dict",
    "load_config",
    "save_config",
    "shipped_configs",
]
