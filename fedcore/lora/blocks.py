"""Train one block at a time: freeze everything else so autograd stops below the lowest active block.

With every parameter below the lowest trained block frozen (embeddings, earlier layers, their
LoRA), no tensor there requires grad, so autograd records nothing and saves no activations for
those layers: memory and backward time shrink with the block's depth.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from fedcore.model import group_blocks

from .inject import lora_parameters


def train_blocks(
    model: nn.Module,
    block_ids: Iterable[int],
    *,
    mode: str = "lora",
    layers_per_block: int = 1,
    extra: Iterable[nn.Module] = (),
) -> list[str]:
    """Make only the chosen coordinate blocks trainable; returns the trainable parameter names.

    Blocks are ``fedcore.model.group_blocks(model, layers_per_block)``. ``mode="lora"`` trains the
    LoRA factors inside the blocks (inject them first), ``"full"`` every parameter of the blocks.
    ``extra`` modules (e.g. the lm_head) are trained fully as well. Raises ``ValueError`` for an
    unknown mode, a block id out of range, or a LoRA mode with no LoRA in the chosen blocks.
    """
    if mode not in ("lora", "full"):
        raise ValueError(f"mode must be 'lora' or 'full', got {mode!r}")
    groups = group_blocks(model, layers_per_block)
    ids = sorted(set(block_ids))
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(groups)]
    if bad or not ids:
        raise ValueError(f"block ids must be a non-empty subset of 0..{len(groups) - 1}, got {list(block_ids)}")
    for p in model.parameters():
        p.requires_grad_(False)
    active = {id(m) for i in ids for m in groups[i]}
    names = []
    for name, module in model.named_modules():
        if id(module) not in active:
            continue
        params = lora_parameters(module) if mode == "lora" else dict(module.named_parameters())
        if mode == "lora" and not params:
            raise ValueError(f"block module {name} has no LoRA factors: inject_lora first, or use mode='full'")
        for pname, p in params.items():
            p.requires_grad_(True)
            names.append(f"{name}.{pname}")
    get_embedding = getattr(model, "get_input_embeddings", None)
    embedding = get_embedding() if callable(get_embedding) else None
    tied = {id(p) for p in embedding.parameters()} if isinstance(embedding, nn.Module) else set()
    for module in extra:
        for p in module.parameters():
            if id(p) in tied:
                raise ValueError(
                    "an extra module shares its weight with the input embedding (tied embeddings): "
                    "training it would make autograd record every frozen layer; untie it first"
                )
            p.requires_grad_(True)
    extra_names = [n for n, p in model.named_parameters() if p.requires_grad and not any(n == m for m in names)]
    return names + extra_names
