"""Put LoRA into chosen projections of chosen layers, by name, and read or write its state."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from fedcore.model import group_blocks

from .layer import LoRALinear

# Short names users write -> the module names of the supported families: Llama/Qwen2/Mistral/Gemma;
# GPT-2, whose fused c_attn holds q, k and v together; GPT-NeoX (attention.*) and Falcon
# (self_attention.*), whose fused query_key_value does the same. Names are suffixes after a dot, so
# "attention.dense" does not match Falcon's "self_attention.dense".
TARGET_ALIASES: dict[str, tuple[str, ...]] = {
    "q": ("q_proj", "c_attn", "query_key_value"),
    "k": ("k_proj", "c_attn", "query_key_value"),
    "v": ("v_proj", "c_attn", "query_key_value"),
    "o": ("o_proj", "attn.c_proj", "attention.dense", "self_attention.dense"),
    "gate": ("gate_proj",),
    "up": ("up_proj", "c_fc", "dense_h_to_4h"),
    "down": ("down_proj", "mlp.c_proj", "dense_4h_to_h"),
}


def _patterns(targets: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for t in targets:
        out.update(TARGET_ALIASES.get(t, (t,)))
    return out


def inject_lora(
    layers: Sequence[nn.Module] | nn.Module,
    *,
    targets: Iterable[str] = ("q", "v"),
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    literal: bool = False,
) -> list[str]:
    """Replace the target linears inside each of ``layers`` with ``LoRALinear`` (in place).

    ``targets`` are short names (q k v o gate up down) or module-name suffixes (``"q_proj"``,
    ``"mlp.c_proj"``). Returns the qualified names (relative to each layer, prefixed ``"{i}."``) of
    the wrapped modules; raises ``ValueError`` when nothing matched, so a typo cannot silently
    train nothing.
    """
    layer_list = [layers] if isinstance(layers, nn.Module) and not isinstance(layers, nn.ModuleList) else list(layers)
    suffixes = set(targets) if literal else _patterns(targets)  # literal: peft's own module names
    wrapped: list[str] = []
    for i, layer in enumerate(layer_list):
        for name, module in list(layer.named_modules()):
            if not isinstance(module, (nn.Linear, Conv1D)) or isinstance(module, LoRALinear):
                continue
            if not any(name == s or name.endswith("." + s) for s in suffixes):
                continue
            parent_name, _, child = name.rpartition(".")
            parent = layer.get_submodule(parent_name) if parent_name else layer
            setattr(parent, child, LoRALinear(module, r=r, alpha=alpha, dropout=dropout))
            wrapped.append(f"{i}.{name}")
    if layer_list and not wrapped:
        raise ValueError(
            f"no module matched LoRA targets {sorted(suffixes)}; use q k v o gate up down "
            "or a module-name suffix such as 'q_proj'"
        )
    return wrapped


def lora_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """Name -> parameter of every LoRA factor inside ``module`` (names as in ``named_parameters``)."""
    return {n: p for n, p in module.named_parameters() if n.endswith(("lora_A", "lora_B"))}


def lora_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the LoRA factors of ``module``: what a client uploads for averaging."""
    return {n: p.detach().clone() for n, p in lora_parameters(module).items()}


@torch.no_grad()
def load_lora_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (from ``lora_state`` or an average of several) into ``module``'s factors.

    Raises ``ValueError`` when names or shapes differ, instead of loading half an adapter.
    """
    params = lora_parameters(module)
    if set(params) != set(state):
        raise ValueError(
            f"LoRA state names differ: missing {sorted(set(params) - set(state))}, "
            f"unexpected {sorted(set(state) - set(params))}"
        )
    for name, p in params.items():
        if p.shape != state[name].shape:
            raise ValueError(f"LoRA state {name}: shape {tuple(state[name].shape)} != {tuple(p.shape)}")
        p.copy_(state[name])


def inject_lora_blocks(
    model: nn.Module,
    block_ids: Iterable[int] | None = None,
    *,
    layers_per_block: int = 1,
    targets: Iterable[str] = ("q", "v"),
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> list[str]:
    """``inject_lora`` into the coordinate blocks ``block_ids`` of a transformers causal LM (all
    blocks when None); blocks come from ``fedcore.model.group_blocks(model, layers_per_block)``."""
    groups = group_blocks(model, layers_per_block)
    ids = range(len(groups)) if block_ids is None else sorted(set(block_ids))
    bad = [i for i in ids if not 0 <= i < len(groups)]
    if bad:
        raise ValueError(f"block ids {bad} out of range 0..{len(groups) - 1}")
    layers = [layer for i in ids for layer in groups[i]]
    return inject_lora(layers, targets=targets, r=r, alpha=alpha, dropout=dropout)
