"""Component configs shared by every method (model, data, LoRA, train, transport, output) and
TOML loading. Each algorithm's config composes these and adds only its own fields."""

from .components import (
    FAMILIES,
    LORA_TARGETS,
    SKILLS,
    DataConfig,
    LoRAConfig,
    ModelConfig,
    OutputConfig,
    TrainConfig,
    TransportConfig,
    check_device,
)
from .toml import build_config, check, check_choices, config_to_dict, parse_toml, read_toml

__all__ = [
    "FAMILIES",
    "LORA_TARGETS",
    "SKILLS",
    "DataConfig",
    "LoRAConfig",
    "ModelConfig",
    "OutputConfig",
    "TrainConfig",
    "TransportConfig",
    "build_config",
    "check",
    "check_choices",
    "check_device",
    "config_to_dict",
    "parse_toml",
    "read_toml",
]
