"""train_blocks: only the chosen block trains, and autograd saves nothing below it."""

from __future__ import annotations

import pytest
import torch

from fedcore.lora import inject_lora, train_blocks
from fedcore.model.tiny import tiny_causal_lm


def _saved_bytes(fn) -> int:
    """Bytes of tensors autograd saves for backward while ``fn`` runs (the activation memory)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def _batch():
    ids = torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids}


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_only_the_chosen_block_gets_gradients(mode):
    model = tiny_causal_lm("llama", num_layers=4)
    inject_lora(model.model.layers, targets=["q", "v"], r=4, alpha=8)
    names = train_blocks(model, [2], mode=mode)
    assert names and all(n.startswith("model.layers.2.") for n in names)
    model(**_batch()).loss.backward()
    for name, p in model.named_parameters():
        if name in names:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name


def test_deeper_blocks_save_fewer_activations():
    model = tiny_causal_lm("llama", num_layers=4)
    inject_lora(model.model.layers, targets=["q", "v"], r=4, alpha=8)
    batch = _batch()
    saved = []
    for block in range(4):
        train_blocks(model, [block])
        saved.append(_saved_bytes(lambda: model(**batch).loss))
    assert saved[0] > saved[1] > saved[2] > saved[3] > 0


def test_layers_per_block_extra_and_errors():
    model = tiny_causal_lm("llama", num_layers=4)
    inject_lora(model.model.layers, targets=["q"], r=2, alpha=4)
    names = train_blocks(model, [1], layers_per_block=2, extra=[model.lm_head])
    assert any(n.startswith("model.layers.2.") for n in names) and any(n.startswith("model.layers.3.") for n in names)
    assert "lm_head.weight" in names
    with pytest.raises(ValueError, match="mode"):
        train_blocks(model, [0], mode="half")
    with pytest.raises(ValueError, match="block ids"):
        train_blocks(model, [4])
    bare = tiny_causal_lm("llama", num_layers=2)
    with pytest.raises(ValueError, match="inject_lora first"):
        train_blocks(bare, [0])


def test_tied_extra_is_refused_and_full_mode_keeps_torch_path_gradients():
    tied = tiny_causal_lm("llama", num_layers=2, tie_word_embeddings=True)
    inject_lora(tied.model.layers, targets=["q"], r=2, alpha=4)
    with pytest.raises(ValueError, match="tied embeddings"):
        train_blocks(tied, [1], extra=[tied.lm_head])
    model = tiny_causal_lm("llama", num_layers=2)
    inject_lora(model.model.layers, targets=["q"], r=2, alpha=4)
    train_blocks(model, [1], mode="full")  # unfreezes the LoRA's base weight too: it must get a gradient
    model(**_batch()).loss.backward()
    assert model.model.layers[1].self_attn.q_proj.base.weight.grad is not None
