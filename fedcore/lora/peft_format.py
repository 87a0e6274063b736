"""Adapters in peft's on-disk format: ``adapter_config.json`` + ``adapter_model.safetensors``.

What fedcore saves, ``peft.PeftModel.from_pretrained`` loads; what peft saved (plain LoRA on
Linear / Conv1D targets, no DoRA or rsLoRA), fedcore loads. Tensor names follow peft:
``base_model.model.<module>.lora_A.weight`` (r, d_in) and ``...lora_B.weight`` (d_out, r).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fedcore.model import blocks

from .inject import inject_lora
from .layer import LoRALinear

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_PREFIX = "base_model.model."


def _lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def save_adapter(model: nn.Module, directory: str | Path, *, base_model_name_or_path: str | None = None) -> Path:
    """Write the model's LoRA (uniform r and alpha across modules) in peft's format."""
    modules = _lora_modules(model)
    if not modules:
        raise ValueError("the model has no LoRA modules to save")
    ranks = {m.r for m in modules.values()}
    alphas = {m.alpha for m in modules.values()}
    if len(ranks) != 1 or len(alphas) != 1:
        raise ValueError(f"peft's format needs one r and alpha for all modules; got r {ranks}, alpha {alphas}")
    layer_of = {id(layer): i for i, layer in enumerate(blocks(model))}
    layers, suffixes = set(), set()
    for name in modules:
        path = name.split(".")
        for depth in range(len(path), 0, -1):  # the decoder layer holding this module
            holder = model.get_submodule(".".join(path[:depth]))
            if id(holder) in layer_of:
                layers.add(layer_of[id(holder)])
                suffixes.add(".".join(path[depth:]))  # e.g. "self_attn.q_proj", "attn.c_proj"
                break
        else:
            raise ValueError(f"LoRA module {name} is not inside a decoder layer: peft's format cannot place it")
    targets = sorted(suffixes)
    _check_reproducible(model, modules, targets, layers, layer_of)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": ranks.pop(), "lora_alpha": alphas.pop(),
        "lora_dropout": 0.0, "target_modules": targets, "bias": "none", "use_rslora": False, "use_dora": False,
        "fan_in_fan_out": any(not isinstance(m.base, nn.Linear) for m in modules.values()),
        "layers_to_transform": sorted(layers) if len(layers) < len(layer_of) else None,
        "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
    }  # fmt: skip
    tensors = {}
    for name, m in modules.items():
        tensors[f"{_PREFIX}{name}.lora_A.weight"] = m.lora_A.detach().contiguous().cpu()
        tensors[f"{_PREFIX}{name}.lora_B.weight"] = m.lora_B.detach().contiguous().cpu()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(directory / WEIGHTS), metadata={"format": "pt"})
    return directory


def _check_reproducible(model, modules, targets, layers, layer_of) -> None:
    """(targets, layers) must select exactly the wrapped modules, or a loader would wrap others."""
    extra = []
    for name, module in model.named_modules():
        if name in modules or isinstance(module, LoRALinear) or (name.endswith(".base") and name[:-5] in modules):
            continue
        if not (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"):
            continue
        if any(name == t or name.endswith("." + t) for t in targets) and _layer_index(model, name, layer_of) in layers:
            extra.append(name)
    if extra:
        raise ValueError(
            f"peft's format cannot express this adapter: targets {targets} in layers {sorted(layers)} "
            f"would also wrap {sorted(extra)[:3]}"
        )


def _layer_index(model, name, layer_of):
    path = name.split(".")
    for depth in range(len(path), 0, -1):
        holder = model.get_submodule(".".join(path[:depth]))
        if id(holder) in layer_of:
            return layer_of[id(holder)]
    return None


def load_adapter(model: nn.Module, directory: str | Path) -> list[str]:
    """Inject LoRA as the config describes and load its weights; returns the wrapped module names.

    Refuses what fedcore's LoRA does not implement (DoRA, rsLoRA, regex targets, biases) with a
    ``ValueError`` instead of loading something that would compute differently.
    """
    directory = Path(directory)
    config = json.loads((directory / CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(f"not a LoRA adapter: peft_type {config.get('peft_type')!r}")
    for flag in ("use_dora", "use_rslora"):
        if config.get(flag):
            raise ValueError(f"{flag} adapters are not supported by fedcore.lora")
    if config.get("bias", "none") != "none":
        raise ValueError("adapters with trained biases are not supported")
    for field in ("alpha_pattern", "rank_pattern", "exclude_modules"):
        if config.get(field):
            raise ValueError(f"{field} is not supported by fedcore.lora (one r and alpha for all modules)")
    targets = config.get("target_modules")
    if not isinstance(targets, list):
        raise ValueError(f"target_modules must be a list of module names, got {targets!r}")
    layers = blocks(model)
    wanted = config.get("layers_to_transform")
    if isinstance(wanted, int):
        wanted = [wanted]
    chosen = [layers[i] for i in (wanted if wanted is not None else range(len(layers)))]
    inject_lora(chosen, targets=targets, r=int(config["r"]), alpha=float(config["lora_alpha"]),
                dropout=float(config.get("lora_dropout", 0.0)), literal=True)  # fmt: skip
    state = load_file(str(directory / WEIGHTS))
    modules = _lora_modules(model)
    expected = {f"{_PREFIX}{n}.lora_{ab}.weight": (m, ab) for n, m in modules.items() for ab in "AB"}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"adapter tensors do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for key, (m, ab) in expected.items():
            param = m.lora_A if ab == "A" else m.lora_B
            if state[key].shape != param.shape:
                raise ValueError(f"{key}: shape {tuple(state[key].shape)} != {tuple(param.shape)}")
            param.copy_(state[key])
    return sorted(modules)
