"""load_pretrained on save_pretrained folders of tiny models, and each refusal it makes."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import BertConfig, BertModel

from fedcore.model.pretrained import load_pretrained
from fedcore.model.tiny import tiny_causal_lm


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Folders of a tiny Llama and a tiny GPT-2 (save_pretrained), with the models that wrote them."""
    root = tmp_path_factory.mktemp("saved")
    models = {}
    for family in ("llama", "gpt2"):
        model = tiny_causal_lm(family, seed=3)
        model.save_pretrained(root / family)
        models[family] = model
    return root, models


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_folder_loads_frozen_in_eval_mode_with_equal_logits(saved, family):
    root, models = saved
    model = load_pretrained(str(root / family))
    assert type(model) is type(models[family])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = torch.randint(3, 128, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, models[family](ids).logits)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_dtype_and_attention_implementation_are_applied(saved, family):
    root, models = saved
    model = load_pretrained(str(root / family), dtype="bf16", attn_implementation="eager")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.config._attn_implementation == "eager"
    ids = torch.randint(3, 128, (1, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits.float(), models[family](ids).logits, atol=0.1, rtol=0.1)


def test_unknown_dtype_is_refused(saved):
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        load_pretrained(str(saved[0] / "llama"), dtype="int8")


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained(str(tmp_path / "no-such-folder"))


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        load_pretrained(str(tmp_path))


def test_config_without_weights_is_refused(saved, tmp_path):
    shutil.copy(saved[0] / "llama" / "config.json", tmp_path)
    with pytest.raises(ValueError, match=r"has config.json but no model weights \(\*.safetensors"):
        load_pretrained(str(tmp_path))


def test_non_causal_architecture_is_refused(tmp_path):
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"architecture \['BertModel'\], not a causal LM"):
        load_pretrained(str(tmp_path))


def test_hub_id_with_local_files_only_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="pass local_files_only=False to download it"):
        load_pretrained("nobody-here/no-such-model")
