"""fedcore.lora: LoRA inside transformer blocks (module, injection, block training, peft-format I/O)."""

from .blocks import train_blocks
from .inject import TARGET_ALIASES, inject_lora, inject_lora_blocks, load_lora_state, lora_parameters, lora_state
from .layer import LoRALinear
from .peft_format import load_adapter, save_adapter

__all__ = [
    "inject_lora_blocks",
    "load_adapter",
    "save_adapter",
    "train_blocks",
    "LoRALinear",
    "TARGET_ALIASES",
    "inject_lora",
    "load_lora_state",
    "lora_parameters",
    "lora_state",
]
