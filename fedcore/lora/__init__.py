"""fedcore.lora: LoRA inside transformer blocks (plain-torch module, injection, state I/O)."""

from .inject import TARGET_ALIASES, inject_lora, load_lora_state, lora_parameters, lora_state
from .layer import LoRALinear

__all__ = ["LoRALinear", "TARGET_ALIASES", "inject_lora", "load_lora_state", "lora_parameters", "lora_state"]
