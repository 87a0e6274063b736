"""Adapters round-trip fedcore -> peft -> fedcore bit-exactly on a tiny Llama."""

from __future__ import annotations

import json

import pytest
import torch

from fedcore.lora import inject_lora, load_adapter, lora_parameters, save_adapter
from fedcore.model.tiny import tiny_causal_lm

peft = pytest.importorskip("peft")


def _trained_llama():
    model = tiny_causal_lm("llama", num_layers=4, seed=0)
    layers = model.model.layers
    inject_lora([layers[1], layers[3]], targets=["q", "v", "down"], r=4, alpha=8)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in lora_parameters(model).values():
            p.copy_(torch.randn(p.shape, generator=gen))  # "trained": B non-zero
    return model


def test_fedcore_to_peft_to_fedcore_is_bit_exact(tmp_path):
    ours = _trained_llama()
    save_adapter(ours, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1, 3] and config["r"] == 4 and config["lora_alpha"] == 8.0

    theirs = peft.PeftModel.from_pretrained(tiny_causal_lm("llama", num_layers=4, seed=0), tmp_path / "a")
    ids = torch.randint(3, 128, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, ours(input_ids=ids).logits, rtol=0, atol=1e-5)
    peft_state = peft.get_peft_model_state_dict(theirs)
    assert len(peft_state) == len(lora_parameters(ours))

    theirs.save_pretrained(tmp_path / "b")
    back = tiny_causal_lm("llama", num_layers=4, seed=0)
    names = load_adapter(back, tmp_path / "b")
    assert len(names) == 6
    mine, again = lora_parameters(ours), lora_parameters(back)
    assert set(mine) == set(again)
    for name in mine:
        assert torch.equal(mine[name], again[name]), name


def test_fedcore_loads_what_peft_trained(tmp_path):
    base = tiny_causal_lm("llama", num_layers=3, seed=2)
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["k_proj", "o_proj"], lora_dropout=0.0)
    theirs = peft.get_peft_model(base, config)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_" in name:
                p.normal_(generator=torch.Generator().manual_seed(len(name)))
    theirs.save_pretrained(tmp_path)
    ours = tiny_causal_lm("llama", num_layers=3, seed=2)
    load_adapter(ours, tmp_path)
    ids = torch.randint(3, 128, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, theirs(input_ids=ids).logits, rtol=0, atol=1e-5)


def test_unsupported_adapters_are_refused(tmp_path):
    ours = _trained_llama()
    save_adapter(ours, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["use_dora"] = True
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="use_dora"):
        load_adapter(tiny_causal_lm("llama", num_layers=4), tmp_path)


def test_gpt2_targets_are_saved_unambiguously(tmp_path):
    from fedcore.lora import inject_lora

    model = tiny_causal_lm("gpt2", num_layers=2, seed=1)
    inject_lora(model.transformer.h, targets=["o"], r=2, alpha=4)  # attn.c_proj only, not mlp.c_proj
    with torch.no_grad():
        for p in lora_parameters(model).values():
            p.normal_(generator=torch.Generator().manual_seed(5))
    save_adapter(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["target_modules"] == ["attn.c_proj"]
    back = tiny_causal_lm("gpt2", num_layers=2, seed=1)
    assert len(load_adapter(back, tmp_path)) == 2
    theirs = peft.PeftModel.from_pretrained(tiny_causal_lm("gpt2", num_layers=2, seed=1), tmp_path)
    ids = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(back(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)


def test_adapters_peft_cannot_express_are_refused(tmp_path):
    from fedcore.lora import inject_lora

    model = tiny_causal_lm("llama", num_layers=2)
    inject_lora([model.model.layers[0]], targets=["q"], r=2, alpha=4)
    inject_lora([model.model.layers[1]], targets=["v"], r=2, alpha=4)  # different targets per layer
    with pytest.raises(ValueError, match="cannot express"):
        save_adapter(model, tmp_path)


@pytest.mark.parametrize("family", ["gemma2", "gemma3", "gpt_neox", "falcon"])
def test_new_families_round_trip_through_peft(tmp_path, family):
    from fedcore.model import blocks

    model = tiny_causal_lm(family, num_layers=3, seed=4)
    layers = blocks(model)
    inject_lora([layers[0], layers[2]], targets=["q", "o", "up", "down"], r=2, alpha=4)
    with torch.no_grad():
        for p in lora_parameters(model).values():
            p.normal_(generator=torch.Generator().manual_seed(p.numel()))
    save_adapter(model, tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [0, 2] and len(config["target_modules"]) == 4

    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(6))
    theirs = peft.PeftModel.from_pretrained(tiny_causal_lm(family, num_layers=3, seed=4), tmp_path / "ours")
    assert len(peft.get_peft_model_state_dict(theirs)) == len(lora_parameters(model)) == 16
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        torch.testing.assert_close(theirs(input_ids=ids).logits, expected, rtol=0, atol=1e-5)
        theirs.save_pretrained(tmp_path / "theirs")
        back = tiny_causal_lm(family, num_layers=3, seed=4)
        assert len(load_adapter(back, tmp_path / "theirs")) == 8
        torch.testing.assert_close(back(input_ids=ids).logits, expected, rtol=0, atol=0)
